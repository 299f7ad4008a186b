// The event supervisor (pdm-eventd) keeps a node's pre-content group and
// its waiting accesses across agent deaths: the real binary on a private
// loop-mounted ext4, agents that are forked processes speaking the real
// protocol and killed with kill -9, readers that are real processes.
// Needs root (fanotify_init, mount); skips with the reason otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dm/attrs.h"
#include "events/supervisor_protocol.h"

namespace pdm::events {
namespace {

constexpr size_t kFileBytes = 64 * 1024;
uint8_t PatternByte(size_t i) { return static_cast<uint8_t>('A' + i % 23); }

// A forked process that reports lines on a pipe.
class Proc {
 public:
  explicit Proc(std::function<void(int report_fd)> body) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(p[0]);
      body(p[1]);
      ::_exit(0);
    }
    ::close(p[1]);
    rd_ = UniqueFd(p[0]);
  }
  ~Proc() { Kill(); }
  // One line, or "" when none came within timeout_ms.
  std::string Line(int timeout_ms) {
    std::string out;
    const int64_t deadline = MonotonicNs() + int64_t(timeout_ms) * 1000000;
    while (MonotonicNs() < deadline) {
      pollfd p{rd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 10) != 1) continue;
      char c;
      if (::read(rd_.get(), &c, 1) != 1) return out;
      if (c == '\n') return out;
      out += c;
    }
    return out;
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  UniqueFd rd_;
};

void Say(int fd, const std::string& s) {
  std::string l = s + "\n";
  (void)!::write(fd, l.data(), l.size());
}

// Reader: pread 100 bytes at 0 -> "ok <bytes as hex-free check>" or "err N".
std::function<void(int)> Reader(std::string path) {
  return [path](int out) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return Say(out, "err " + std::to_string(errno));
    char buf[100];
    ssize_t n = ::pread(fd, buf, sizeof buf, 0);
    if (n < 0) return Say(out, "err " + std::to_string(errno));
    bool pattern = n == 100;
    bool zeros = n > 0;
    for (ssize_t i = 0; i < n; ++i) {
      pattern &= static_cast<uint8_t>(buf[i]) == PatternByte(size_t(i));
      zeros &= buf[i] == 0;
    }
    Say(out, pattern ? "data" : zeros ? "zeros" : "other");
  };
}

// Agent: attach with `timeout_ms`; for each event report "event ID" and,
// when `fill`, write the pattern through the event fd and allow by id.
std::function<void(int)> Agent(std::string sock, uint64_t timeout_ms, bool fill) {
  return [=](int out) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, sock.c_str());
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return Say(out, "noconnect");
    SupMsg a;
    a.type = SupType::kAttach;
    a.arg = timeout_ms;
    if (!SendSup(s, a).ok()) return Say(out, "nosend");
    auto w = RecvSup(s);
    if (!w.ok() || w->msg.type != SupType::kWelcome || !w->fd.valid()) return Say(out, "nowelcome");
    const int group = w->fd.get();
    Say(out, "welcome " + std::to_string(w->msg.arg));
    for (;;) {
      auto m = RecvSup(s);
      if (!m.ok()) return;
      Say(out, "event " + std::to_string(m->msg.id));
      if (!fill) continue;
      std::vector<uint8_t> data(kFileBytes);
      for (size_t i = 0; i < data.size(); ++i) data[i] = PatternByte(i);
      if (::pwrite(m->fd.get(), data.data(), data.size(), 0) != ssize_t(data.size())) Say(out, "nofill");
      fanotify_response r{m->msg.id, FAN_ALLOW};
      if (::write(group, &r, sizeof r) != sizeof r) Say(out, "noanswer " + std::to_string(errno));
      SupMsg d;
      d.type = SupType::kDone;
      d.id = m->msg.id;
      (void)SendSup(s, d);
    }
  };
}

class SupervisorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/pdm-eventd-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      skip_reason_ = "mkdtemp failed";
      return;
    }
    root_ = tmpl;
    mnt_ = root_ + "/mnt";
    ::mkdir(mnt_.c_str(), 0755);
    const std::string img = root_ + "/ext4.img";
    if (std::system(("truncate -s 64M " + img + " && mkfs.ext4 -q -F " + img + " >/dev/null 2>&1").c_str()) != 0) {
      skip_reason_ = "cannot create an ext4 image (mkfs.ext4 missing?)";
      return;
    }
    if (std::system(("mount -o loop " + img + " " + mnt_ + " >/dev/null 2>&1").c_str()) != 0) {
      skip_reason_ = "cannot loop-mount ext4 (no loop devices or not root)";
      return;
    }
    mounted_ = true;
  }
  static void TearDownTestSuite() {
    if (mounted_ && ::umount2(mnt_.c_str(), 0) != 0) ::umount2(mnt_.c_str(), MNT_DETACH);
    if (!root_.empty()) std::system(("rm -rf " + root_).c_str());
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    static int n = 0;
    sock_ = root_ + "/sup" + std::to_string(++n) + ".sock";
    managed_ = NewFile("managed", true);
    unmanaged_ = NewFile("plain", false);
    StartSupervisor();
  }
  void TearDown() override {
    if (sup_ > 0) {
      ::kill(sup_, SIGKILL);
      ::waitpid(sup_, nullptr, 0);
    }
  }

  void StartSupervisor() {
    sup_ = ::fork();
    if (sup_ == 0) {
      const std::string exe = std::string(PDM_BINARY_DIR) + "/bin/pdm-eventd";
      ::execl(exe.c_str(), exe.c_str(), "--view", mnt_.c_str(), "--socket", sock_.c_str(), "--log-level", "warn",
              nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 500 && ::access((sock_ + ".pid").c_str(), F_OK) != 0; ++i) ::usleep(10000);
    ASSERT_EQ(::access((sock_ + ".pid").c_str(), F_OK), 0) << "pdm-eventd did not come up";
  }

  // A 64 KiB pattern file; `managed`: a READ region over all of it and the
  // data punched out, as a released HSM stub.
  std::string NewFile(const std::string& stem, bool managed) {
    static int n = 0;
    std::string p = mnt_ + "/" + stem + std::to_string(++n);
    UniqueFd fd(::open(p.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0644));
    EXPECT_TRUE(fd.valid());
    std::vector<uint8_t> buf(kFileBytes);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = PatternByte(i);
    EXPECT_TRUE(WriteAll(fd.get(), buf, p).ok());
    if (managed) {
      dm::Region r{0, 0, dm::kRegionRead};
      EXPECT_TRUE(dm::SetRegions(fd.get(), {&r, 1}).ok());
      EXPECT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kFileBytes), 0);
    }
    return p;
  }

  static inline std::string skip_reason_, root_, mnt_;
  static inline bool mounted_ = false;
  std::string sock_, managed_, unmanaged_;
  pid_t sup_ = -1;
};

TEST_F(SupervisorTest, UnmanagedFilesNeedNoAgent) {
  Proc r(Reader(unmanaged_));
  EXPECT_EQ(r.Line(2000), "data") << "an unmanaged file must not wait for an agent";
}

TEST_F(SupervisorTest, AccessWaitsForTheNextAgentAfterKill9AndGetsItsData) {
  Proc a1(Agent(sock_, 0, false));
  ASSERT_EQ(a1.Line(2000), "welcome 0");
  Proc r(Reader(managed_));
  const std::string ev = a1.Line(2000);
  ASSERT_EQ(ev.rfind("event ", 0), 0u) << ev;
  a1.Kill();  // kill -9 while the read waits for it
  EXPECT_EQ(r.Line(700), "") << "the read must keep waiting, not see the hole";
  Proc a2(Agent(sock_, 0, true));
  EXPECT_EQ(a2.Line(2000), "welcome 1") << "the waiting access is handed over";
  EXPECT_EQ(a2.Line(2000), ev) << "same event, same id";
  EXPECT_EQ(r.Line(3000), "data");
}

TEST_F(SupervisorTest, EventTimeoutFailsTheWaitingAccessWithEio) {
  Proc a1(Agent(sock_, 400, false));
  ASSERT_EQ(a1.Line(2000), "welcome 0");
  Proc r(Reader(managed_));
  ASSERT_EQ(a1.Line(2000).rfind("event ", 0), 0u);
  a1.Kill();
  const int64_t t0 = MonotonicNs();
  EXPECT_EQ(r.Line(5000), "err " + std::to_string(EIO));
  EXPECT_GE(MonotonicNs() - t0, 300 * 1000000LL) << "not before the timeout";
  // A new access with still no agent: the same.
  Proc r2(Reader(managed_));
  EXPECT_EQ(r2.Line(5000), "err " + std::to_string(EIO));
}

TEST_F(SupervisorTest, ASecondAgentIsRefusedWhileOneIsAttached) {
  Proc a1(Agent(sock_, 0, true));
  ASSERT_EQ(a1.Line(2000), "welcome 0");
  Proc a2(Agent(sock_, 0, true));
  const std::string l = a2.Line(2000);
  EXPECT_TRUE(l == "nosend" || l == "nowelcome") << l;
  Proc r(Reader(managed_));
  EXPECT_EQ(r.Line(3000), "data") << "the attached agent still serves";
}

TEST_F(SupervisorTest, DetachingFailsWaitingAccessesWithEioNeverZeros) {
  Proc r(Reader(managed_));
  EXPECT_EQ(r.Line(500), "") << "no agent: the managed read waits";
  ASSERT_EQ(::kill(sup_, SIGTERM), 0);
  EXPECT_EQ(r.Line(3000), "err " + std::to_string(EIO));
  int st = 0;
  EXPECT_EQ(::waitpid(sup_, &st, 0), sup_);
  sup_ = -1;
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

TEST_F(SupervisorTest, NonRootAgentsAreRefused) {
  Proc a(Agent(sock_, 0, true));
  ASSERT_EQ(a.Line(2000), "welcome 0");
  a.Kill();
  Proc nobody([this](int out) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return Say(out, "nosetuid");
    Agent(sock_, 0, true)(out);
  });
  const std::string l = nobody.Line(2000);
  EXPECT_TRUE(l == "noconnect" || l == "nowelcome") << l;
}

}  // namespace
}  // namespace pdm::events
