// VerbsTransport: framing, fragmentation, credits, authentication and failure
// detection over real RC queue pairs, with every rank in this one process.
//
// The device tests need an RDMA device (a real HCA, or soft-RoCE/rxe on an
// Ethernet interface) and skip themselves, with the reason, when
// ibv_get_device_list() lists none. They listen on 127.0.0.1 unless
// PDM_VERBS_TEST_HOST names another local address (e.g. the IPoIB one, where
// the device's loopback does not take 127.0.0.1). The remaining tests run on
// any machine.
#include "rdma/verbs_transport.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "transport/auth.h"

namespace pdm {
namespace {

using std::chrono::milliseconds;

struct Recorder : Transport::Handler {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<int, std::vector<uint8_t>>> frames;
  std::vector<std::pair<int, Status>> down;
  // Runs on the progress thread after a frame is recorded.
  std::function<void(int, std::span<const uint8_t>)> on_frame;  // GUARDED_BY(mu)

  void SetOnFrame(std::function<void(int, std::span<const uint8_t>)> fn) {
    std::lock_guard lock(mu);
    on_frame = std::move(fn);
  }
  void OnFrame(int peer, std::span<const uint8_t> f) override {
    std::function<void(int, std::span<const uint8_t>)> hook;
    {
      std::lock_guard lock(mu);
      frames.emplace_back(peer, std::vector<uint8_t>(f.begin(), f.end()));
      hook = on_frame;
    }
    cv.notify_all();
    if (hook) hook(peer, f);
  }
  void OnPeerDown(int peer, const Status& why) override {
    {
      std::lock_guard lock(mu);
      down.emplace_back(peer, why);
    }
    cv.notify_all();
  }
  template <typename Pred>
  bool WaitFor(Pred pred, int ms = 10000) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, milliseconds(ms), pred);
  }
  size_t FrameCount() {
    std::lock_guard lock(mu);
    return frames.size();
  }
};

std::string TestHost() {
  const char* host = std::getenv("PDM_VERBS_TEST_HOST");
  return host != nullptr && *host != '\0' ? host : "127.0.0.1";
}

TransportOptions Opts(int rank, int size, const JobSecret& secret) {
  TransportOptions o;
  o.rank = rank;
  o.size = size;
  o.secret = secret;
  o.bind_host = TestHost();
  o.failure_timeout_ms = 2000;
  o.connect_timeout_ms = 5000;
  return o;
}

// Ranks 0..n-1 in this process; Start() runs on all of them at once, since
// each blocks until its part of the mesh is complete.
struct Mesh {
  // Handlers first: the transports, destroyed before them, may call them
  // until they are gone (a peer's teardown reports OnPeerDown).
  std::vector<std::unique_ptr<Recorder>> h;
  std::vector<std::unique_ptr<VerbsTransport>> t;
  std::vector<Status> start;

  explicit Mesh(std::vector<TransportOptions> opts) {
    std::vector<std::string> addrs;
    for (const TransportOptions& o : opts) {
      t.push_back(std::make_unique<VerbsTransport>(o));
      h.push_back(std::make_unique<Recorder>());
      Result<std::string> addr = t.back()->Listen();
      EXPECT_TRUE(addr.ok()) << addr.status().ToString();
      addrs.push_back(addr.ok() ? *addr : "unlistened:1");
    }
    std::vector<std::future<Status>> f;
    for (size_t i = 0; i < t.size(); ++i) {
      f.push_back(std::async(std::launch::async, [&, i] { return t[i]->Start(addrs, h[i].get()); }));
    }
    for (auto& x : f) start.push_back(x.get());
  }
  bool AllStarted() const {
    for (const Status& s : start) {
      if (!s.ok()) return false;
    }
    return true;
  }
  std::string StartErrors() const {
    std::string out;
    for (size_t i = 0; i < start.size(); ++i) out += "rank " + std::to_string(i) + ": " + start[i].ToString() + "\n";
    return out;
  }
};

Mesh SameSecretMesh(int n) {
  JobSecret s = auth::NewJobSecret();
  std::vector<TransportOptions> opts;
  for (int i = 0; i < n; ++i) opts.push_back(Opts(i, n, s));
  return Mesh(std::move(opts));
}

