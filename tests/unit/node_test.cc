// Node logic over real TcpTransports inside one process: SM requests,
// replication, dispositions, routing, and SM / session-node failover where a
// "failure" is a transport stopped under the node (the MPI tests kill real
// processes; these keep the logic fast to iterate on).
#include "cluster/node.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "transport/auth.h"
#include "transport/tcp_transport.h"

namespace pdm {
namespace {

struct InProcessCluster {
  std::vector<std::unique_ptr<TcpTransport>> t;
  std::vector<std::unique_ptr<Node>> n;
  explicit InProcessCluster(int size, int session_failure_ms = 2000) {
    JobSecret s = auth::NewJobSecret();
    std::vector<std::string> addrs;
    NodeOptions base;
    base.size = size;
    base.session_failure_timeout_ms = session_failure_ms;
    for (int i = 0; i < size; ++i) base.nodes.push_back(NodeStatic{i, 0, "", ""});
    for (int i = 0; i < size; ++i) {
      TransportOptions o;
      o.rank = i;
      o.size = size;
      o.secret = s;
      o.failure_timeout_ms = 1000;
      t.push_back(std::make_unique<TcpTransport>(o));
      addrs.push_back(*t.back()->Listen());
      NodeOptions no = base;
      no.rank = i;
      n.push_back(std::make_unique<Node>(no, t.back().get()));
    }
    std::vector<std::future<Status>> f;
    for (int i = 0; i < size; ++i)
      f.push_back(std::async(std::launch::async, [&, i] { return t[i]->Start(addrs, n[i].get()); }));
    for (auto& x : f) EXPECT_TRUE(x.get().ok());
    for (auto& x : n) x->Start();
  }
  // Simulated node death: its node stops answering, its connections close.
  void Kill(int r) {
    n[r]->Stop();
    t[r]->Stop();
  }
  ~InProcessCluster() {
    for (auto& x : n) x->Stop();
    for (auto& x : t) x->Stop();
  }
};

template <typename P>
bool Eventually(P pred, int ms = 5000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

TEST(Node, SessionCreatedAnywhereIsVisibleEverywhereOnReturn) {
  InProcessCluster c(4);
  std::vector<uint64_t> sids;
  for (int r = 0; r < 4; ++r) {
    auto sid = c.n[r]->CreateSession(0, "app on " + std::to_string(r));
    ASSERT_TRUE(sid.ok()) << sid.status().ToString();
    sids.push_back(*sid);
    for (int q = 0; q < 4; ++q) {  // visible on every node the moment create returns
      auto s = c.n[q]->QuerySession(*sid);
      ASSERT_TRUE(s.ok());
      EXPECT_EQ(s->rec.owner, r);
      EXPECT_EQ(s->rec.info, "app on " + std::to_string(r));
    }
  }
  std::set<uint64_t> uniq(sids.begin(), sids.end());
  EXPECT_EQ(uniq.size(), 4u);
  ASSERT_TRUE(c.n[2]->ModifySession(sids[2], "renamed").ok());
  for (int q = 0; q < 4; ++q) EXPECT_EQ(c.n[q]->QuerySession(sids[2])->rec.info, "renamed");
  EXPECT_EQ(c.n[1]->ModifySession(sids[2], "x").err(), EINVAL);  // not its session node
  ASSERT_TRUE(c.n[3]->DestroySession(sids[3]).ok());
  for (int q = 0; q < 4; ++q) {
    EXPECT_EQ(c.n[q]->QuerySession(sids[3]).status().err(), EINVAL);
    EXPECT_EQ(c.n[q]->AllSessions().size(), 3u);
  }
  EXPECT_EQ(c.n[0]->CreateSession(0, std::string(256, 'x')).status().err(), E2BIG);
}

TEST(Node, DispositionConflictGetsEBUSYFromAnyNode) {
  InProcessCluster c(3);
  uint64_t a = *c.n[1]->CreateSession(0, "a");
  uint64_t b = *c.n[2]->CreateSession(0, "b");
  ASSERT_TRUE(c.n[0]->SetDisp(a, 7, 1u << 16).ok());  // set from a node that is not the session's
  EXPECT_EQ(c.n[2]->SetDisp(b, 7, 1u << 16).err(), EBUSY);
  EXPECT_TRUE(c.n[2]->SetDisp(b, 7, 1u << 17).ok());
  for (int q = 0; q < 3; ++q) {
    auto d = c.n[q]->GetAllDisp(a);
    ASSERT_TRUE(d.ok());
    ASSERT_EQ(d->size(), 1u);
    EXPECT_EQ((*d)[0].second, 1u << 16);
  }
  EXPECT_EQ(c.n[0]->SetDisp(12345, 7, 1).err(), EINVAL);
}

TEST(Node, SyncEventRaisedOnOneNodeIsAnsweredBySessionOnAnother) {
  InProcessCluster c(3);
  uint64_t sid = *c.n[1]->CreateSession(0, "hsm");
  ASSERT_TRUE(c.n[1]->SetDisp(sid, 7, 1u << 16).ok());
  auto raised = std::async(std::launch::async, [&] {
    RaiseSpec s;
    s.fsid = 7;
    s.type = 16;
    s.sync = true;
    s.payload = {9, 8, 7};
    return c.n[2]->Raise(s);
  });
  auto evs = c.n[1]->GetEvents(sid, 0, true, 5000);
  ASSERT_TRUE(evs.ok()) << evs.status().ToString();
  ASSERT_EQ(evs->size(), 1u);
  const QueuedEvent& ev = (*evs)[0];
  EXPECT_EQ(ev.raiser, 2);
  EXPECT_EQ(ev.type, 16u);
  EXPECT_EQ(ev.payload, (std::vector<uint8_t>{9, 8, 7}));
  EXPECT_NE(ev.token, 0u);
  EXPECT_EQ(c.n[1]->Respond(sid, ev.token + 1, kRespContinue, 0).err(), ESRCH);
  EXPECT_EQ(c.n[1]->Respond(sid, ev.token, kRespAbort, 0).err(), EINVAL);
  EXPECT_EQ(c.n[1]->Respond(sid, ev.token, kRespDontCare, 0).err(), EINVAL);
  EXPECT_EQ(c.n[1]->DestroySession(sid).err(), EBUSY);  // a token is outstanding
  ASSERT_TRUE(c.n[1]->Respond(sid, ev.token, kRespAbort, EAGAIN).ok());
  auto out = raised.get();
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->delivered);
  EXPECT_EQ(out->response, kRespAbort);
  EXPECT_EQ(out->err, EAGAIN);
  EXPECT_EQ(c.n[1]->Respond(sid, ev.token, kRespContinue, 0).err(), ESRCH);  // answered already
  EXPECT_EQ(c.n[1]->GetEvents(sid, 0, false, 0).status().err(), EAGAIN);
  EXPECT_EQ(c.n[0]->GetEvents(sid, 0, false, 0).status().err(), EINVAL);  // not the session node
}

TEST(Node, EventWithoutDispositionIsNotGenerated) {
  InProcessCluster c(2);
  RaiseSpec s;
  s.fsid = 1;
  s.type = 17;
  s.sync = true;
  auto out = c.n[0]->Raise(s);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->delivered);
}

TEST(Node, SmFailoverKeepsSessionsAndNeverReusesIds) {
  InProcessCluster c(4);
  std::set<uint64_t> ids;
  for (int r = 1; r < 4; ++r) ids.insert(*c.n[r]->CreateSession(0, "s" + std::to_string(r)));
  uint64_t held = *c.n[2]->CreateSession(0, "disp");
  ids.insert(held);
  ASSERT_TRUE(c.n[2]->SetDisp(held, 5, 1u << 22).ok());
  c.Kill(0);
  ASSERT_TRUE(Eventually([&] { return c.n[3]->Cluster().session_manager == 1; }));
  for (int r = 1; r < 4; ++r) {
    auto v = c.n[r]->AllSessions();
    EXPECT_EQ(v.size(), 4u) << "node " << r;
    EXPECT_EQ(c.n[r]->GetAllDisp(held)->size(), 1u);
  }
  for (int r = 1; r < 4; ++r) {
    auto sid = c.n[r]->CreateSession(0, "after");
    ASSERT_TRUE(sid.ok()) << sid.status().ToString();
    EXPECT_TRUE(ids.insert(*sid).second) << "id reused: " << *sid;
  }
  EXPECT_EQ(c.n[3]->SetDisp(*c.n[3]->CreateSession(0, "x"), 5, 1u << 22).err(), EBUSY);
}

TEST(Node, SessionNodeDeathRequeuesPendingEventsToTheAssumingNode) {
  InProcessCluster c(4, 10000);
  uint64_t sid = *c.n[1]->CreateSession(0, "hsm");
  ASSERT_TRUE(c.n[1]->SetDisp(sid, 7, 1u << 16).ok());
  auto raise = [&](int r) {
    return std::async(std::launch::async, [&, r] {
      RaiseSpec s;
      s.fsid = 7;
      s.type = 16;
      s.sync = true;
      s.payload = {uint8_t(r)};
      return c.n[r]->Raise(s);
    });
  };
  auto r2 = raise(2), r3 = raise(3);
  std::vector<QueuedEvent> first;
  while (first.size() < 2) {
    auto e = c.n[1]->GetEvents(sid, 0, true, 5000);
    ASSERT_TRUE(e.ok());
    first.insert(first.end(), e->begin(), e->end());
  }
  c.Kill(1);  // the session node dies with both tokens outstanding
  ASSERT_TRUE(Eventually([&] { return !c.n[3]->QuerySession(sid)->owner_alive; }));
  EXPECT_EQ(c.n[2]->CreateSession(0, "x").ok(), true);
  auto assumed = c.n[3]->CreateSession(sid, "hsm (recovered)");
  ASSERT_TRUE(assumed.ok()) << assumed.status().ToString();
  EXPECT_EQ(*assumed, sid);  // the same id
  std::vector<QueuedEvent> again;
  while (again.size() < 2) {
    auto e = c.n[3]->GetEvents(sid, 0, true, 5000);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    again.insert(again.end(), e->begin(), e->end());
  }
  std::set<uint64_t> t1, t2;
  for (auto& e : first) t1.insert(e.token);
  for (auto& e : again) t2.insert(e.token);
  EXPECT_EQ(t1, t2) << "re-queued with the same tokens";
  for (auto& e : again) ASSERT_TRUE(c.n[3]->Respond(sid, e.token, kRespContinue, 0).ok());
  EXPECT_EQ(r2.get()->response, kRespContinue);
  EXPECT_EQ(r3.get()->response, kRespContinue);
}

TEST(Node, UnassumedSessionFailsBlockedRaisersWithEIO) {
  InProcessCluster c(3, 500);
  uint64_t sid = *c.n[1]->CreateSession(0, "hsm");
  ASSERT_TRUE(c.n[1]->SetDisp(sid, 7, 1u << 16).ok());
  auto r = std::async(std::launch::async, [&] {
    RaiseSpec s;
    s.fsid = 7;
    s.type = 16;
    s.sync = true;
    return c.n[2]->Raise(s);
  });
  ASSERT_TRUE(c.n[1]->GetEvents(sid, 0, true, 5000).ok());
  c.Kill(1);
  auto out = r.get();
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->response, kRespAbort);
  EXPECT_EQ(out->err, EIO);
}

