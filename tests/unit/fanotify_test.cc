// Real-kernel tests of FanotifyGroup and SendFd/RecvFd: pre-content events on
// a private loop-mounted ext4 (tmpfs has no pre-content support). The
// accessing "application" is always a forked child, because a test process
// that touched a marked file itself would wait on its own group; the child
// reports what its syscalls returned over a pipe, and the test waits for that
// with a deadline and SIGKILLs the child on expiry, so a broken kernel path
// fails the test instead of hanging it. Needs root (fanotify_init, mount).
#include "events/fanotify.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "events/fd_passing.h"

namespace pdm::events {
namespace {

using namespace std::chrono_literals;

// How long a kernel path may take before we call it broken, and how long a
// blocked syscall must stay blocked for us to call it blocked.
constexpr auto kDeadline = 5s;
constexpr auto kStillBlocked = 300ms;
constexpr size_t kFileBytes = 64 * 1024;

uint8_t PatternByte(size_t i) { return static_cast<uint8_t>(i * 7 + 3); }

bool KernelAtLeast(int major, int minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

// What the child's syscall did. Fixed-size so one write(2) on a pipe carries
// it atomically.
struct Outcome {
  int64_t ret = 0;
  int err = 0;
  std::array<uint8_t, 32> data{};
};

// A forked child that runs fn and sends each Outcome it reports. The child
// closes the fds in close_in_child first: above all the group fd, because a
// child holding a copy keeps the group (and its pending events) alive.
class Child {
 public:
  using Report = std::function<void(const Outcome&)>;

  Child(std::vector<int> close_in_child, const std::function<void(const Report&)>& fn) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(p[0]);
      for (int fd : close_in_child) ::close(fd);
      const int w = p[1];
      fn([w](const Outcome& o) {
        ssize_t n = ::write(w, &o, sizeof o);
        (void)n;
      });
      ::_exit(0);
    }
    ::close(p[1]);
    rd_ = UniqueFd(p[0]);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Kill(); }

  bool started() const { return pid_ > 0 && rd_.valid(); }
  pid_t pid() const { return pid_; }

  // The next report, or nullopt if none arrived within timeout (or the child
  // exited without reporting).
  std::optional<Outcome> Next(std::chrono::milliseconds timeout) {
    pollfd pfd{rd_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    Outcome o;
    if (::read(rd_.get(), &o, sizeof o) != static_cast<ssize_t>(sizeof o)) return std::nullopt;
    return o;
  }

  // Waits for the child to exit; returns its exit status or -1 on timeout.
  int Join(std::chrono::milliseconds timeout) {
    const int64_t deadline = MonotonicNs() + timeout.count() * 1000000;
    while (pid_ > 0) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      if (MonotonicNs() > deadline) return -1;
      ::usleep(1000);
    }
    return -1;
  }

  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // a fanotify permission wait is killable
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  UniqueFd rd_;
};

// Child body: open path, pread count bytes at off, report.
std::function<void(const Child::Report&)> PreadBody(std::string path, size_t count, off_t off) {
  return [path, count, off](const Child::Report& report) {
    Outcome o;
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) {
      o.ret = -1;
      o.err = errno;
      report(o);
      return;
    }
    std::vector<uint8_t> buf(count);
    o.ret = ::pread(fd, buf.data(), count, off);
    o.err = o.ret < 0 ? errno : 0;
    if (o.ret > 0) std::memcpy(o.data.data(), buf.data(), std::min<size_t>(o.ret, o.data.size()));
    report(o);
  };
}