// Deterministic, size- and seed-dependent content, so a misplaced or
// dropped fragment shows up as a mismatch.
std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + static_cast<uint32_t>(n);
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    v[i] = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

std::vector<uint8_t> Seq(uint32_t tag, uint32_t seq, size_t pad) {
  std::vector<uint8_t> v(8 + pad, 0xab);
  std::memcpy(v.data(), &tag, 4);
  std::memcpy(v.data() + 4, &seq, 4);
  return v;
}
uint32_t TagOf(const std::vector<uint8_t>& v) {
  uint32_t x;
  std::memcpy(&x, v.data(), 4);
  return x;
}
uint32_t SeqOf(const std::vector<uint8_t>& v) {
  uint32_t x;
  std::memcpy(&x, v.data() + 4, 4);
  return x;
}

// ---------------------------------------------------------------------------
// Without a device.

TEST(VerbsTransportTest, ListenWithoutDeviceFailsWithEnodev) {
  if (VerbsDeviceAvailable()) GTEST_SKIP() << "an RDMA device is present; this test is for machines without one";
  VerbsTransport t(Opts(0, 2, auth::NewJobSecret()));  // constructing must not fail
  EXPECT_EQ(t.name(), "verbs");
  Result<std::string> r = t.Listen();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(r.status().err(), ENODEV);
  EXPECT_EQ(r.status().message(), "no RDMA device: ibv_get_device_list found none");
  Recorder h;
  Status st = t.Start({"127.0.0.1:1", "127.0.0.1:2"}, &h);
  EXPECT_EQ(st.code(), Code::kFailedPrecondition) << st.ToString();
  t.Stop();
  t.Stop();
}

TEST(VerbsTransportTest, ArgumentChecksNeedNoConnection) {
  TransportOptions o = Opts(0, 3, auth::NewJobSecret());
  o.max_frame_bytes = 16;
  VerbsTransport t(o);
  EXPECT_EQ(t.Send(0, std::vector<uint8_t>{1}).code(), Code::kInvalidArgument) << "send to self";
  EXPECT_EQ(t.Send(3, std::vector<uint8_t>{1}).code(), Code::kInvalidArgument) << "rank out of range";
  EXPECT_EQ(t.Send(-1, std::vector<uint8_t>{1}).code(), Code::kInvalidArgument);
  Status big = t.Send(1, std::vector<uint8_t>(17));
  EXPECT_EQ(big.code(), Code::kInvalidArgument);
  EXPECT_EQ(big.err(), EMSGSIZE);
  Status early = t.Send(1, std::vector<uint8_t>(16));
  EXPECT_EQ(early.code(), Code::kUnavailable) << early.ToString();
  EXPECT_TRUE(t.IsAlive(0));
  EXPECT_FALSE(t.IsAlive(1));
  EXPECT_FALSE(t.IsAlive(7));
  Recorder h;
  EXPECT_EQ(t.Start({"a:1", "b:2", "c:3"}, &h).code(), Code::kFailedPrecondition) << "Start before Listen";
  t.Stop();
}

// ---------------------------------------------------------------------------
// With a device.

TEST(VerbsTransportTest, ExchangesSmallFramesBothWays) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(2);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  EXPECT_TRUE(m.t[0]->IsAlive(1));
  EXPECT_TRUE(m.t[1]->IsAlive(0));
  ASSERT_TRUE(m.t[0]->Send(1, std::vector<uint8_t>{1, 2, 3}).ok());
  ASSERT_TRUE(m.t[1]->Send(0, std::vector<uint8_t>{9}).ok());
  ASSERT_TRUE(m.t[1]->Send(0, std::vector<uint8_t>{}).ok());  // empty frames are frames too
  ASSERT_TRUE(m.h[1]->WaitFor([&] { return m.h[1]->frames.size() == 1; }));
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return m.h[0]->frames.size() == 2; }));
  EXPECT_EQ(m.h[1]->frames[0].first, 0);
  EXPECT_EQ(m.h[1]->frames[0].second, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(m.h[0]->frames[0].first, 1);
  EXPECT_EQ(m.h[0]->frames[0].second, (std::vector<uint8_t>{9}));
  EXPECT_TRUE(m.h[0]->frames[1].second.empty());
  EXPECT_TRUE(m.h[0]->down.empty());
  EXPECT_TRUE(m.h[1]->down.empty());
}

