// libdmapi benchmarks against a running cluster, each with its baseline in
// the same process and run:
//   bench_dmapi events ITERS
//       a synchronous dm_send_msg answered by a responder thread doing
//       dm_get_events + dm_respond_event, vs raw Unix-socket ping-pongs
//   bench_dmapi invis FILE MIB
//       dm_read_invis / dm_write_invis in 1 MiB blocks vs pread / pwrite
// DMAPI_SOCKET names the node agent.
#include <dmapi.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/posix.h"

namespace {

// Ping-pong of 64 bytes with another process over a Unix socket: the DM
// application and the node agent are separate processes, so this is the
// floor of one request/reply through the agent's socket.
double UnixPingPongUs(int iters) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    uint8_t b[64];
    for (int i = 0; i < iters + 100; ++i) {
      if (!pdm::ReadExact(sv[1], b, "echo").ok()) _exit(0);
      if (!pdm::WriteAll(sv[1], b, "echo").ok()) _exit(0);
    }
    _exit(0);
  }
  close(sv[1]);
  uint8_t b[64] = {0};
  for (int i = 0; i < 100; ++i) {
    (void)pdm::WriteAll(sv[0], b, "p");
    (void)pdm::ReadExact(sv[0], b, "p");
  }
  int64_t t0 = pdm::MonotonicNs();
  for (int i = 0; i < iters; ++i) {
    (void)pdm::WriteAll(sv[0], b, "p");
    (void)pdm::ReadExact(sv[0], b, "p");
  }
  double us = double(pdm::MonotonicNs() - t0) / iters / 1000.0;
  close(sv[0]);
  waitpid(pid, nullptr, 0);
  return us;
}

int Events(int iters) {
  dm_sessid_t sid;
  if (dm_create_session(DM_NO_SESSION, "bench responder", &sid) != 0) return 1;
  std::thread responder([&] {
    static char buf[65536] __attribute__((aligned(8)));
    for (;;) {
      size_t rlen;
      if (dm_get_events(sid, 0, DM_EV_WAIT, sizeof(buf), buf, &rlen) != 0) return;
      bool stop = false;
      for (auto* m = reinterpret_cast<dm_eventmsg_t*>(buf); m; m = DM_STEP_TO_NEXT(m, dm_eventmsg_t*)) {
        if (DM_GET_LEN(m, ev_data) == 4) stop = true;
        dm_respond_event(sid, m->ev_token, DM_RESP_CONTINUE, 0, 0, nullptr);
      }
      if (stop) return;
    }
  });
  char msg[64] = {0};
  for (int i = 0; i < 200; ++i) dm_send_msg(sid, DM_MSGTYPE_SYNC, sizeof(msg), msg);
  int64_t t0 = pdm::MonotonicNs();
  for (int i = 0; i < iters; ++i)
    if (dm_send_msg(sid, DM_MSGTYPE_SYNC, sizeof(msg), msg) != 0) return 1;
  double us = double(pdm::MonotonicNs() - t0) / iters / 1000.0;
  dm_send_msg(sid, DM_MSGTYPE_SYNC, 4, msg);
  responder.join();
  dm_destroy_session(sid);
  double pp = UnixPingPongUs(iters);
  std::printf("dmapi_event_roundtrip_us=%.2f unix_pingpong_us=%.2f ratio_vs_2_pingpongs=%.2f\n", us, pp,
              us / (2 * pp));
  return 0;
}