class FanotifyTest : public ::testing::Test {
 protected:
  // One loop-mounted ext4 per test process: isolated from the rest of the
  // machine and torn down at the end. ctest runs each test in its own process,
  // so each gets a private image and mount point.
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pdm-fanotify-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      skip_reason_ = "mkdtemp failed";
      return;
    }
    root_ = tmpl;
    img_ = root_ + "/ext4.img";
    mnt_ = root_ + "/mnt";
    ::mkdir(mnt_.c_str(), 0755);
    std::string mk = "truncate -s 64M " + img_ + " && mkfs.ext4 -q -F " + img_ + " >/dev/null 2>&1";
    if (std::system(mk.c_str()) != 0) {
      skip_reason_ = "cannot create an ext4 image (mkfs.ext4 missing?)";
      return;
    }
    std::string mount = "mount -o loop " + img_ + " " + mnt_ + " >/dev/null 2>&1";
    if (std::system(mount.c_str()) != 0) {
      skip_reason_ = "cannot loop-mount ext4 (no loop devices or not root)";
      return;
    }
    mounted_ = true;
  }

  static void TearDownTestSuite() {
    if (mounted_ && ::umount2(mnt_.c_str(), 0) != 0) ::umount2(mnt_.c_str(), MNT_DETACH);
    mounted_ = false;
    if (!root_.empty()) {
      ::unlink(img_.c_str());
      ::rmdir(mnt_.c_str());
      ::rmdir(root_.c_str());
    }
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    path_ = NewFile("f");
  }

  // A fresh 64 KiB file of PatternByte, written before any mark exists.
  std::string NewFile(const std::string& stem) {
    static int n = 0;
    std::string p = mnt_ + "/" + stem + std::to_string(++n);
    UniqueFd fd(::open(p.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644));
    EXPECT_TRUE(fd.valid()) << p << ": " << std::strerror(errno);
    std::vector<uint8_t> buf(kFileBytes);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = PatternByte(i);
    EXPECT_TRUE(WriteAll(fd.get(), buf, p).ok());
    return p;
  }

  // A group with a FAN_PRE_ACCESS inode mark on path_.
  FanotifyGroup MarkedGroup() {
    auto g = FanotifyGroup::Create();
    EXPECT_TRUE(g.ok()) << g.status().ToString();
    // Keep the signature simple for callers; the EXPECT above already failed.
    if (!g.ok()) return FanotifyGroup::Adopt(UniqueFd(::open("/dev/null", O_RDONLY))).value();
    Status st = g->MarkInode(AT_FDCWD, path_, FAN_PRE_ACCESS);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return std::move(g).value();
  }

  // Exactly one event within the deadline, else a failure and nullopt.
  static std::optional<FanotifyEvent> OneEvent(FanotifyGroup& g) {
    auto r = g.Read(kDeadline);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return std::nullopt;
    EXPECT_EQ(r->size(), 1u) << "expected one event within the deadline";
    if (r->size() != 1) {
      for (auto& e : *r) (void)g.Allow(e);
      return std::nullopt;
    }
    return std::move(r->front());
  }

  static size_t NoMoreEvents(FanotifyGroup& g, std::chrono::milliseconds wait) {
    auto r = g.Read(wait);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return 0;
    for (auto& e : *r) (void)g.Allow(e);
    return r->size();
  }

  static inline std::string skip_reason_;
  static inline std::string root_, img_, mnt_;
  static inline bool mounted_ = false;
  std::string path_;
};

TEST_F(FanotifyTest, ReadBlocksUntilAllowedAndReturnsTheRightBytes) {
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, PreadBody(path_, 16, 100));
  ASSERT_TRUE(app.started());

  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->mask, static_cast<uint64_t>(FAN_PRE_ACCESS));
  EXPECT_EQ(ev->pid, app.pid());
  EXPECT_TRUE(ev->fd.valid());
  EXPECT_TRUE(ev->NeedsResponse());
  // The read must be waiting for us.
  EXPECT_FALSE(app.Next(kStillBlocked).has_value()) << "pread returned before the answer";

  ASSERT_TRUE(g.Allow(*ev).ok());
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value()) << "pread did not return after FAN_ALLOW";
  ASSERT_EQ(out->ret, 16) << std::strerror(out->err);
  for (size_t i = 0; i < 16; ++i) EXPECT_EQ(out->data[i], PatternByte(100 + i)) << i;
}

TEST_F(FanotifyTest, PlainDenyFailsTheReadWithEperm) {
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, PreadBody(path_, 16, 0));
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  ASSERT_TRUE(g.Deny(*ev).ok());
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, -1);
  EXPECT_EQ(out->err, EPERM);
}

class FanotifyDenyErrnoTest : public FanotifyTest, public ::testing::WithParamInterface<int> {};

TEST_P(FanotifyDenyErrnoTest, DenyWithErrnoFailsTheReadWithThatErrno) {
  if (!KernelAtLeast(6, 14)) GTEST_SKIP() << "FAN_DENY_ERRNO needs Linux 6.14";
  const int err = GetParam();
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, PreadBody(path_, 16, 0));
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  Status st = g.Deny(*ev, err);
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, -1);
  EXPECT_EQ(out->err, err) << "got " << std::strerror(out->err);
}