TEST(VerbsTransportTest, FragmentsAndReassemblesLargeFrames) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(2);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  // Around the 64 KiB - 8 payload of one message, two of them, and well past
  // the 32-slot window so that a frame waits for credits midway.
  const size_t kPayload = 64 * 1024 - 8;
  const std::vector<size_t> sizes = {kPayload - 1, kPayload,        kPayload + 1, 2 * kPayload,
                                     2 * kPayload + 1, (1u << 20) + 17, 8u << 20,     3};
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(m.t[1]->Send(0, Pattern(sizes[i], static_cast<uint32_t>(i))).ok()) << sizes[i];
  }
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return m.h[0]->frames.size() == sizes.size(); }, 30000))
      << m.h[0]->FrameCount() << " of " << sizes.size();
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_EQ(m.h[0]->frames[i].second.size(), sizes[i]) << "frame " << i;
    EXPECT_TRUE(m.h[0]->frames[i].second == Pattern(sizes[i], static_cast<uint32_t>(i))) << "frame " << i;
  }
}

TEST(VerbsTransportTest, ManyFramesInARowExerciseCredits) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(2);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  // Both directions at once, far more frames than receive buffers, from
  // several threads: each thread's frames must arrive in its order.
  constexpr uint32_t kThreads = 4;
  constexpr uint32_t kPerThread = 3000;
  std::vector<std::thread> senders;
  std::atomic<int> send_failures{0};
  for (int from = 0; from < 2; ++from) {
    for (uint32_t tag = 0; tag < kThreads; ++tag) {
      senders.emplace_back([&, from, tag] {
        for (uint32_t seq = 0; seq < kPerThread; ++seq) {
          if (!m.t[from]->Send(1 - from, Seq(tag, seq, seq % 700)).ok()) ++send_failures;
        }
      });
    }
  }
  for (auto& s : senders) s.join();
  EXPECT_EQ(send_failures.load(), 0);
  for (int to = 0; to < 2; ++to) {
    ASSERT_TRUE(m.h[to]->WaitFor([&] { return m.h[to]->frames.size() == kThreads * kPerThread; }, 60000))
        << "rank " << to << " got " << m.h[to]->FrameCount();
    std::vector<uint32_t> next(kThreads, 0);
    for (const auto& [peer, f] : m.h[to]->frames) {
      ASSERT_EQ(peer, 1 - to);
      ASSERT_EQ(f.size(), 8 + SeqOf(f) % 700);
      ASSERT_LT(TagOf(f), kThreads);
      ASSERT_EQ(SeqOf(f), next[TagOf(f)]++) << "out of order from thread " << TagOf(f);
    }
  }
  EXPECT_TRUE(m.h[0]->down.empty());
  EXPECT_TRUE(m.h[1]->down.empty());
}

TEST(VerbsTransportTest, SendFromInsideHandlerEchoes) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(2);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  std::atomic<int> echo_failures{0};
  m.h[1]->SetOnFrame([&](int peer, std::span<const uint8_t> f) {
    if (!m.t[1]->Send(peer, f).ok()) ++echo_failures;
  });
  constexpr uint32_t kFrames = 5000;
  for (uint32_t seq = 0; seq < kFrames; ++seq) ASSERT_TRUE(m.t[0]->Send(1, Seq(0, seq, 100)).ok());
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return m.h[0]->frames.size() == kFrames; }, 60000)) << m.h[0]->FrameCount();
  EXPECT_EQ(echo_failures.load(), 0);
  for (uint32_t seq = 0; seq < kFrames; ++seq) ASSERT_EQ(SeqOf(m.h[0]->frames[seq].second), seq);
}

TEST(VerbsTransportTest, ThreeRankFullMesh) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(3);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  for (int from = 0; from < 3; ++from) {
    for (int to = 0; to < 3; ++to) {
      if (from == to) continue;
      ASSERT_TRUE(m.t[from]->Send(to, Seq(static_cast<uint32_t>(from), 0, 10)).ok());
    }
  }
  for (int to = 0; to < 3; ++to) {
    ASSERT_TRUE(m.h[to]->WaitFor([&] { return m.h[to]->frames.size() == 2; }));
    for (const auto& [peer, f] : m.h[to]->frames) EXPECT_EQ(TagOf(f), static_cast<uint32_t>(peer));
  }
}

