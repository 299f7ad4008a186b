// Tests for CreditWindow: the single-window rules, then a simulation of two
// windows talking over in-order links, which proves what the verbs transport
// relies on: no send ever lacks a posted receive, and no schedule deadlocks.
#include "rdma/credit_window.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>

namespace pdm {
namespace {

TEST(CreditWindowTest, ValidConfig) {
  EXPECT_TRUE(CreditWindow::ValidConfig(32, 1, 8));
  EXPECT_TRUE(CreditWindow::ValidConfig(4, 1, 2));
  EXPECT_TRUE(CreditWindow::ValidConfig(32, 1, 31));  // threshold == depth - reserve
  EXPECT_FALSE(CreditWindow::ValidConfig(32, 1, 32));  // a blocked sender would never get it
  EXPECT_FALSE(CreditWindow::ValidConfig(32, 0, 8));   // no reserve: mutual exhaustion deadlocks
  EXPECT_FALSE(CreditWindow::ValidConfig(32, 1, 1));   // credit messages would ping-pong
  EXPECT_FALSE(CreditWindow::ValidConfig(32, 32, 2));  // reserve eats the window
  EXPECT_FALSE(CreditWindow::ValidConfig(CreditWindow::kMaxDepth + 1, 1, 8));  // owed overflows 16 bits
  EXPECT_TRUE(CreditWindow::ValidConfig(CreditWindow::kMaxDepth, 1, 8));
}

TEST(CreditWindowDeathTest, InvalidConfigTerminates) {
  EXPECT_DEATH(CreditWindow(32, 0, 8), "");
}

TEST(CreditWindowTest, StartsWithFullWindow) {
  CreditWindow w(32, 1, 8);
  EXPECT_EQ(w.credits(), 32u);
  EXPECT_EQ(w.owed(), 0u);
  EXPECT_EQ(w.unreposted(), 0u);
  EXPECT_TRUE(w.CanSend(MessageClass::kData));
  EXPECT_FALSE(w.CreditMessageDue());
  EXPECT_EQ(w.NextToSend(false), std::nullopt);
}

TEST(CreditWindowTest, DataLeavesTheReserveToCreditMessages) {
  CreditWindow w(8, 2, 3);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(w.CanSend(MessageClass::kData)) << i;
    ASSERT_EQ(w.Spend(MessageClass::kData), std::optional<uint16_t>(0));
  }
  EXPECT_EQ(w.credits(), 2u);
  EXPECT_FALSE(w.CanSend(MessageClass::kData));
  EXPECT_EQ(w.Spend(MessageClass::kData), std::nullopt);
  EXPECT_EQ(w.credits(), 2u) << "a refused Spend must not consume";
  EXPECT_TRUE(w.CanSend(MessageClass::kCredit));
  EXPECT_TRUE(w.Spend(MessageClass::kCredit).has_value());
  EXPECT_TRUE(w.Spend(MessageClass::kCredit).has_value());
  EXPECT_EQ(w.credits(), 0u);
  EXPECT_FALSE(w.CanSend(MessageClass::kCredit));
  EXPECT_EQ(w.Spend(MessageClass::kCredit), std::nullopt);
}

TEST(CreditWindowTest, SpendPiggybacksEverythingOwed) {
  CreditWindow w(32, 1, 8);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(w.OnMessageReceived());
    ASSERT_TRUE(w.OnReceiveReposted());
  }
  EXPECT_EQ(w.owed(), 5u);
  EXPECT_EQ(w.Spend(MessageClass::kData), std::optional<uint16_t>(5));
  EXPECT_EQ(w.owed(), 0u);
  EXPECT_EQ(w.Spend(MessageClass::kData), std::optional<uint16_t>(0));
  EXPECT_EQ(w.credits(), 30u);
}

TEST(CreditWindowTest, OwedCountsOnlyRepostedBuffers) {
  CreditWindow w(32, 1, 8);
  ASSERT_TRUE(w.OnMessageReceived());
  ASSERT_TRUE(w.OnMessageReceived());
  EXPECT_EQ(w.unreposted(), 2u);
  EXPECT_EQ(w.owed(), 0u) << "a buffer still being read is not a credit yet";
  ASSERT_TRUE(w.OnReceiveReposted());
  EXPECT_EQ(w.unreposted(), 1u);
  EXPECT_EQ(w.owed(), 1u);
}

TEST(CreditWindowTest, RepostWithoutReceiveIsRejected) {
  CreditWindow w(32, 1, 8);
  EXPECT_FALSE(w.OnReceiveReposted());
  EXPECT_EQ(w.owed(), 0u);
}