INSTANTIATE_TEST_SUITE_P(Errnos, FanotifyDenyErrnoTest,
                         ::testing::Values(EIO, EAGAIN, EBUSY, ETXTBSY, ENOSPC, EDQUOT),
                         [](const auto& info) { return std::string(strerrorname_np(info.param)); });

TEST_F(FanotifyTest, DenyWithAnErrnoTheKernelRefusesLeavesTheEventPending) {
  if (!KernelAtLeast(6, 14)) GTEST_SKIP() << "FAN_DENY_ERRNO needs Linux 6.14";
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, PreadBody(path_, 16, 0));
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  Status st = g.Deny(*ev, ENOENT);  // not on the kernel's list for read/write/open
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.err(), EINVAL);
  EXPECT_FALSE(app.Next(kStillBlocked).has_value()) << "a refused response must not release the read";
  ASSERT_TRUE(g.Allow(*ev).ok());
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, 16);
}

TEST_F(FanotifyTest, RangeRecordCarriesOffsetAndCountOfTheRead) {
  FanotifyGroup g = MarkedGroup();
  {
    Child app({g.fd()}, PreadBody(path_, 4096, 8192));
    auto ev = OneEvent(g);
    ASSERT_TRUE(ev.has_value());
    ASSERT_TRUE(ev->range.has_value());
    EXPECT_EQ(ev->range->offset, 8192u);
    EXPECT_EQ(ev->range->count, 4096u);
    ASSERT_TRUE(g.Allow(*ev).ok());
    auto out = app.Next(kDeadline);
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(out->ret, 4096);
    EXPECT_EQ(out->data[0], PatternByte(8192));
  }
  {
    // Unaligned: the kernel rounds the range out to whole pages.
    Child app({g.fd()}, PreadBody(path_, 100, 5000));
    auto ev = OneEvent(g);
    ASSERT_TRUE(ev.has_value());
    ASSERT_TRUE(ev->range.has_value());
    EXPECT_EQ(ev->range->offset, 4096u);
    EXPECT_EQ(ev->range->count, 4096u);
    ASSERT_TRUE(g.Allow(*ev).ok());
    ASSERT_TRUE(app.Next(kDeadline).has_value());
  }
}

TEST_F(FanotifyTest, EveryReadRaisesAnEventEvenFromThePageCache) {
  constexpr int kReads = 20;
  FanotifyGroup g = MarkedGroup();
  // The first read brings page 0 into the page cache (the file was also just
  // written, so it is likely cached already); every later event proves the
  // cache hides nothing.
  Child app({g.fd()}, [p = path_](const Child::Report& report) {
    int fd = ::open(p.c_str(), O_RDONLY);
    Outcome o;
    for (int i = 0; i < kReads; ++i) {
      uint8_t b;
      if (::pread(fd, &b, 1, 0) == 1 && b == PatternByte(0)) ++o.ret;
    }
    report(o);
  });
  int events = 0;
  const int64_t deadline = MonotonicNs() + std::chrono::nanoseconds(kDeadline).count();
  while (events < kReads && MonotonicNs() < deadline) {
    auto r = g.Read(kDeadline);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (auto& e : *r) {
      EXPECT_EQ(e.mask, static_cast<uint64_t>(FAN_PRE_ACCESS));
      ASSERT_TRUE(g.Allow(e).ok());
      ++events;
    }
  }
  EXPECT_EQ(events, kReads);
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, kReads);
  EXPECT_EQ(NoMoreEvents(g, 100ms), 0u);
}

