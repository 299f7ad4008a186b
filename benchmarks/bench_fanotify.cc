// Raw fanotify pre-content baseline: the cost the kernel adds to one read of
// a file whose FAN_PRE_ACCESS mark makes every read raise an event answered
// FAN_ALLOW by a responder thread. Anything pdm builds on fanotify (DM events,
// the agent, the supervisor) can only add to this number.
//
// Measures, each as the average over N reads of 1 byte at offset 0:
//   unmarked   pread of an unmarked file (page cache hit): the floor
//   raw        responder does read(2)/write(2) on a blocking group fd
//   group      responder uses FanotifyGroup::Read(forever)+Allow
//   group+poll same, nonblocking group, Read(timeout) polls first
// The page cache does not hide events (the file is cached after the first
// read); the benchmark counts events and fails unless every read raised one.
//
// Where the two threads run dominates: on a 2-vCPU VM the reader and the
// responder on different CPUs pay a cross-CPU wake-up per event (tens of us,
// the idle vCPU must be woken), on one CPU only the kernel path (a few us).
// --pin same|split pins both threads to CPU 0, or reader to 0 and responder
// to 1; the default leaves placement to the scheduler.
//
// Usage: bench_fanotify [--reads N] [--dir DIR] [--pin none|same|split]
// (root; DIR on ext4/xfs/btrfs, default /tmp). Prints one line per mode;
// exit 1 if an event went missing.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/posix.h"
#include "events/fanotify.h"

namespace {

using pdm::MonotonicNs;
using pdm::UniqueFd;
using pdm::events::FanotifyGroup;

struct Options {
  int reads = 20000;        // timed reads per mode
  std::string dir = "/tmp";  // where the two scratch files live
  std::string pin = "none";  // none | same | split (see the header comment)
};

// Pins the calling thread to cpu; cpu < 0 leaves it alone.
void PinSelf(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
    std::fprintf(stderr, "cannot pin to CPU %d\n", cpu);
    std::exit(2);
  }
}

struct Stats {
  double avg_us = 0, p50_us = 0, p99_us = 0;
};

Stats Summarize(std::vector<int64_t>& ns) {
  Stats s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  s.avg_us = sum / static_cast<double>(ns.size()) / 1000.0;
  s.p50_us = static_cast<double>(ns[ns.size() / 2]) / 1000.0;
  s.p99_us = static_cast<double>(ns[ns.size() * 99 / 100]) / 1000.0;
  return s;
}

void Print(const char* mode, int reads, const Stats& s) {
  std::printf("%-11s reads=%-7d avg=%8.2f us  p50=%8.2f us  p99=%8.2f us\n", mode, reads, s.avg_us,
              s.p50_us, s.p99_us);
}

// Times `reads` preads of 1 byte at 0 through fd; checks the byte each time.
// Returns false on a failed or wrong read.
bool TimeReads(int fd, int reads, std::vector<int64_t>* ns) {
  ns->clear();
  ns->reserve(static_cast<size_t>(reads));
  for (int i = 0; i < reads; ++i) {
    uint8_t b = 0;
    int64_t t0 = MonotonicNs();
    ssize_t n = ::pread(fd, &b, 1, 0);
    int64_t t1 = MonotonicNs();
    if (n != 1 || b != 'A') {
      std::fprintf(stderr, "pread returned %zd byte 0x%02x: %s\n", n, b, std::strerror(errno));
      return false;
    }
    ns->push_back(t1 - t0);
  }
  return true;
}

std::string MakeFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644));
  std::vector<uint8_t> buf(4096, 'A');
  if (!fd.valid() || !pdm::WriteAll(fd.get(), buf, path).ok()) {
    std::fprintf(stderr, "cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    std::exit(1);
  }
  return path;
}

enum class Responder { kRaw, kGroup, kGroupPoll };

