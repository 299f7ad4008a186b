// Helpers for the libdmapi cluster tests: a DMAPI program "on node k" is a
// forked child whose DMAPI_SOCKET names node k's socket (libdmapi connects
// on first use, so the test process itself never calls libdmapi and no
// child inherits a connection). Children talk to the test over line pipes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "local_cluster.h"

namespace pdm::test {

// Runs a shell command; returns (exit status, stdout, and stderr too when
// asked: a test that checks an error message reads it there).
inline std::pair<int, std::string> RunShell(const std::string& cmd, bool with_stderr) {
  FILE* p = popen((cmd + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// Inside a child: report the failing line and errno, exit non-zero.
#define CHILD_CHECK(cond)                                                                        \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "child check failed at line %d: %s (errno %d %s)\n", __LINE__, #cond, \
                   errno, std::strerror(errno));                                                 \
      _exit(1);                                                                                  \
    }                                                                                            \
  } while (0)

// A child's exit status, without gtest printing the child's whole body.
#define EXPECT_CHILD_OK(expr)                  \
  do {                                         \
    const int child_rc_ = (expr);              \
    EXPECT_EQ(child_rc_, 0) << "child failed"; \
  } while (0)

// -1 with that errno.
#define CHILD_FAILS(call, err) CHILD_CHECK((call) == -1 && errno == (err))

inline std::string ReadLineFromFile(FILE* r) {
  char buf[8192];
  if (!fgets(buf, sizeof(buf), r)) return "";
  std::string s(buf);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

struct Child {
  pid_t pid = -1;
  FILE* in = nullptr;   // the test reads what the child writes
  FILE* out = nullptr;  // the test writes what the child reads

  template <typename F>
  static Child Start(const LocalCluster& lc, int node, F body) {
    int up[2], down[2];
    if (pipe(up) != 0 || pipe(down) != 0) std::abort();
    Child c;
    c.pid = fork();
    if (c.pid == 0) {
      close(up[0]);
      close(down[1]);
      setenv("DMAPI_SOCKET", lc.Socket(node).c_str(), 1);
      FILE* w = fdopen(up[1], "w");
      FILE* r = fdopen(down[0], "r");
      setvbuf(w, nullptr, _IOLBF, 0);
      _exit(body(r, w));
    }
    close(up[1]);
    close(down[0]);
    c.in = fdopen(up[0], "r");
    c.out = fdopen(down[1], "w");
    setvbuf(c.out, nullptr, _IOLBF, 0);
    return c;
  }
  std::string ReadLine() { return ReadLineFromFile(in); }
  void Send(const std::string& s) { std::fprintf(out, "%s\n", s.c_str()); }
  int Wait() {
    int st = 0;
    waitpid(pid, &st, 0);
    if (in) fclose(in);
    if (out) fclose(out);
    in = out = nullptr;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
};

// Runs body in a child on `node` and waits for it.
template <typename F>
int RunOn(const LocalCluster& lc, int node, F body) {
  Child c = Child::Start(lc, node, [&](FILE* r, FILE* w) { return body(r, w); });
  return c.Wait();
}

inline std::string Hex(const void* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[static_cast<const uint8_t*>(p)[i] >> 4];
    s += d[static_cast<const uint8_t*>(p)[i] & 15];
  }
  return s;
}

inline std::vector<uint8_t> Unhex(const std::string& s) {
  std::vector<uint8_t> v;
  for (size_t i = 0; i + 1 < s.size(); i += 2) v.push_back(static_cast<uint8_t>(std::stoi(s.substr(i, 2), nullptr, 16)));
  return v;
}

}  // namespace pdm::test
