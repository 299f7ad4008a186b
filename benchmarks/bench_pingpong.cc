// Baseline: raw ping-pong of 64-byte messages between two processes over TCP
// loopback or a Unix socket (the path pdm's control plane / local API rides).
// usage: bench_pingpong tcp|unix ITERS   -> prints the round trip in us
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/posix.h"

int main(int argc, char** argv) {
  const std::string kind = argc > 1 ? argv[1] : "tcp";
  const int iters = argc > 2 ? std::atoi(argv[2]) : 20000;
  int sv[2];
  if (kind == "unix") {
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
  } else {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(l, 1) != 0) return 1;
    socklen_t len = sizeof(sa);
    getsockname(l, reinterpret_cast<sockaddr*>(&sa), &len);
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sv[0], reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return 1;
    sv[1] = accept(l, nullptr, nullptr);
    int one = 1;
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    close(l);
  }
  uint8_t msg[64] = {0};
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    for (int i = 0; i < iters + 1000; ++i) {
      if (!pdm::ReadExact(sv[1], msg, "pong").ok()) _exit(0);
      if (!pdm::WriteAll(sv[1], msg, "pong").ok()) _exit(0);
    }
    _exit(0);
  }
  close(sv[1]);
  for (int i = 0; i < 1000; ++i) {
    (void)pdm::WriteAll(sv[0], msg, "ping");
    (void)pdm::ReadExact(sv[0], msg, "ping");
  }
  int64_t t0 = pdm::MonotonicNs();
  for (int i = 0; i < iters; ++i) {
    (void)pdm::WriteAll(sv[0], msg, "ping");
    (void)pdm::ReadExact(sv[0], msg, "ping");
  }
  double us = double(pdm::MonotonicNs() - t0) / iters / 1000.0;
  close(sv[0]);
  waitpid(pid, nullptr, 0);
  std::printf("pingpong kind=%s bytes=64 rtt_us=%.2f\n", kind.c_str(), us);
  return 0;
}