TEST(VerbsTransportTest, WrongSecretIsRefused) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  std::vector<TransportOptions> opts = {Opts(0, 2, auth::NewJobSecret()), Opts(1, 2, auth::NewJobSecret())};
  for (auto& o : opts) o.connect_timeout_ms = 1500;
  Mesh m(std::move(opts));
  // Rank 1 connects; rank 0 cannot verify its Hello and closes, which rank 1
  // takes as a refusal. Rank 0 keeps waiting for a real rank 1 until the
  // deadline.
  EXPECT_EQ(m.start[1].code(), Code::kPermissionDenied) << m.start[1].ToString();
  EXPECT_EQ(m.start[0].code(), Code::kDeadlineExceeded) << m.start[0].ToString();
  EXPECT_NE(m.start[0].message().find("peer 1"), std::string::npos) << m.start[0].message();
  EXPECT_FALSE(m.t[0]->IsAlive(1));
  EXPECT_FALSE(m.t[1]->IsAlive(0));
  EXPECT_TRUE(m.h[0]->frames.empty());
  EXPECT_TRUE(m.h[0]->down.empty()) << "a peer that never joined is not reported down";
}

TEST(VerbsTransportTest, DestroyedPeerIsReportedDownOnce) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(2);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  m.t[1].reset();  // disconnects
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return !m.h[0]->down.empty(); }, 5000));
  EXPECT_EQ(m.h[0]->down[0].first, 1);
  EXPECT_EQ(m.h[0]->down[0].second.code(), Code::kUnavailable) << m.h[0]->down[0].second.ToString();
  EXPECT_FALSE(m.t[0]->IsAlive(1));
  EXPECT_EQ(m.t[0]->Send(1, std::vector<uint8_t>{1}).code(), Code::kUnavailable);
  // Heartbeat timeouts and late CM events must not report it again.
  std::this_thread::sleep_for(milliseconds(2500));
  std::lock_guard lock(m.h[0]->mu);
  EXPECT_EQ(m.h[0]->down.size(), 1u);
}

TEST(VerbsTransportTest, SilentPeerTimesOut) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  Mesh m = SameSecretMesh(2);
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  // Stop() from inside a handler only ends rank 1's progress thread: its QP
  // stays connected but it sends nothing, heartbeats included.
  m.h[1]->SetOnFrame([&](int, std::span<const uint8_t>) { m.t[1]->Stop(); });
  ASSERT_TRUE(m.t[0]->Send(1, std::vector<uint8_t>{42}).ok());
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return !m.h[0]->down.empty(); }, 6000));
  EXPECT_EQ(m.h[0]->down[0].first, 1);
  EXPECT_EQ(m.h[0]->down[0].second.err(), ETIMEDOUT) << m.h[0]->down[0].second.ToString();
  EXPECT_FALSE(m.t[0]->IsAlive(1));
}

TEST(VerbsTransportTest, OversizedFrameFromPeerDropsIt) {
  if (!pdm::VerbsDeviceAvailable()) GTEST_SKIP() << "no RDMA device (ibv_get_device_list lists none); verbs tests need one";
  JobSecret s = auth::NewJobSecret();
  std::vector<TransportOptions> opts = {Opts(0, 2, s), Opts(1, 2, s)};
  opts[1].max_frame_bytes = 100 * 1024;  // rank 1 may send what rank 0 refuses
  opts[0].max_frame_bytes = 64 * 1024;
  Mesh m(std::move(opts));
  ASSERT_TRUE(m.AllStarted()) << m.StartErrors();
  ASSERT_TRUE(m.t[1]->Send(0, Pattern(100 * 1024, 1)).ok());
  ASSERT_TRUE(m.h[0]->WaitFor([&] { return !m.h[0]->down.empty(); }));
  EXPECT_EQ(m.h[0]->down[0].first, 1);
  EXPECT_EQ(m.h[0]->down[0].second.err(), EPROTO) << m.h[0]->down[0].second.ToString();
  EXPECT_TRUE(m.h[0]->frames.empty());
  // Rank 0 disconnected, so rank 1 learns too.
  ASSERT_TRUE(m.h[1]->WaitFor([&] { return !m.h[1]->down.empty(); }));
  EXPECT_EQ(m.h[1]->down[0].first, 0);
}

}  // namespace
}  // namespace pdm
