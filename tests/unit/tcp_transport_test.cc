// TcpTransport: framing, ordering, authentication and failure detection,
// with real sockets on 127.0.0.1.
#include "transport/tcp_transport.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <condition_variable>
#include <future>
#include <mutex>

#include "transport/auth.h"

namespace pdm {
namespace {

struct Recorder : Transport::Handler {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<int, std::vector<uint8_t>>> frames;
  std::vector<int> down;
  void OnFrame(int peer, std::span<const uint8_t> f) override {
    std::lock_guard<std::mutex> lk(mu);
    frames.emplace_back(peer, std::vector<uint8_t>(f.begin(), f.end()));
    cv.notify_all();
  }
  void OnPeerDown(int peer, const Status&) override {
    std::lock_guard<std::mutex> lk(mu);
    down.push_back(peer);
    cv.notify_all();
  }
  template <typename P>
  bool WaitFor(P pred, int ms = 5000) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::milliseconds(ms), pred);
  }
};

TransportOptions Opts(int rank, int size, const JobSecret& s, int fail_ms = 2000) {
  TransportOptions o;
  o.rank = rank;
  o.size = size;
  o.secret = s;
  o.failure_timeout_ms = fail_ms;
  o.connect_timeout_ms = 3000;
  return o;
}

// Starts `n` transports with the same secret; all must connect.
struct Mesh {
  std::vector<std::unique_ptr<Recorder>> h;  // outlive the transports that call them
  std::vector<std::unique_ptr<TcpTransport>> t;
  explicit Mesh(int n, int fail_ms = 2000) {
    JobSecret s = auth::NewJobSecret();
    std::vector<std::string> addrs;
    for (int i = 0; i < n; ++i) {
      t.push_back(std::make_unique<TcpTransport>(Opts(i, n, s, fail_ms)));
      h.push_back(std::make_unique<Recorder>());
      addrs.push_back(*t.back()->Listen());
    }
    std::vector<std::future<Status>> f;
    for (int i = 0; i < n; ++i) f.push_back(std::async(std::launch::async, [&, i] { return t[i]->Start(addrs, h[i].get()); }));
    for (auto& x : f) EXPECT_TRUE(x.get().ok());
  }
};

TEST(TcpTransport, DeliversFramesInOrderBothWays) {
  Mesh m(3);
  for (uint8_t i = 0; i < 200; ++i) ASSERT_TRUE(m.t[2]->Send(0, std::vector<uint8_t>{i, uint8_t(i + 1)}).ok());
  std::vector<uint8_t> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
  ASSERT_TRUE(m.t[0]->Send(1, big).ok());
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return m.h[0]->frames.size() == 200; }));
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(m.h[0]->frames[i].first, 2);
    EXPECT_EQ(m.h[0]->frames[i].second[0], i);
  }
  ASSERT_TRUE(m.h[1]->WaitFor([&] { return m.h[1]->frames.size() == 1; }));
  EXPECT_EQ(m.h[1]->frames[0].second, big);
}

TEST(TcpTransport, EmptyFrameIsDelivered) {
  Mesh m(2);
  ASSERT_TRUE(m.t[1]->Send(0, {}).ok());
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return m.h[0]->frames.size() == 1; }));
  EXPECT_TRUE(m.h[0]->frames[0].second.empty());
}

TEST(TcpTransport, PeerStopIsDetectedAsDown) {
  Mesh m(3);
  m.t[1]->Stop();
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return !m.h[0]->down.empty(); }));
  EXPECT_EQ(m.h[0]->down[0], 1);
  EXPECT_FALSE(m.t[0]->IsAlive(1));
  EXPECT_TRUE(m.t[0]->IsAlive(2));
  EXPECT_EQ(m.t[0]->Send(1, std::vector<uint8_t>{1}).code(), Code::kUnavailable);
}