TEST_F(FanotifyTest, MmapRaisesOneEventAtMapTimeForTheMappedRange) {
  FanotifyGroup g = MarkedGroup();
  // Reports twice: once mmap returned, once a page was touched.
  Child app({g.fd()}, [p = path_](const Child::Report& report) {
    int fd = ::open(p.c_str(), O_RDONLY);
    Outcome o;
    void* m = ::mmap(nullptr, 16384, PROT_READ, MAP_SHARED, fd, 4096);
    o.ret = m == MAP_FAILED ? -1 : 0;
    o.err = m == MAP_FAILED ? errno : 0;
    report(o);
    if (m == MAP_FAILED) return;
    o.ret = 1;
    o.data[0] = static_cast<const volatile uint8_t*>(m)[8192];  // page fault on file page 3
    report(o);
  });
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value()) << "mmap raised no event";
  ASSERT_TRUE(ev->range.has_value());
  EXPECT_EQ(ev->range->offset, 4096u);
  EXPECT_EQ(ev->range->count, 16384u);
  EXPECT_FALSE(app.Next(kStillBlocked).has_value()) << "mmap returned before the answer";
  ASSERT_TRUE(g.Allow(*ev).ok());

  auto mapped = app.Next(kDeadline);
  ASSERT_TRUE(mapped.has_value());
  ASSERT_EQ(mapped->ret, 0) << std::strerror(mapped->err);
  // The fault raises nothing: the child touches the page without us.
  auto touched = app.Next(kDeadline);
  ASSERT_TRUE(touched.has_value()) << "page fault blocked";
  EXPECT_EQ(touched->data[0], PatternByte(4096 + 8192));
  EXPECT_EQ(NoMoreEvents(g, 100ms), 0u) << "page fault raised an event";
}

TEST_F(FanotifyTest, WriteRaisesPreAccessWithTheWrittenRange) {
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, [p = path_](const Child::Report& report) {
    int fd = ::open(p.c_str(), O_WRONLY);
    std::vector<uint8_t> buf(4096, 0xAB);
    Outcome o;
    o.ret = ::pwrite(fd, buf.data(), buf.size(), 12288);
    o.err = o.ret < 0 ? errno : 0;
    report(o);
  });
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  // Same bit as a read: the kernel has no separate pre-modify event.
  EXPECT_EQ(ev->mask, static_cast<uint64_t>(FAN_PRE_ACCESS));
  ASSERT_TRUE(ev->range.has_value());
  EXPECT_EQ(ev->range->offset, 12288u);
  EXPECT_EQ(ev->range->count, 4096u);
  EXPECT_FALSE(app.Next(kStillBlocked).has_value());
  ASSERT_TRUE(g.Allow(*ev).ok());
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, 4096);
  // Check the data through the event fd, which raises no event.
  uint8_t b = 0;
  ASSERT_EQ(::pread(ev->fd.get(), &b, 1, 12288), 1);
  EXPECT_EQ(b, 0xAB);
}

TEST_F(FanotifyTest, TruncateRaisesPreAccessForThePageHoldingTheNewSize) {
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, [p = path_](const Child::Report& report) {
    Outcome o;
    o.ret = ::truncate(p.c_str(), 60000);
    o.err = o.ret < 0 ? errno : 0;
    report(o);
  });
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  EXPECT_EQ(ev->mask, static_cast<uint64_t>(FAN_PRE_ACCESS));
  ASSERT_TRUE(ev->range.has_value());
  EXPECT_EQ(ev->range->offset, 57344u);  // 60000 rounded down to a page
  EXPECT_EQ(ev->range->count, 4096u);
  ASSERT_TRUE(g.Deny(*ev, EPERM).ok());
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, -1);
  EXPECT_EQ(out->err, EPERM);
  struct stat st{};
  ASSERT_EQ(::fstat(ev->fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(kFileBytes)) << "denied truncate changed the size";
}

TEST_F(FanotifyTest, IoThroughTheEventFdRaisesNoEvent) {
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, PreadBody(path_, 16, 0));
  auto ev = OneEvent(g);
  ASSERT_TRUE(ev.has_value());
  // Read and write through the event fd in another child (it shares the
  // FMODE_NONOTIFY open file), so a regression blocks that child, not us.
  Child agent_io({g.fd()}, [fd = ev->fd.get()](const Child::Report& report) {
    Outcome o;
    uint8_t b[16];
    o.ret = ::pread(fd, b, sizeof b, 32768);
    if (o.ret == 16) o.ret = ::pwrite(fd, b, sizeof b, 32768);
    o.err = o.ret < 0 ? errno : 0;
    report(o);
  });
  auto io = agent_io.Next(kDeadline);
  ASSERT_TRUE(io.has_value()) << "I/O through the event fd blocked: self-deadlock";
  EXPECT_EQ(io->ret, 16) << std::strerror(io->err);
  EXPECT_EQ(NoMoreEvents(g, 200ms), 0u) << "I/O through the event fd raised an event";
  EXPECT_FALSE(app.Next(0ms).has_value());
  ASSERT_TRUE(g.Allow(*ev).ok());
  ASSERT_TRUE(app.Next(kDeadline).has_value());
}