TEST(CreditWindowTest, ReturnedCreditsCannotExceedDepth) {
  CreditWindow w(32, 1, 8);
  EXPECT_FALSE(w.OnCreditsReturned(1)) << "a full window cannot take credits";
  ASSERT_TRUE(w.Spend(MessageClass::kData).has_value());
  ASSERT_TRUE(w.Spend(MessageClass::kData).has_value());
  EXPECT_FALSE(w.OnCreditsReturned(3));
  EXPECT_EQ(w.credits(), 30u) << "a rejected return leaves the window unchanged";
  EXPECT_TRUE(w.OnCreditsReturned(2));
  EXPECT_EQ(w.credits(), 32u);
  EXPECT_TRUE(w.OnCreditsReturned(0));
}

TEST(CreditWindowTest, PeerSendingBeyondItsCreditsIsDetected) {
  CreditWindow w(4, 1, 2);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(w.OnMessageReceived()) << i;
  EXPECT_FALSE(w.OnMessageReceived()) << "fifth message without any credit returned";
  // Reposting alone does not entitle the peer: the credit must be sent back.
  ASSERT_TRUE(w.OnReceiveReposted());
  EXPECT_FALSE(w.OnMessageReceived());
  ASSERT_EQ(w.Spend(MessageClass::kData), std::optional<uint16_t>(1));
  EXPECT_TRUE(w.OnMessageReceived());
  EXPECT_FALSE(w.OnMessageReceived());
}

TEST(CreditWindowTest, CreditMessageDueAtThreshold) {
  CreditWindow w(32, 1, 8);
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(w.OnMessageReceived());
    ASSERT_TRUE(w.OnReceiveReposted());
  }
  EXPECT_FALSE(w.CreditMessageDue());
  EXPECT_EQ(w.NextToSend(false), std::nullopt);
  ASSERT_TRUE(w.OnMessageReceived());
  ASSERT_TRUE(w.OnReceiveReposted());
  EXPECT_TRUE(w.CreditMessageDue());
  EXPECT_EQ(w.NextToSend(false), MessageClass::kCredit);
  EXPECT_EQ(w.NextToSend(true), MessageClass::kData) << "data carries the credits anyway";
  EXPECT_EQ(w.Spend(MessageClass::kCredit), std::optional<uint16_t>(8));
  EXPECT_FALSE(w.CreditMessageDue());
}

TEST(CreditWindowTest, NoCreditMessageWithoutAnyCredit) {
  CreditWindow w(4, 1, 2);
  ASSERT_TRUE(w.Spend(MessageClass::kData).has_value());
  ASSERT_TRUE(w.Spend(MessageClass::kData).has_value());
  ASSERT_TRUE(w.Spend(MessageClass::kData).has_value());
  ASSERT_TRUE(w.Spend(MessageClass::kCredit).has_value());
  ASSERT_EQ(w.credits(), 0u);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(w.OnMessageReceived());
    ASSERT_TRUE(w.OnReceiveReposted());
  }
  EXPECT_FALSE(w.CreditMessageDue());
  EXPECT_EQ(w.NextToSend(true), std::nullopt);
}

// One-way stream, step by step: the sender stops at the reserve, the idle
// receiver returns everything in one credit message, the sender resumes.
TEST(CreditWindowTest, OneWayStreamUnblocksThroughCreditMessage) {
  CreditWindow sender(32, 1, 8);
  CreditWindow receiver(32, 1, 8);
  int sent = 0;
  while (sender.NextToSend(true) == MessageClass::kData) {
    ASSERT_EQ(sender.Spend(MessageClass::kData), std::optional<uint16_t>(0));
    ++sent;
  }
  EXPECT_EQ(sent, 31);
  EXPECT_EQ(sender.credits(), 1u);
  for (int i = 0; i < sent; ++i) {
    ASSERT_TRUE(receiver.OnMessageReceived());
    ASSERT_TRUE(receiver.OnCreditsReturned(0));
    ASSERT_TRUE(receiver.OnReceiveReposted());
  }
  EXPECT_EQ(receiver.owed(), 31u);
  ASSERT_EQ(receiver.NextToSend(false), MessageClass::kCredit);
  std::optional<uint16_t> returned = receiver.Spend(MessageClass::kCredit);
  ASSERT_EQ(returned, std::optional<uint16_t>(31));
  ASSERT_TRUE(sender.OnMessageReceived());
  ASSERT_TRUE(sender.OnCreditsReturned(*returned));
  EXPECT_EQ(sender.credits(), 32u);
  ASSERT_TRUE(sender.OnReceiveReposted());
  // The one credit owed for the credit message is below the threshold: no
  // credit message answers a credit message.
  EXPECT_EQ(sender.owed(), 1u);
  EXPECT_EQ(sender.NextToSend(false), std::nullopt);
  EXPECT_EQ(sender.NextToSend(true), MessageClass::kData);
  EXPECT_EQ(sender.Spend(MessageClass::kData), std::optional<uint16_t>(1));
}