// One marked-read run: a fresh group and mark, a responder thread that
// answers FAN_ALLOW until it has answered `reads` events, and `reads` timed
// reads. The responder stops by count, not by a flag: a flag set after the
// last read races with the responder's blocking read(2). If an event is lost
// the responder never finishes; then the run reports it and the process
// exits (closing the group, which releases anything pending).
// Returns events answered, or -1 if a read failed.
long RunMarked(const std::string& path, int reads, Responder mode, int responder_cpu, Stats* out) {
  FanotifyGroup::Options gopt;
  gopt.init_flags = FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC;
  if (mode == Responder::kGroupPoll) gopt.init_flags |= FAN_NONBLOCK;
  gopt.event_f_flags = O_RDONLY | O_LARGEFILE | O_CLOEXEC;  // as cheap as it gets
  auto group = FanotifyGroup::Create(gopt);
  if (!group.ok()) {
    std::fprintf(stderr, "%s\n", group.status().ToString().c_str());
    std::exit(1);
  }
  pdm::Status st = group->MarkInode(AT_FDCWD, path, FAN_PRE_ACCESS);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    std::exit(1);
  }
  // Open after marking: whether a file raises pre-content events is decided
  // at open(2).
  UniqueFd fd(::open(path.c_str(), O_RDONLY));

  std::atomic<long> answered{0};
  std::atomic<bool> done{false};
  std::thread responder([&] {
    PinSelf(responder_cpu);
    FanotifyGroup& g = *group;
    while (answered.load() < reads) {
      if (mode == Responder::kRaw) {
        alignas(fanotify_event_metadata) uint8_t buf[4096];
        ssize_t len = ::read(g.fd(), buf, sizeof buf);
        if (len <= 0) continue;
        for (size_t off = 0; off + sizeof(fanotify_event_metadata) <= static_cast<size_t>(len);) {
          fanotify_event_metadata m;
          std::memcpy(&m, buf + off, sizeof m);
          fanotify_response r{m.fd, FAN_ALLOW};
          if (::write(g.fd(), &r, sizeof r) == sizeof r) answered.fetch_add(1);
          ::close(m.fd);
          off += m.event_len;
        }
      } else {
        auto timeout = mode == Responder::kGroup ? std::chrono::milliseconds(-1)
                                                 : std::chrono::milliseconds(1000);
        auto evs = g.Read(timeout);
        if (!evs.ok()) continue;
        for (auto& e : *evs) {
          if (g.Allow(e).ok()) answered.fetch_add(1);
        }
      }
    }
    done.store(true);
  });

  std::vector<int64_t> ns;
  bool ok = TimeReads(fd.get(), reads, &ns);
  const int64_t give_up = MonotonicNs() + 2'000'000'000;
  while (!done.load() && MonotonicNs() < give_up) ::usleep(1000);
  if (!done.load()) {
    std::fprintf(stderr, "responder answered %ld events for %d reads: events were lost\n",
                 answered.load(), reads);
    std::fflush(stdout);
    std::_Exit(1);
  }
  responder.join();
  *out = Summarize(ns);
  return ok ? answered.load() : -1;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--reads" && i + 1 < argc) {
      opt.reads = std::atoi(argv[++i]);
    } else if (a == "--dir" && i + 1 < argc) {
      opt.dir = argv[++i];
    } else if (a == "--pin" && i + 1 < argc) {
      opt.pin = argv[++i];
      if (opt.pin != "none" && opt.pin != "same" && opt.pin != "split") {
        std::fprintf(stderr, "--pin must be none, same or split\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "usage: %s [--reads N] [--dir DIR] [--pin none|same|split]\n", argv[0]);
      return 2;
    }
  }
  if (opt.reads <= 0) {
    std::fprintf(stderr, "--reads must be positive\n");
    return 2;
  }
  const int reader_cpu = opt.pin == "none" ? -1 : 0;
  const int responder_cpu = opt.pin == "none" ? -1 : opt.pin == "same" ? 0 : 1;
  PinSelf(reader_cpu);
  std::printf("pin=%s (reader cpu %d, responder cpu %d; -1 = unpinned)\n", opt.pin.c_str(),
              reader_cpu, responder_cpu);
  const std::string pid = std::to_string(::getpid());
  const std::string plain = MakeFile(opt.dir + "/bench_fanotify_plain." + pid);
  const std::string marked = MakeFile(opt.dir + "/bench_fanotify_marked." + pid);
  int rc = 0;

  {
    UniqueFd fd(::open(plain.c_str(), O_RDONLY));
    std::vector<int64_t> ns;
    if (!TimeReads(fd.get(), opt.reads, &ns)) rc = 1;
    Print("unmarked", opt.reads, Summarize(ns));
  }
  struct Mode {
    const char* name;
    Responder r;
  };
  for (Mode m : {Mode{"raw", Responder::kRaw}, Mode{"group", Responder::kGroup},
                 Mode{"group+poll", Responder::kGroupPoll}}) {
    Stats s;
    long events = RunMarked(marked, opt.reads, m.r, responder_cpu, &s);
    Print(m.name, opt.reads, s);
    // Each timed read must have raised exactly one event.
    if (events != opt.reads) {
      std::fprintf(stderr, "%s: %ld events answered for %d reads\n", m.name, events, opt.reads);
      rc = 1;
    }
  }
  ::unlink(plain.c_str());
  ::unlink(marked.c_str());
  if (rc == 0) std::printf("every marked read raised one event (page cache did not hide any)\n");
  return rc;
}