TEST_F(FanotifyTest, UnmarkedFileRaisesNothing) {
  FanotifyGroup g = MarkedGroup();
  std::string other = NewFile("unmarked");
  Child app({g.fd()}, PreadBody(other, 16, 0));
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value()) << "read of an unmarked file blocked";
  EXPECT_EQ(out->ret, 16);
  EXPECT_EQ(NoMoreEvents(g, 200ms), 0u);
}

TEST_F(FanotifyTest, FileOpenedBeforeTheMarkStaysSilent) {
  // The kernel decides at open(2) whether a file reports pre-content events:
  // with no pre-content mark on the file system, the file is opened with
  // notifications off for good. An HSM must mark before applications open.
  UniqueFd early(::open(path_.c_str(), O_RDONLY));
  ASSERT_TRUE(early.valid());
  FanotifyGroup g = MarkedGroup();
  Child app({g.fd()}, [fd = early.get()](const Child::Report& report) {
    Outcome o;
    uint8_t b;
    o.ret = ::pread(fd, &b, 1, 0);
    report(o);
  });
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value()) << "read through an fd opened before the mark blocked";
  EXPECT_EQ(out->ret, 1);
  EXPECT_EQ(NoMoreEvents(g, 200ms), 0u);
}

TEST_F(FanotifyTest, UnmarkStopsEvents) {
  FanotifyGroup g = MarkedGroup();
  ASSERT_TRUE(g.UnmarkInode(AT_FDCWD, path_, FAN_PRE_ACCESS).ok());
  Child app({g.fd()}, PreadBody(path_, 16, 0));
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value()) << "read blocked after the mark was removed";
  EXPECT_EQ(out->ret, 16);
  EXPECT_EQ(NoMoreEvents(g, 200ms), 0u);
}

TEST_F(FanotifyTest, MountMarkCoversEveryFileOfTheMount) {
  // Created before the mark: once the mount is marked, this process's own
  // writes to it would wait on its own group.
  std::string other = NewFile("mountwide");
  auto g = FanotifyGroup::Create();
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  ASSERT_TRUE(g->MarkMount(mnt_, FAN_PRE_ACCESS).ok());
  Child app({g->fd()}, PreadBody(other, 16, 0));
  auto ev = OneEvent(*g);
  ASSERT_TRUE(ev.has_value());
  ASSERT_TRUE(g->Allow(*ev).ok());
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, 16);
}

// The "unmanaged file pays one event" pattern: a mount mark plus an
// evictable ignore mark on one inode silences that inode only.
class FanotifyIgnoreTest : public FanotifyTest, public ::testing::WithParamInterface<bool> {};

TEST_P(FanotifyIgnoreTest, EvictableIgnoreMarkSilencesOneInodeUnderAMountMark) {
  const bool surv_modify = GetParam();
  std::string other = NewFile("still-watched");
  auto g = FanotifyGroup::Create();
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(g->MarkMount(mnt_, FAN_PRE_ACCESS).ok());
  unsigned int flags = FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_EVICTABLE;
  if (surv_modify) flags |= FAN_MARK_IGNORED_SURV_MODIFY;
  Status st = g->Mark(flags, FAN_PRE_ACCESS, AT_FDCWD, path_);
  ASSERT_TRUE(st.ok()) << st.ToString();

  // A read and a write of the ignored file raise nothing.
  Child app({g->fd()}, [p = path_](const Child::Report& report) {
    int fd = ::open(p.c_str(), O_RDWR);
    Outcome o;
    uint8_t b = 0;
    o.ret = ::pread(fd, &b, 1, 0) == 1 && ::pwrite(fd, &b, 1, 0) == 1 ? 1 : -1;
    report(o);
    o.ret = ::pread(fd, &b, 1, 0);  // after the modification
    report(o);
  });
  auto first = app.Next(kDeadline);
  ASSERT_TRUE(first.has_value()) << "an ignored inode raised an event";
  EXPECT_EQ(first->ret, 1);
  // The write (FAN_MODIFY) clears an inode ignore mask unless it was added
  // with FAN_MARK_IGNORED_SURV_MODIFY: then the next read is watched again.
  if (surv_modify) {
    auto second = app.Next(kDeadline);
    ASSERT_TRUE(second.has_value()) << "ignore mark with SURV_MODIFY did not survive the write";
    EXPECT_EQ(second->ret, 1);
  } else {
    auto ev = OneEvent(*g);
    ASSERT_TRUE(ev.has_value()) << "the write did not clear the ignore mask";
    EXPECT_FALSE(app.Next(0ms).has_value());
    ASSERT_TRUE(g->Allow(*ev).ok());
    ASSERT_TRUE(app.Next(kDeadline).has_value());
  }
  EXPECT_EQ(NoMoreEvents(*g, 100ms), 0u);

  // Other files of the mount are still watched.
  Child app2({g->fd()}, PreadBody(other, 1, 0));
  auto ev = OneEvent(*g);
  ASSERT_TRUE(ev.has_value());
  ASSERT_TRUE(g->Allow(*ev).ok());
  ASSERT_TRUE(app2.Next(kDeadline).has_value());
}