int Invis(const char* path, int mib) {
  const size_t block = 1 << 20;
  std::vector<char> buf(block, 'x');
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return 1;
  for (int i = 0; i < mib; ++i)
    if (write(fd, buf.data(), block) != static_cast<ssize_t>(block)) return 1;
  fsync(fd);
  void* h;
  size_t hl;
  dm_sessid_t sid;
  if (dm_path_to_handle(path, &h, &hl) != 0 || dm_create_session(DM_NO_SESSION, "bench invis", &sid) != 0) return 1;
  auto rate = [&](auto fn) {
    for (int i = 0; i < mib; ++i) fn(uint64_t(i) * block);  // warm
    int64_t t0 = pdm::MonotonicNs();
    for (int rep = 0; rep < 3; ++rep)
      for (int i = 0; i < mib; ++i) fn(uint64_t(i) * block);
    return 3.0 * mib / (double(pdm::MonotonicNs() - t0) / 1e9);  // MiB/s
  };
  double pr = rate([&](uint64_t off) { (void)!pread(fd, buf.data(), block, static_cast<off_t>(off)); });
  double dr = rate([&](uint64_t off) {
    dm_read_invis(sid, h, hl, DM_NO_TOKEN, static_cast<dm_off_t>(off), block, buf.data());
  });
  double pw = rate([&](uint64_t off) { (void)!pwrite(fd, buf.data(), block, static_cast<off_t>(off)); });
  double dw = rate([&](uint64_t off) {
    dm_write_invis(sid, h, hl, DM_NO_TOKEN, 0, static_cast<dm_off_t>(off), block, buf.data());
  });
  std::printf("read: pread %.0f MiB/s, dm_read_invis %.0f MiB/s, ratio %.2f\n", pr, dr, dr / pr);
  std::printf("write: pwrite %.0f MiB/s, dm_write_invis %.0f MiB/s, ratio %.2f\n", pw, dw, dw / pw);
  dm_handle_free(h, hl);
  dm_destroy_session(sid);
  close(fd);
  unlink(path);
  return 0;
}

// A DM application that makes FILE managed (a READ region over it, READ
// enabled and disposed to us) without removing its data, then answers every
// DM_EVENT_READ with CONTINUE: each read of FILE through a view is one
// synchronous data event. Prints "ready"; stops after N events.
int Responder(const char* view, const char* path, int n) {
  dm_sessid_t sid;
  void *fsh, *h;
  size_t fshl, hl;
  if (dm_create_session(DM_NO_SESSION, "bench data events", &sid) != 0 ||
      dm_path_to_fshandle(view, &fsh, &fshl) != 0 || dm_path_to_handle(path, &h, &hl) != 0)
    return 1;
  dm_eventset_t ev;
  DMEV_ZERO(ev);
  DMEV_SET(DM_EVENT_READ, ev);
  if (dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) != 0 ||
      dm_set_eventlist(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) != 0)
    return 1;
  dm_region_t rg{};
  rg.rg_flags = DM_REGION_READ;
  dm_boolean_t exact;
  if (dm_set_region(sid, h, hl, DM_NO_TOKEN, 1, &rg, &exact) != 0) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  static char buf[65536] __attribute__((aligned(8)));
  for (int done = 0; done < n;) {
    size_t rlen;
    if (dm_get_events(sid, 0, DM_EV_WAIT, sizeof(buf), buf, &rlen) != 0) return 1;
    for (auto* m = reinterpret_cast<dm_eventmsg_t*>(buf); m; m = DM_STEP_TO_NEXT(m, dm_eventmsg_t*), ++done)
      dm_respond_event(sid, m->ev_token, DM_RESP_CONTINUE, 0, 0, nullptr);
  }
  dm_set_region(sid, h, hl, DM_NO_TOKEN, 0, nullptr, &exact);
  DMEV_ZERO(ev);
  dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX);
  dm_destroy_session(sid);
  return 0;
}

// Not a DMAPI client (its reads must raise events): N reads of 1 byte.
int Reader(const char* path, int n) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 1;
  char c;
  int64_t t0 = pdm::MonotonicNs();
  for (int i = 0; i < n; ++i)
    if (pread(fd, &c, 1, 0) != 1) return 1;
  std::printf("data_event_roundtrip_us=%.2f\n", double(pdm::MonotonicNs() - t0) / n / 1000.0);
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 5 && std::string(argv[1]) == "responder") return Responder(argv[2], argv[3], std::atoi(argv[4]));
  if (argc >= 4 && std::string(argv[1]) == "reader") return Reader(argv[2], std::atoi(argv[3]));
  if (argc >= 3 && std::string(argv[1]) == "events") return Events(std::atoi(argv[2]));
  if (argc >= 4 && std::string(argv[1]) == "invis") return Invis(argv[2], std::atoi(argv[3]));
  std::fprintf(stderr, "usage: %s events ITERS | invis FILE MIB | responder VIEW FILE N | reader FILE N\n",
               argv[0]);
  return 2;
}