// ---------------------------------------------------------------------------
// Two sides, two in-order links, every interleaving chosen at random.

struct Msg {
  MessageClass cls;
  bool data;  // carries application data (as opposed to a heartbeat)
  uint16_t credits;
};

struct Side {
  Side(uint32_t depth, uint32_t reserve, uint32_t threshold) : w(depth, reserve, threshold), posted(depth) {}
  CreditWindow w;
  int to_send = 0;          // application messages still to send
  int heartbeats = 0;       // heartbeats it may still send (bounded, so runs end)
  uint32_t posted;          // receive buffers posted
  int received = 0;         // application messages received
  int credit_messages = 0;  // explicit credit messages sent
};

struct SimConfig {
  uint32_t depth, reserve, threshold;
  int a_sends, b_sends, heartbeats;
};

std::string Describe(const SimConfig& c, unsigned seed) {
  return "depth " + std::to_string(c.depth) + " reserve " + std::to_string(c.reserve) + " threshold " +
         std::to_string(c.threshold) + " sends " + std::to_string(c.a_sends) + "/" + std::to_string(c.b_sends) +
         " seed " + std::to_string(seed);
}

// Runs until nothing is enabled. Fails on an RNR (a message arriving with no
// posted receive), a rejected credit operation, a broken conservation law,
// livelock (too many steps), or deadlock (data left once nothing is enabled).
void Simulate(const SimConfig& cfg, unsigned seed) {
  SCOPED_TRACE(Describe(cfg, seed));
  Side side[2] = {Side(cfg.depth, cfg.reserve, cfg.threshold), Side(cfg.depth, cfg.reserve, cfg.threshold)};
  side[0].to_send = cfg.a_sends;
  side[1].to_send = cfg.b_sends;
  side[0].heartbeats = side[1].heartbeats = cfg.heartbeats;
  std::deque<Msg> link[2];  // link[i]: from side i to side 1 - i
  std::mt19937 rng(seed);

  // Action ids: 0/1 send from side i, 2/3 deliver on link i, 4/5 repost at
  // side i, 6/7 heartbeat from side i.
  auto enabled = [&](int action) {
    int i = action % 2;
    switch (action / 2) {
      case 0: return side[i].w.NextToSend(side[i].to_send > 0).has_value();
      case 1: return !link[i].empty();
      case 2: return side[i].w.unreposted() > 0;
      default: return side[i].heartbeats > 0 && side[i].w.CanSend(MessageClass::kData);
    }
  };

  const long max_steps = 200L * (cfg.a_sends + cfg.b_sends + cfg.heartbeats + 100);
  long steps = 0;
  for (;; ++steps) {
    ASSERT_LT(steps, max_steps) << "livelock: messages keep flowing with nothing to deliver";
    int candidates[8];
    int n = 0;
    for (int a = 0; a < 8; ++a) {
      if (enabled(a)) candidates[n++] = a;
    }
    if (n == 0) break;
    const int action = candidates[std::uniform_int_distribution<int>(0, n - 1)(rng)];
    const int i = action % 2;
    Side& me = side[i];
    Side& other = side[1 - i];
    switch (action / 2) {
      case 0: {
        const MessageClass cls = *me.w.NextToSend(me.to_send > 0);
        std::optional<uint16_t> credits = me.w.Spend(cls);
        ASSERT_TRUE(credits.has_value());
        const bool data = cls == MessageClass::kData;
        if (data) --me.to_send;
        if (!data) ++me.credit_messages;
        link[i].push_back(Msg{cls, data, *credits});
        break;
      }
      case 1: {
        const Msg m = link[i].front();
        link[i].pop_front();
        ASSERT_GT(other.posted, 0u) << "RNR: a message arrived with no receive posted";
        --other.posted;
        ASSERT_TRUE(other.w.OnMessageReceived()) << "message beyond the peer's credits";
        ASSERT_TRUE(other.w.OnCreditsReturned(m.credits)) << "credits beyond depth";
        if (m.data) ++other.received;
        break;
      }
      case 2:
        ++me.posted;
        ASSERT_TRUE(me.w.OnReceiveReposted());
        break;
      default: {
        std::optional<uint16_t> credits = me.w.Spend(MessageClass::kData);
        ASSERT_TRUE(credits.has_value());
        --me.heartbeats;
        link[i].push_back(Msg{MessageClass::kData, false, *credits});
        break;
      }
    }
    // Conservation, per direction: every receive buffer of the receiver is
    // accounted for exactly once as a sender credit, a message in flight, a
    // buffer not yet reposted, a credit owed back, or a credit on its way
    // back in a message on the reverse link.
    for (int s = 0; s < 2; ++s) {
      const Side& snd = side[s];
      const Side& rcv = side[1 - s];
      uint32_t returning = 0;
      for (const Msg& m : link[1 - s]) returning += m.credits;
      ASSERT_EQ(snd.w.credits() + link[s].size() + rcv.w.unreposted() + rcv.w.owed() + returning, cfg.depth);
      ASSERT_EQ(rcv.posted + rcv.w.unreposted(), cfg.depth);
    }
  }
  EXPECT_EQ(side[0].to_send, 0) << "deadlock: side A still has data and nothing can move";
  EXPECT_EQ(side[1].to_send, 0) << "deadlock: side B still has data and nothing can move";
  EXPECT_EQ(side[1].received, cfg.a_sends);
  EXPECT_EQ(side[0].received, cfg.b_sends);
  // Every credit message returns at least `threshold` credits, and the peer
  // consumes at most one credit per message it sends, so credit messages
  // cannot outnumber (peer's messages) / threshold + 1.
  for (int s = 0; s < 2; ++s) {
    const SimConfig& c = cfg;
    const int peer_msgs = (s == 0 ? c.b_sends : c.a_sends) + (c.heartbeats - side[1 - s].heartbeats) +
                          side[1 - s].credit_messages;
    EXPECT_LE(side[s].credit_messages, peer_msgs / static_cast<int>(c.threshold) + 1);
  }
}