INSTANTIATE_TEST_SUITE_P(SurvModify, FanotifyIgnoreTest, ::testing::Bool());

TEST_F(FanotifyTest, ClosingTheGroupAllowsPendingEvents) {
  // Why the supervisor must hold the group: its release answers ALLOW, and an
  // HSM stub would then be read as the zeros on disk.
  auto g = std::make_optional(MarkedGroup());
  Child app({g->fd()}, PreadBody(path_, 16, 0));
  auto ev = OneEvent(*g);
  ASSERT_TRUE(ev.has_value());
  EXPECT_FALSE(app.Next(kStillBlocked).has_value());
  g.reset();
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value()) << "closing the group did not release the read";
  EXPECT_EQ(out->ret, 16);
}

TEST_F(FanotifyTest, MarkErrors) {
  // tmpfs does not opt into pre-content events.
  std::string tmpfs = root_ + "/tmpfs";
  ::mkdir(tmpfs.c_str(), 0755);
  ASSERT_EQ(::mount("tmpfs", tmpfs.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  {
    auto g = FanotifyGroup::Create();
    ASSERT_TRUE(g.ok());
    Status st = g->MarkInode(AT_FDCWD, tmpfs, FAN_PRE_ACCESS);
    EXPECT_EQ(st.err(), EOPNOTSUPP) << st.ToString();
  }
  ::umount2(tmpfs.c_str(), MNT_DETACH);
  ::rmdir(tmpfs.c_str());

  // A content-class group may not ask for pre-content events.
  auto content = FanotifyGroup::Create({FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY});
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(content->MarkInode(AT_FDCWD, path_, FAN_PRE_ACCESS).err(), EINVAL);

  auto g = FanotifyGroup::Create();
  ASSERT_TRUE(g.ok());
  Status missing = g->MarkInode(AT_FDCWD, mnt_ + "/no-such-file", FAN_PRE_ACCESS);
  EXPECT_EQ(missing.code(), Code::kNotFound) << missing.ToString();
  EXPECT_FALSE(FanotifyGroup::Adopt(UniqueFd()).ok());
}

// --- the group handed to another process over SCM_RIGHTS -------------------

// An agent process: receives the group over sock and answers `answers`
// events FAN_ALLOW, reporting each, then exits. With linger it first waits
// for the peer to close sock, so that its exit (which may release the group
// and so ALLOW everything) cannot be mistaken for an answer.
std::function<void(const Child::Report&)> AgentBody(int sock, int answers, bool linger = false) {
  return [sock, answers, linger](const Child::Report& report) {
    auto fd = RecvFd(sock);
    if (!fd.ok()) return;
    auto g = FanotifyGroup::Adopt(std::move(fd).value());
    if (!g.ok()) return;
    for (int done = 0; done < answers;) {
      auto r = g->Read(kDeadline);
      if (!r.ok() || r->empty()) return;
      for (auto& e : *r) {
        Outcome o;
        o.ret = g->Allow(e).ok() ? 1 : -1;
        report(o);
        ++done;
      }
    }
    char c;
    while (linger && ::read(sock, &c, 1) > 0) {
    }
  };
}

TEST_F(FanotifyTest, GroupPassedToAnotherProcessStillAnswersEvents) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd mine(sp[0]), theirs(sp[1]);
  auto g = std::make_optional(MarkedGroup());
  Child agent({g->fd(), mine.get()}, AgentBody(theirs.get(), 1, /*linger=*/true));
  theirs.reset();
  ASSERT_TRUE(SendFd(mine.get(), g->fd()).ok());
  g.reset();  // only the agent holds the group now

  Child app({}, PreadBody(path_, 16, 0));
  auto answered = agent.Next(kDeadline);
  ASSERT_TRUE(answered.has_value()) << "agent saw no event on the passed group";
  EXPECT_EQ(answered->ret, 1);
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, 16);
  EXPECT_EQ(out->data[0], PatternByte(0));
  mine.reset();  // lets the agent exit
  EXPECT_EQ(agent.Join(kDeadline), 0);
}