TEST(Node, ParallelApplicationHandlesEventsLocallyAndNotifiesOthers) {
  InProcessCluster c(3);
  std::vector<uint64_t> sid;
  for (int r = 0; r < 3; ++r) {
    sid.push_back(*c.n[r]->CreateSession(0, "par", "pgroup"));
    ASSERT_TRUE(c.n[r]->SetDisp(sid[r], 7, 1u << 22).ok()) << r;
  }
  auto r = std::async(std::launch::async, [&] {
    RaiseSpec s;
    s.fsid = 7;
    s.type = 22;
    s.sync = true;
    return c.n[2]->Raise(s);
  });
  auto ev = c.n[2]->GetEvents(sid[2], 0, true, 5000);  // handled where raised
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_FALSE((*ev)[0].notice);
  ASSERT_TRUE(c.n[2]->Respond(sid[2], (*ev)[0].token, kRespContinue, 0).ok());
  EXPECT_EQ(r.get()->response, kRespContinue);
  for (int q : {0, 1}) {  // the others are informed
    auto n = c.n[q]->GetEvents(sid[q], 0, true, 5000);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(n->size(), 1u);
    EXPECT_TRUE((*n)[0].notice);
    EXPECT_EQ((*n)[0].token, 0u);
  }
}

TEST(Node, ManySessionsPerNodeAndTheLimit) {
  InProcessCluster c(2);
  for (int i = 0; i < 4000; ++i) ASSERT_TRUE(c.n[1]->CreateSession(0, "s").ok()) << i;
  EXPECT_EQ(c.n[1]->CreateSession(0, "one too many").status().err(), ENOMEM);
  EXPECT_EQ(c.n[0]->AllSessions().size(), 4000u);
}

}  // namespace
}  // namespace pdm