TEST(CreditWindowSimulationTest, NeverRnrNeverDeadlocks) {
  const SimConfig configs[] = {
      {32, 1, 8, 2000, 0, 0},     // one-way stream, the transport's setting
      {32, 1, 8, 1500, 1500, 0},  // both ways flooding
      {32, 1, 8, 3, 2, 50},       // mostly heartbeats
      {4, 1, 2, 500, 500, 10},    // smallest window
      {4, 1, 3, 300, 50, 5},      // threshold at its bound, depth - reserve
      {8, 3, 2, 400, 400, 0},     // large reserve
      {16, 1, 15, 400, 400, 20},  // threshold at its bound
  };
  for (const SimConfig& cfg : configs) {
    for (unsigned seed = 0; seed < 60; ++seed) {
      Simulate(cfg, seed);
      if (HasFatalFailure() || HasNonfatalFailure()) return;
    }
  }
}

// Why the reserve exists: if data could take the last credit, two flooding
// sides would each end up owing the other a full window with no credit left
// to say so. The first half plays that out (spending credit-class messages,
// which may take the last credit, as if they were data); the second shows
// that with the reserve respected a credit message can still go.
TEST(CreditWindowTest, ReserveKeepsTheLastCreditForCreditMessages) {
  CreditWindow a(4, 1, 2);
  CreditWindow b(4, 1, 2);
  for (int k = 0; k < 4; ++k) {
    ASSERT_TRUE(a.Spend(MessageClass::kCredit).has_value());
    ASSERT_TRUE(b.Spend(MessageClass::kCredit).has_value());
  }
  for (int k = 0; k < 4; ++k) {
    ASSERT_TRUE(a.OnMessageReceived());
    ASSERT_TRUE(a.OnReceiveReposted());
    ASSERT_TRUE(b.OnMessageReceived());
    ASSERT_TRUE(b.OnReceiveReposted());
  }
  EXPECT_EQ(a.owed(), 4u);
  EXPECT_EQ(b.owed(), 4u);
  EXPECT_EQ(a.NextToSend(true), std::nullopt);
  EXPECT_EQ(b.NextToSend(true), std::nullopt);
  // With the reserve respected, the same flood leaves each side one credit,
  // enough for the credit message that unjams the other.
  CreditWindow c(4, 1, 2);
  while (c.NextToSend(true) == MessageClass::kData) ASSERT_TRUE(c.Spend(MessageClass::kData).has_value());
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE(c.OnMessageReceived());
    ASSERT_TRUE(c.OnReceiveReposted());
  }
  EXPECT_EQ(c.credits(), 1u);
  EXPECT_EQ(c.NextToSend(true), MessageClass::kCredit);
}

}  // namespace
}  // namespace pdm