TEST_F(FanotifyTest, SupervisorKeepsTheGroupAcrossAnAgentRestart) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd mine(sp[0]), theirs(sp[1]);
  FanotifyGroup g = MarkedGroup();  // the supervisor's copy; it never reads

  {
    Child agent1({g.fd(), mine.get()}, AgentBody(theirs.get(), 1));
    ASSERT_TRUE(SendFd(mine.get(), g.fd()).ok());
    Child app({g.fd()}, PreadBody(path_, 16, 0));
    ASSERT_TRUE(app.Next(kDeadline).has_value());
    ASSERT_EQ(agent1.Join(kDeadline), 0);
  }
  // No agent: the read waits in the group instead of seeing the disk.
  Child app2({g.fd()}, PreadBody(path_, 16, 0));
  EXPECT_FALSE(app2.Next(kStillBlocked).has_value()) << "read completed with no agent running";

  Child agent2({g.fd(), mine.get()}, AgentBody(theirs.get(), 1));
  ASSERT_TRUE(SendFd(mine.get(), g.fd()).ok());
  auto answered = agent2.Next(kDeadline);
  ASSERT_TRUE(answered.has_value()) << "the restarted agent did not get the queued event";
  auto out = app2.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, 16);
}

TEST_F(FanotifyTest, EventReadByADeadAgentStaysPendingUntilTheGroupCloses) {
  // The restart caveat: an event the agent read but never answered is not
  // requeued; its reader waits until the last group fd closes.
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd mine(sp[0]), theirs(sp[1]);
  auto g = std::make_optional(MarkedGroup());
  Child app({g->fd()}, PreadBody(path_, 16, 0));
  {
    Child agent({g->fd(), mine.get()}, [sock = theirs.get()](const Child::Report& report) {
      auto fd = RecvFd(sock);
      if (!fd.ok()) return;
      auto grp = FanotifyGroup::Adopt(std::move(fd).value());
      auto r = grp->Read(kDeadline);
      Outcome o;
      o.ret = r.ok() ? static_cast<int64_t>(r->size()) : -1;
      report(o);
      ::pause();  // dies holding the unanswered event
    });
    ASSERT_TRUE(SendFd(mine.get(), g->fd()).ok());
    auto got = agent.Next(kDeadline);
    ASSERT_TRUE(got.has_value());
    ASSERT_EQ(got->ret, 1);
    agent.Kill();
  }
  EXPECT_FALSE(app.Next(kStillBlocked).has_value()) << "the dead agent's event was released";
  EXPECT_EQ(NoMoreEvents(*g, 200ms), 0u) << "the dead agent's event was requeued";
  g.reset();
  auto out = app.Next(kDeadline);
  ASSERT_TRUE(out.has_value());
  EXPECT_EQ(out->ret, 16);
}

// --- SendFd / RecvFd on their own ---------------------------------------------

TEST(FdPassingTest, PassesAnFdThatReferencesTheSameFile) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd a(sp[0]), b(sp[1]);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd pr(p[0]), pw(p[1]);
  ASSERT_TRUE(SendFd(a.get(), pw.get()).ok());
  auto got = RecvFd(b.get());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_NE(got->get(), pw.get());
  EXPECT_EQ(::fcntl(got->get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ASSERT_EQ(::write(got->get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pr.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(FdPassingTest, ReportsClosedPeerAndMissingFd) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd a(sp[0]), b(sp[1]);
  ASSERT_EQ(::write(a.get(), "F", 1), 1);  // right byte, no fd
  auto none = RecvFd(b.get());
  EXPECT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kInternal);
  a.reset();
  auto closed = RecvFd(b.get());
  EXPECT_FALSE(closed.ok());
  EXPECT_EQ(closed.status().err(), ECONNRESET);
}

}  // namespace
}  // namespace pdm::events