namespace pdm {
namespace {

// A token outstanding on `sid` (session on node s), raised from node r.
uint64_t OutstandingToken(InProcessCluster& c, int s, uint64_t sid, uint64_t fsid, int r,
                          std::vector<std::future<Result<RaiseOutcome>>>& raisers) {
  raisers.push_back(std::async(std::launch::async, [&c, r, fsid] {
    RaiseSpec spec;
    spec.fsid = fsid;
    spec.type = 22;
    spec.sync = true;
    return c.n[r]->Raise(spec);
  }));
  auto evs = c.n[s]->GetEvents(sid, 1, true, 5000);
  EXPECT_TRUE(evs.ok());
  return evs.ok() && !evs->empty() ? (*evs)[0].token : 0;
}

TEST(NodeRights, ExclusiveRightsExcludeEachOtherAcrossNodes) {
  InProcessCluster c(3);
  uint64_t a = *c.n[1]->CreateSession(0, "a"), b = *c.n[2]->CreateSession(0, "b");
  ASSERT_TRUE(c.n[1]->SetDisp(a, 1, 1u << 22).ok());
  ASSERT_TRUE(c.n[2]->SetDisp(b, 2, 1u << 22).ok());
  std::vector<std::future<Result<RaiseOutcome>>> raisers;
  uint64_t ta = OutstandingToken(c, 1, a, 1, 0, raisers), tb = OutstandingToken(c, 2, b, 2, 0, raisers);
  const std::string obj = "handle-of-file-x";
  ASSERT_TRUE(c.n[1]->RequestRight(a, ta, obj, 2, false).ok());
  EXPECT_EQ(c.n[2]->RequestRight(b, tb, obj, 2, false).err(), EAGAIN);
  EXPECT_EQ(c.n[2]->RequestRight(b, tb, obj, 1, false).err(), EAGAIN);
  EXPECT_EQ(*c.n[1]->QueryRight(a, ta, obj), 2);
  EXPECT_EQ(*c.n[2]->QueryRight(b, tb, obj), 0);
  EXPECT_EQ(c.n[1]->RequestRight(a, ta + 99, obj, 2, false).err(), ESRCH);
  EXPECT_EQ(c.n[0]->RequestRight(a, ta, obj, 2, false).err(), EINVAL);  // not the session node
  // A waiter is granted when the holder lets go.
  auto waiter = std::async(std::launch::async, [&] { return c.n[2]->RequestRight(b, tb, obj, 2, true); });
  EXPECT_EQ(waiter.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  ASSERT_TRUE(c.n[1]->DowngradeRight(a, ta, obj).ok());
  EXPECT_EQ(waiter.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);  // SHARED still blocks EXCL
  ASSERT_TRUE(c.n[1]->ReleaseRight(a, ta, obj).ok());
  ASSERT_TRUE(waiter.get().ok());
  EXPECT_EQ(*c.n[2]->QueryRight(b, tb, obj), 2);
  EXPECT_EQ(c.n[1]->ReleaseRight(a, ta, obj).err(), EACCES);
  // Answering the event releases the token's rights.
  ASSERT_TRUE(c.n[2]->Respond(b, tb, kRespContinue, 0).ok());
  ASSERT_TRUE(c.n[1]->RequestRight(a, ta, obj, 2, false).ok());
  ASSERT_TRUE(c.n[1]->Respond(a, ta, kRespContinue, 0).ok());
  for (auto& r : raisers) EXPECT_EQ(r.get()->response, kRespContinue);
}

TEST(NodeRights, SharedRightsCoexistAndUpgradeNeedsSoleHolder) {
  InProcessCluster c(2);
  uint64_t a = *c.n[0]->CreateSession(0, "a"), b = *c.n[1]->CreateSession(0, "b");
  ASSERT_TRUE(c.n[0]->SetDisp(a, 1, 1u << 22).ok());
  ASSERT_TRUE(c.n[1]->SetDisp(b, 2, 1u << 22).ok());
  std::vector<std::future<Result<RaiseOutcome>>> raisers;
  uint64_t ta = OutstandingToken(c, 0, a, 1, 1, raisers), tb = OutstandingToken(c, 1, b, 2, 0, raisers);
  ASSERT_TRUE(c.n[0]->RequestRight(a, ta, "o", 1, false).ok());
  ASSERT_TRUE(c.n[1]->RequestRight(b, tb, "o", 1, false).ok());
  EXPECT_EQ(c.n[0]->UpgradeRight(a, ta, "o").err(), EAGAIN);
  ASSERT_TRUE(c.n[1]->ReleaseRight(b, tb, "o").ok());
  ASSERT_TRUE(c.n[0]->UpgradeRight(a, ta, "o").ok());
  EXPECT_EQ(*c.n[0]->QueryRight(a, ta, "o"), 2);
  EXPECT_EQ(c.n[1]->DowngradeRight(b, tb, "o").err(), EACCES);
  ASSERT_TRUE(c.n[0]->Respond(a, ta, kRespContinue, 0).ok());
  ASSERT_TRUE(c.n[1]->Respond(b, tb, kRespContinue, 0).ok());
  for (auto& r : raisers) (void)r.get();
}

TEST(NodeRights, RightsSurviveSmFailoverAndDieWithTheirSessionNode) {
  InProcessCluster c(4);
  uint64_t a = *c.n[1]->CreateSession(0, "a"), b = *c.n[2]->CreateSession(0, "b");
  ASSERT_TRUE(c.n[1]->SetDisp(a, 1, 1u << 22).ok());
  ASSERT_TRUE(c.n[2]->SetDisp(b, 2, 1u << 22).ok());
  std::vector<std::future<Result<RaiseOutcome>>> raisers;
  uint64_t ta = OutstandingToken(c, 1, a, 1, 3, raisers), tb = OutstandingToken(c, 2, b, 2, 3, raisers);
  ASSERT_TRUE(c.n[1]->RequestRight(a, ta, "o", 2, false).ok());
  c.Kill(0);  // the SM and its lock table go; node 1 reports its EXCL to the new SM
  ASSERT_TRUE(Eventually([&] { return c.n[2]->Cluster().session_manager == 1; }));
  EXPECT_EQ(c.n[2]->RequestRight(b, tb, "o", 2, false).err(), EAGAIN);
  auto waiter = std::async(std::launch::async, [&] { return c.n[2]->RequestRight(b, tb, "o", 2, true); });
  c.Kill(1);  // the holder's session node dies: its rights go with it
  ASSERT_EQ(waiter.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(waiter.get().ok());
  ASSERT_TRUE(c.n[2]->Respond(b, tb, kRespContinue, 0).ok());
}

}  // namespace
}  // namespace pdm