TEST(TcpTransport, SilentPeerIsDetectedByHeartbeatTimeout) {
  // A peer whose process is stopped (SIGSTOP-like: socket open, no traffic)
  // must be declared failed by the heartbeat timeout, not only by EOF.
  JobSecret s = auth::NewJobSecret();
  Recorder h;
  TcpTransport a(Opts(0, 2, s, 400));
  auto addr = a.Listen();
  ASSERT_TRUE(addr.ok());
  auto started = std::async(std::launch::async, [&] { return a.Start({*addr, ""}, &h); });
  // Rank 1 by hand: handshake, then silence.
  auto colon = addr->rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(addr->substr(colon + 1))));
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  auth::Challenge ch;
  ASSERT_EQ(read(fd, &ch, sizeof(ch)), static_cast<ssize_t>(sizeof(ch)));
  auth::Hello hello = auth::MakeHello(s, ch, 1);
  ASSERT_EQ(write(fd, &hello, sizeof(hello)), static_cast<ssize_t>(sizeof(hello)));
  auth::Welcome w;
  ASSERT_EQ(read(fd, &w, sizeof(w)), static_cast<ssize_t>(sizeof(w)));
  ASSERT_TRUE(started.get().ok());
  const int64_t t0 = MonotonicNs();
  ASSERT_TRUE(h.WaitFor([&] { return !h.down.empty(); }, 3000));
  const int64_t ms = (MonotonicNs() - t0) / 1000000;
  EXPECT_GE(ms, 300);
  EXPECT_LE(ms, 1500);
  close(fd);
}

TEST(TcpTransport, WrongJobSecretIsRefused) {
  JobSecret good = auth::NewJobSecret(), bad = auth::NewJobSecret();
  Recorder ha, hb;  // declared first: they outlive the transports that call them
  TcpTransport a(Opts(0, 2, good));
  TcpTransport b(Opts(1, 2, bad));
  auto aa = a.Listen(), ba = b.Listen();
  ASSERT_TRUE(aa.ok() && ba.ok());
  auto fa = std::async(std::launch::async, [&] { return a.Start({*aa, *ba}, &ha); });
  auto fb = std::async(std::launch::async, [&] { return b.Start({*aa, *ba}, &hb); });
  Status sa = fa.get(), sb = fb.get();
  EXPECT_EQ(sa.code(), Code::kDeadlineExceeded) << sa.ToString();
  EXPECT_FALSE(sb.ok());
  EXPECT_NE(sb.message().find("could not connect/authenticate ranks [0]"), std::string::npos) << sb.ToString();
  EXPECT_TRUE(ha.frames.empty());
}

TEST(TcpTransport, ForgedHelloWithWrongSecretThenRealPeerConnects) {
  JobSecret s = auth::NewJobSecret();
  Recorder ha, hb;
  TcpTransport a(Opts(0, 2, s));
  TcpTransport b(Opts(1, 2, s));
  auto aa = a.Listen(), ba = b.Listen();
  auto fa = std::async(std::launch::async, [&] { return a.Start({*aa, *ba}, &ha); });
  // An impostor claiming rank 1 with the wrong secret: refused and closed.
  {
    auto colon = aa->rfind(':');
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(std::stoi(aa->substr(colon + 1))));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    auth::Challenge ch;
    ASSERT_EQ(read(fd, &ch, sizeof(ch)), static_cast<ssize_t>(sizeof(ch)));
    auth::Hello forged = auth::MakeHello(auth::NewJobSecret(), ch, 1);
    ASSERT_EQ(write(fd, &forged, sizeof(forged)), static_cast<ssize_t>(sizeof(forged)));
    char c;
    EXPECT_EQ(read(fd, &c, 1), 0) << "the impostor must get EOF, not a Welcome";
    close(fd);
  }
  auto fb = std::async(std::launch::async, [&] { return b.Start({*aa, *ba}, &hb); });
  ASSERT_TRUE(fa.get().ok());
  ASSERT_TRUE(fb.get().ok());
  ASSERT_TRUE(b.Send(0, std::vector<uint8_t>{42}).ok());
  ASSERT_TRUE(ha.WaitFor([&] { return ha.frames.size() == 1; }));
  EXPECT_EQ(ha.frames[0].second[0], 42);
}

TEST(TcpTransport, OversizedFrameIsRefusedBySender) {
  JobSecret s = auth::NewJobSecret();
  TransportOptions o = Opts(0, 1, s);
  o.max_frame_bytes = 10;
  TcpTransport t(o);
  EXPECT_EQ(t.Send(0, std::vector<uint8_t>(11)).err(), EMSGSIZE);
}

}  // namespace
}  // namespace pdm
