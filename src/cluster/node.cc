#include "cluster/node.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cluster/tree.h"
#include "common/posix.h"
#include "wire/codec.h"

namespace pdm {

namespace {

using Fbb = flatbuffers::FlatBufferBuilder;

template <typename MakeBody>
std::vector<uint8_t> Envelope(wire::Body type, MakeBody make_body) {
  Fbb fbb(256);
  auto body = make_body(fbb);
  fbb.Finish(wire::CreateEnvelope(fbb, wire::kClusterVersion, type, body.Union()));
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

std::vector<uint8_t> EventFrame(const QueuedEvent& ev) {
  return Envelope(wire::Body::Event, [&](Fbb& fbb) {
    auto payload = fbb.CreateVector(ev.payload);
    return wire::CreateEvent(fbb, ev.token, ev.sid, ev.raiser, static_cast<uint8_t>(ev.type), ev.sync, ev.fsid,
                             ev.notice, payload);
  });
}

constexpr unsigned kEventMount = 1;  // DM_EVENT_MOUNT: the only DONTCARE-able event
constexpr unsigned kEventUser = 22;  // DM_EVENT_USER
// How long an event for a session not (yet) owned here is kept.
constexpr int64_t kStrayLifetimeNs = 30'000'000'000LL;  // DM_EVENT_MOUNT: the only DONTCARE-able event

}  // namespace

Node::Node(NodeOptions opts, Transport* transport)
    : opts_(std::move(opts)), transport_(transport), alive_(opts_.size, true) {
  tables_.term = 1;  // rank 0 is the first SM, in term 1
  sm_ = 0;
}

Node::~Node() { Stop(); }

void Node::Start() {
  timer_ = std::thread([this] { TimerLoop(); });
  if (opts_.rank == sm_) WriteClusterJson();
}

void Node::Stop() {
  Outbox out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return;
    stopping_ = true;
    // Every parked caller gets its answer: EINTR.
    for (auto& [sid, ws] : waiters_)
      for (auto& w : ws) out.calls.push_back([d = w.done] { d(Aborted("node agent is stopping", EINTR), 0); });
    waiters_.clear();
    waiter_sid_.clear();
    for (auto& [token, r] : raised_)
      if (r.on_done) out.calls.push_back([d = r.on_done] { d(Aborted("node agent is stopping", EINTR)); });
    raised_.clear();
  }
  cv_.notify_all();
  for (auto& call : out.calls) call();
  if (timer_.joinable()) timer_.join();
}

// ---------------------------------------------------------------------------
// Helpers (mu_ held unless said otherwise)

int Node::LowestAlive() const {
  for (int r = 0; r < opts_.size; ++r)
    if (alive_[r]) return r;
  return opts_.rank;
}

std::vector<int> Node::AliveRanks(int root) const {
  std::vector<int> v{root};
  for (int r = 0; r < opts_.size; ++r)
    if (r != root && alive_[r]) v.push_back(r);
  return v;
}

Status Node::CheckOwnSession(uint64_t sid) const {
  const SessionRecord* rec = tables_.Find(sid);
  if (!rec) return InvalidArgument("no session " + std::to_string(sid));
  if (rec->owner != opts_.rank)
    return InvalidArgument("session " + std::to_string(sid) + " belongs to node " + std::to_string(rec->owner) +
                           "; this call runs only on the session node");
  return Status::Ok();
}

void Node::Flush(Outbox& out) {
  for (auto& [peer, frame] : out.frames) {
    Status st = transport_->Send(peer, frame);
    if (!st.ok()) spdlog::debug("send to rank {} failed: {}", peer, st.ToString());
  }
  out.frames.clear();
  for (auto& call : out.calls) call();
  out.calls.clear();
  if (out.write_cluster_json) {
    out.write_cluster_json = false;
    WriteClusterJson();
  }
}

void Node::WriteClusterJson() {
  nlohmann::ordered_json j;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (sm_ != opts_.rank || opts_.state_dir.empty()) return;
    j["session_manager"] = sm_;
    j["nodes"] = nlohmann::ordered_json::array();
    for (int r = 0; r < opts_.size; ++r) {
      const NodeStatic& n = opts_.nodes.at(r);
      j["nodes"].push_back(
          {{"rank", r}, {"pid", n.pid}, {"alive", bool(alive_[r])}, {"view", n.view}, {"socket", n.socket}});
    }
  }
  Status st = WriteFileAtomic(opts_.state_dir + "/cluster.json", j.dump(2) + "\n");
  if (!st.ok()) spdlog::error("cannot write cluster.json: {}", st.ToString());
}

void Node::TimerLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    cv_.wait_for(lk, std::chrono::milliseconds(100));
    if (stopping_) break;
    const int64_t now = MonotonicNs();
    Outbox out;
    std::vector<uint64_t> expired;
    for (auto& [token, r] : raised_)
      if (r.orphan_deadline_ns != 0 && now > r.orphan_deadline_ns) expired.push_back(token);
    for (uint64_t token : expired) {
      const Raised& r = raised_.at(token);
      spdlog::warn("event token {:#x} for session {}: session node failed and nobody assumed the session "
                   "within {} ms; failing it with EIO",
                   r.ev.token, r.ev.sid, opts_.session_failure_timeout_ms);
      FinishRaised(token, kRespAbort, EIO, out);
    }
    std::erase_if(strays_, [&](const Stray& st) { return now - st.arrived_ns > kStrayLifetimeNs; });
    if (!out.calls.empty() || !out.frames.empty()) {
      lk.unlock();
      Flush(out);
      lk.lock();
    }
  }
}

// ---------------------------------------------------------------------------
// SM calls from this node

void Node::SendSmCall(uint64_t req_id, const SmCall& c, Outbox& out) {
  auto frame = Envelope(wire::Body::SmRequest, [&](Fbb& fbb) {
    auto info = fbb.CreateString(c.info);
    auto group = fbb.CreateString(c.group);
    auto object = fbb.CreateString(c.object);
    auto objects = c.objects.empty() ? 0 : fbb.CreateVectorOfStrings(c.objects);
    return wire::CreateSmRequest(fbb, req_id, c.op, c.sid, info, group, c.fsid, c.events, c.rank, c.token, object,
                                 c.right, c.wait, objects);
  });
  if (sm_ == opts_.rank) {
    auto env = wire::DecodeEnvelope(frame);
    HandleSmRequest(opts_.rank, *(*env)->body_as_SmRequest(), frame, out);
  } else {
    out.frames.emplace_back(sm_, std::move(frame));
  }
}

Result<uint64_t> Node::CallSm(std::unique_lock<std::mutex>& lk, SmCall call) {
  const uint64_t req_id = next_req_id_++;
  auto [it, inserted] = sm_calls_.emplace(req_id, std::move(call));
  Outbox out;
  if (sm_ready_) SendSmCall(req_id, it->second, out);
  lk.unlock();
  Flush(out);
  lk.lock();
  cv_.wait(lk, [&] { return stopping_ || sm_calls_.at(req_id).done; });
  SmCall done = std::move(sm_calls_.at(req_id));
  sm_calls_.erase(req_id);
  if (!done.done) return Aborted("node agent is stopping", EINTR);
  if (done.err != 0) return FromErrno(done.err, "session manager refused the request");
  return done.result_sid;
}

void Node::CompleteSmCall(uint64_t req_id, int err, uint64_t sid) {
  auto it = sm_calls_.find(req_id);
  if (it == sm_calls_.end() || it->second.done) return;
  if (it->second.detached) {
    if (err != 0) spdlog::warn("SM refused a background request {}: {}", req_id, std::strerror(err));
    sm_calls_.erase(it);
    return;
  }
  it->second.done = true;
  it->second.err = err;
  it->second.result_sid = sid;
  cv_.notify_all();
}

void Node::ReplySm(int origin, uint64_t req_id, int err, uint64_t sid, Outbox& out) {
  if (origin < 0) return;
  if (origin == opts_.rank) {
    CompleteSmCall(req_id, err, sid);
    return;
  }
  out.frames.emplace_back(origin, Envelope(wire::Body::SmReply,
                                           [&](Fbb& fbb) { return wire::CreateSmReply(fbb, req_id, err, sid); }));
}

// ---------------------------------------------------------------------------
// SM side

void Node::HandleSmRequest(int origin, const wire::SmRequest& r, std::span<const uint8_t> frame, Outbox& out) {
  if (sm_ != opts_.rank || !sm_ready_) {
    // Not (yet) the SM: keep it while I might become SM; otherwise the origin
    // re-sends it to the real SM when that one publishes its tables.
    if (rebuilding_ || LowestAlive() == opts_.rank)
      deferred_sm_requests_.emplace_back(origin, std::vector<uint8_t>(frame.begin(), frame.end()));
    return;
  }
  const uint64_t req = r.req_id();
  std::string info = r.info() ? r.info()->str() : "";
  std::string group = r.group() ? r.group()->str() : "";
  auto fail = [&](int err, const std::string& why) {
    spdlog::info("SM: request {} from rank {} refused: {} ({})", req, origin, why, std::strerror(err));
    ReplySm(origin, req, err, 0, out);
  };
  auto upsert = [](SessionRecord s) -> ChangeBuilder {
    return [s](Fbb& fbb) {
      auto rec = BuildSession(fbb, s);
      return wire::CreateChange(fbb, wire::ChangeKind::UpsertSession, rec);
    };
  };
  switch (r.op()) {
    case wire::SmOp::Create: {
      for (const auto& [sid, s] : tables_.sessions)
        if (s.create_origin == origin && s.create_req == req) return ReplySm(origin, req, 0, sid, out);  // retry
      if (tables_.SessionsOwnedBy(origin) >= opts_.max_sessions_per_node)
        return fail(ENOMEM, "node " + std::to_string(origin) + " has " +
                                std::to_string(opts_.max_sessions_per_node) + " sessions (the limit)");
      SessionRecord s;
      s.sid = MakeSessionId(tables_.term, tables_.next_sid++);
      s.owner = origin;
      s.info = info;
      s.group = group;
      s.create_origin = origin;
      s.create_req = req;
      return Broadcast({upsert(s)}, false, origin, req, s.sid, out);
    }
    case wire::SmOp::Assume: {
      const SessionRecord* cur = tables_.Find(r.sid());
      if (!cur) return fail(EINVAL, "assume of unknown session " + std::to_string(r.sid()));
      if (cur->owner != origin && cur->owner >= 0 && cur->owner < opts_.size && alive_[cur->owner])
        return fail(EBUSY, "session " + std::to_string(r.sid()) + " is active on live node " +
                               std::to_string(cur->owner));
      SessionRecord s = *cur;
      s.owner = origin;
      s.info = info;
      return Broadcast({upsert(s)}, false, origin, req, s.sid, out);
    }
    case wire::SmOp::Destroy: {
      // Validated at the session node; a re-sent destroy of a session that is
      // already gone succeeded the first time.
      if (!tables_.Find(r.sid())) return ReplySm(origin, req, 0, r.sid(), out);
      const uint64_t sid = r.sid();
      return Broadcast({[sid](Fbb& fbb) { return wire::CreateChange(fbb, wire::ChangeKind::RemoveSession, 0, sid); }},
                       false, origin, req, sid, out);
    }
    case wire::SmOp::Modify: {
      const SessionRecord* cur = tables_.Find(r.sid());
      if (!cur) return fail(EINVAL, "modify of unknown session " + std::to_string(r.sid()));
      SessionRecord s = *cur;
      s.info = info;
      return Broadcast({upsert(s)}, false, origin, req, s.sid, out);
    }
    case wire::SmOp::SetDisp: {
      Status st = tables_.CheckDisp(r.sid(), r.fsid(), r.events());
      if (!st.ok()) return fail(st.err(), st.message());
      const uint64_t sid = r.sid(), fsid = r.fsid(), ev = r.events();
      return Broadcast({[=](Fbb& fbb) {
                         return wire::CreateChange(fbb, wire::ChangeKind::SetDisp, 0, sid, fsid, ev);
                       }},
                       false, origin, req, sid, out);
    }
    case wire::SmOp::SetFsEvents: {
      if (!tables_.Find(r.sid())) return fail(EINVAL, "unknown session " + std::to_string(r.sid()));
      const uint64_t fsid = r.fsid(), ev = r.events();
      return Broadcast({[=](Fbb& fbb) {
                         return wire::CreateChange(fbb, wire::ChangeKind::SetFsEvents, 0, 0, fsid, ev);
                       }},
                       false, origin, req, r.sid(), out);
    }
    case wire::SmOp::MarkDead:
      return fail(EINVAL, "MarkDead is decided by the SM itself");
    case wire::SmOp::RequestRight:
    case wire::SmOp::ReleaseRight:
    case wire::SmOp::ReleaseToken:
      return HandleRightRequest(origin, r, out);
    case wire::SmOp::Rewatch: {
      std::vector<std::string> objects;
      if (r.objects())
        for (const auto* o : *r.objects()) objects.push_back(o->str());
      return Broadcast({[objects](Fbb& fbb) {
                         auto os = fbb.CreateVectorOfStrings(objects);
                         return wire::CreateChange(fbb, wire::ChangeKind::Rewatch, 0, 0, 0, 0, 0, 0, os);
                       }},
                       false, origin, req, r.sid(), out);
    }
  }
  fail(EINVAL, "unknown op");
}

void Node::Broadcast(const std::vector<ChangeBuilder>& changes, bool snapshot, int origin, uint64_t req_id,
                     uint64_t sid, Outbox& out) {
  const uint64_t bcast_id = (uint64_t(opts_.rank + 1) << 48) | next_bcast_++;
  std::vector<int> members = AliveRanks(opts_.rank);
  if (!snapshot) tables_.seq++;
  auto frame = Envelope(wire::Body::Update, [&](Fbb& fbb) {
    std::vector<flatbuffers::Offset<wire::Change>> cs;
    for (const auto& c : changes) cs.push_back(c(fbb));
    auto mem = fbb.CreateVector(members);
    auto cv = fbb.CreateVector(cs);
    flatbuffers::Offset<wire::TablesMsg> snap = snapshot ? tables_.Build(fbb) : 0;
    return wire::CreateUpdate(fbb, bcast_id, mem, static_cast<uint8_t>(opts_.radix), tables_.term, tables_.seq,
                              tables_.next_sid, cv, snap);
  });
  // The root applies its own update through the same path as every node.
  auto env = wire::DecodeEnvelope(frame);
  if (!env.ok()) {
    spdlog::critical("SM built an update it cannot decode: {}", env.status().ToString());
    return ReplySm(origin, req_id, EIO, 0, out);
  }
  ApplyUpdate(*(*env)->body_as_Update(), out);
  Bcast b;
  b.frame = std::move(frame);
  b.members = std::move(members);
  b.radix = opts_.radix;
  b.ack_to = {-1};
  b.origin = origin;
  b.req_id = req_id;
  b.sid = sid;
  b.snapshot = snapshot;
  ForwardTo(b, KnomialChildren(0, static_cast<int>(b.members.size()), b.radix), out);
  const bool done = b.waiting.empty();
  bcasts_.emplace(bcast_id, std::move(b));
  if (snapshot) OnSmChanged(out);
  if (done) CompleteBcast(bcast_id, out);
}

void Node::ForwardTo(Bcast& b, const std::vector<int>& positions, Outbox& out) {
  const int n = static_cast<int>(b.members.size());
  for (int pos : positions) {
    int r = b.members[pos];
    if (r != opts_.rank && r >= 0 && r < opts_.size && alive_[r]) {
      if (b.waiting.insert(r).second) out.frames.emplace_back(r, b.frame);
    } else if (r != opts_.rank) {
      // A dead child: adopt its subtree so the broadcast still reaches it.
      ForwardTo(b, KnomialChildren(pos, n, b.radix), out);
    }
  }
}

void Node::CompleteBcast(uint64_t bcast_id, Outbox& out) {
  auto it = bcasts_.find(bcast_id);
  if (it == bcasts_.end()) return;
  Bcast b = std::move(it->second);
  bcasts_.erase(it);
  bcast_seen_[bcast_id] = true;
  // Only recent broadcasts can arrive twice (a subtree re-sent after its
  // forwarder died): keep a bounded window, oldest ids first out.
  if (bcast_seen_.size() > 100000) bcast_seen_.erase(bcast_seen_.begin(), std::next(bcast_seen_.begin(), 50000));
  for (int to : b.ack_to) {
    if (to == -1) {
      ReplySm(b.origin, b.req_id, b.err, b.sid, out);
      if (b.snapshot) {
        // The rebuilt tables are everywhere: serve what waited for us.
        out.write_cluster_json = true;
        auto deferred = std::move(deferred_sm_requests_);
        deferred_sm_requests_.clear();
        for (auto& [origin, frame] : deferred) {
          auto env = wire::DecodeEnvelope(frame);
          if (env.ok()) HandleSmRequest(origin, *(*env)->body_as_SmRequest(), frame, out);
        }
      }
    } else if (to != opts_.rank && alive_[to]) {
      out.frames.emplace_back(to, Envelope(wire::Body::UpdateAck,
                                           [&](Fbb& fbb) { return wire::CreateUpdateAck(fbb, bcast_id); }));
    }
  }
}

void Node::HandleAck(int from, uint64_t bcast_id, Outbox& out) {
  auto it = bcasts_.find(bcast_id);
  if (it == bcasts_.end()) return;
  it->second.waiting.erase(from);
  if (it->second.waiting.empty()) CompleteBcast(bcast_id, out);
}

void Node::HandleUpdate(int from, const wire::Update& u, std::span<const uint8_t> frame, Outbox& out) {
  const uint64_t id = u.bcast_id();
  if (auto it = bcasts_.find(id); it != bcasts_.end()) {
    it->second.ack_to.push_back(from);  // a second parent (its first one died)
    return;
  }
  // Seen already, or a late change from an SM whose term is over (the
  // snapshot of its successor already holds what counts): ack, do not apply.
  if (bcast_seen_.count(id) || (!u.snapshot() && u.term() < tables_.term)) {
    bcast_seen_[id] = true;
    out.frames.emplace_back(from, Envelope(wire::Body::UpdateAck,
                                           [&](Fbb& fbb) { return wire::CreateUpdateAck(fbb, id); }));
    return;
  }
  ApplyUpdate(u, out);
  Bcast b;
  b.frame.assign(frame.begin(), frame.end());
  b.members.assign(u.members()->begin(), u.members()->end());
  b.radix = u.radix();
  b.ack_to = {from};
  auto pos = std::find(b.members.begin(), b.members.end(), opts_.rank);
  if (pos != b.members.end())
    ForwardTo(b, KnomialChildren(static_cast<int>(pos - b.members.begin()), static_cast<int>(b.members.size()),
                                 b.radix),
              out);
  const bool done = b.waiting.empty();
  bcasts_.emplace(id, std::move(b));
  if (done) CompleteBcast(id, out);
}

void Node::ApplyUpdate(const wire::Update& u, Outbox& out) {
  if (u.snapshot()) {
    std::map<uint64_t, int> old_owner;
    for (const auto& [sid, s] : tables_.sessions) old_owner[sid] = s.owner;
    tables_.LoadFrom(*u.snapshot());
    const int new_sm = u.members()->Get(0);
    if (new_sm != opts_.rank) {
      rebuilding_ = false;
      deferred_sm_requests_.clear();
    }
    sm_ = new_sm;
    sm_ready_ = true;
    for (const auto& [sid, s] : tables_.sessions)
      if (s.owner == opts_.rank) {
        queues_[sid];
        AdoptStrays(sid, out);
      }
    for (auto it = queues_.begin(); it != queues_.end();) {
      const SessionRecord* s = tables_.Find(it->first);
      if (!s || s->owner != opts_.rank) {
        FailWaiters(it->first, InvalidArgument("session " + std::to_string(it->first) + " is not on this node"),
                    out);
        it = queues_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [sid, s] : tables_.sessions)
      if (old_owner.count(sid) == 0 || old_owner[sid] != s.owner) ResendForSession(sid, out);
    // The root re-sends its own calls in Broadcast, after the snapshot is on
    // its way: a change queued before it would be overwritten by it.
    if (new_sm != opts_.rank) OnSmChanged(out);
    cv_.notify_all();
    return;
  }
  tables_.term = u.term();
  tables_.seq = u.seq();
  tables_.next_sid = u.next_sid();
  if (!u.changes()) return;
  for (const wire::Change* c : *u.changes()) {
    int prev_owner = -1;
    if (c->kind() == wire::ChangeKind::UpsertSession && c->session())
      if (const SessionRecord* s = tables_.Find(c->session()->sid())) prev_owner = s->owner;
    tables_.Apply(*c);
    switch (c->kind()) {
      case wire::ChangeKind::UpsertSession: {
        if (!c->session()) break;
        const uint64_t sid = c->session()->sid();
        const int owner = c->session()->owner();
        if (owner == opts_.rank) {
          queues_[sid];
          AdoptStrays(sid, out);
        } else {
          queues_.erase(sid);
          FailWaiters(sid, InvalidArgument("session " + std::to_string(sid) + " moved to node " +
                                           std::to_string(owner)),
                      out);
        }
        if (prev_owner != -1 && prev_owner != owner) ResendForSession(sid, out);  // assumed elsewhere
        break;
      }
      case wire::ChangeKind::RemoveSession: {
        queues_.erase(c->sid());
        FailWaiters(c->sid(), InvalidArgument("session " + std::to_string(c->sid()) + " was destroyed"), out);
        // Events in flight to a destroyed session fail: data behind a
        // disposition is never let through by accident.
        std::vector<uint64_t> gone;
        for (auto& [token, r] : raised_)
          if (r.ev.sid == c->sid()) gone.push_back(token);
        for (uint64_t token : gone) FinishRaised(token, kRespAbort, EIO, out);
        break;
      }
      case wire::ChangeKind::Rewatch:
        if (!opts_.rewatch) break;
        if (c->objects())
          for (const auto* o : *c->objects()) opts_.rewatch(o->str());
        break;
      default:
        break;
    }
  }
  cv_.notify_all();
}

void Node::OnSmChanged(Outbox& out) {
  for (auto& [req_id, call] : sm_calls_)
    if (!call.done) SendSmCall(req_id, call, out);
}

void Node::BecomeSmCandidate(Outbox& out) {
  spdlog::warn("rank {}: session manager failed; taking over, collecting tables from live nodes", opts_.rank);
  rebuilding_ = true;
  reports_.clear();
  reports_.push_back(tables_);
  awaiting_reports_.clear();
  for (int r = 0; r < opts_.size; ++r)
    if (r != opts_.rank && alive_[r]) {
      awaiting_reports_.insert(r);
      out.frames.emplace_back(r, Envelope(wire::Body::StateQuery,
                                          [&](Fbb& fbb) { return wire::CreateStateQuery(fbb, tables_.term); }));
    }
  if (awaiting_reports_.empty()) FinishRebuild(out);
}

void Node::FinishRebuild(Outbox& out) {
  // The most advanced replica has applied every change any live node has
  // (changes reach each node in SM order), so it is the new truth. A higher
  // term than anyone has seen keeps new session ids from ever repeating.
  const Tables* best = &reports_[0];
  uint64_t max_term = 0;
  std::set<int> dead;
  for (const Tables& t : reports_) {
    if (std::tie(t.term, t.seq) > std::tie(best->term, best->seq)) best = &t;
    max_term = std::max(max_term, t.term);
    dead.insert(t.dead.begin(), t.dead.end());
  }
  Tables next = *best;
  next.term = max_term + 1;
  next.seq = 0;
  next.next_sid = 1;
  for (int r = 0; r < opts_.size; ++r)
    if (!alive_[r]) dead.insert(r);
  next.dead = dead;
  tables_ = std::move(next);
  rebuilding_ = false;
  reports_.clear();
  // The lock table is rebuilt from what the holders report (claim 4); the
  // waiters re-send their requests to us.
  rights_.clear();
  parked_.clear();
  for (const auto& [token, objs] : held_rights_)
    for (const auto& [obj, right] : objs) rights_[obj][token] = Hold{right, opts_.rank};
  for (auto& [obj, th] : reported_rights_)
    if (th.second.holder >= 0 && th.second.holder < opts_.size && alive_[th.second.holder])
      rights_[obj][th.first] = th.second;  // a holder that died since reporting has lost them
  reported_rights_.clear();
  sm_ = opts_.rank;
  sm_ready_ = true;
  spdlog::warn("rank {}: now session manager (term {}, {} sessions)", opts_.rank, tables_.term,
               tables_.sessions.size());
  Broadcast({}, true, -1, 0, 0, out);
}

// ---------------------------------------------------------------------------
// Transport callbacks

void Node::OnFrame(int peer, std::span<const uint8_t> frame) {
  auto decoded = wire::DecodeEnvelope(frame);
  if (!decoded.ok()) {
    spdlog::error("rank {}: rejected a frame from rank {}: {}", opts_.rank, peer, decoded.status().ToString());
    return;
  }
  const wire::Envelope* env = *decoded;
  Outbox out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return;
    switch (env->body_type()) {
      case wire::Body::SmRequest:
        HandleSmRequest(peer, *env->body_as_SmRequest(), frame, out);
        break;
      case wire::Body::SmReply: {
        const auto* r = env->body_as_SmReply();
        CompleteSmCall(r->req_id(), r->err(), r->sid());
        break;
      }
      case wire::Body::Update:
        HandleUpdate(peer, *env->body_as_Update(), frame, out);
        break;
      case wire::Body::UpdateAck:
        HandleAck(peer, env->body_as_UpdateAck()->bcast_id(), out);
        break;
      case wire::Body::StateQuery:
        out.frames.emplace_back(peer, Envelope(wire::Body::StateReport, [&](Fbb& fbb) {
                                  auto t = tables_.Build(fbb);
                                  std::vector<flatbuffers::Offset<wire::RightRec>> rr;
                                  for (const auto& [token, objs] : held_rights_)
                                    for (const auto& [obj, right] : objs)
                                      rr.push_back(wire::CreateRightRec(fbb, fbb.CreateString(obj), token, right,
                                                                        opts_.rank));
                                  return wire::CreateStateReport(fbb, tables_.term, t, fbb.CreateVector(rr));
                                }));
        break;
      case wire::Body::StateReport:
        if (rebuilding_ && awaiting_reports_.erase(peer)) {
          Tables t;
          t.LoadFrom(*env->body_as_StateReport()->tables());
          reports_.push_back(std::move(t));
          if (const auto* rr = env->body_as_StateReport()->rights())
            for (const auto* r : *rr)
              if (r->object())
                reported_rights_.push_back({r->object()->str(), {r->token(), Hold{r->right(), peer}}});
          if (awaiting_reports_.empty()) FinishRebuild(out);
        }
        break;
      case wire::Body::Event: {
        const auto* e = env->body_as_Event();
        QueuedEvent ev;
        ev.token = e->token();
        ev.sid = e->sid();
        ev.raiser = peer;
        ev.type = e->type();
        ev.sync = e->sync();
        ev.fsid = e->fsid();
        ev.notice = e->notice();
        if (e->payload()) ev.payload.assign(e->payload()->begin(), e->payload()->end());
        QueueEvent(std::move(ev), out);
        break;
      }
      case wire::Body::EventResponse: {
        const auto* r = env->body_as_EventResponse();
        FinishRaised(r->token(), r->response(), r->err(), out);
        break;
      }
      case wire::Body::TokenQuery:
        HandleTokenQuery(peer, *env->body_as_TokenQuery(), out);
        break;
      case wire::Body::TokenReply:
        CompleteTokenCall(peer, *env->body_as_TokenReply());
        break;
      case wire::Body::Heartbeat:
      case wire::Body::NONE:
        break;
    }
  }
  Flush(out);
}

void Node::OnPeerDown(int peer, const Status& why) {
  Outbox out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (peer < 0 || peer >= opts_.size || !alive_[peer]) return;
    alive_[peer] = false;
    spdlog::warn("rank {}: node {} failed ({})", opts_.rank, peer, why.message());

    // Broadcasts waiting on the dead node: adopt its subtree.
    std::vector<uint64_t> complete;
    for (auto& [id, b] : bcasts_) {
      b.ack_to.erase(std::remove(b.ack_to.begin(), b.ack_to.end(), peer), b.ack_to.end());
      if (b.waiting.erase(peer)) {
        auto pos = std::find(b.members.begin(), b.members.end(), peer);
        if (pos != b.members.end())
          ForwardTo(b, KnomialChildren(static_cast<int>(pos - b.members.begin()),
                                       static_cast<int>(b.members.size()), b.radix),
                    out);
        if (b.waiting.empty()) complete.push_back(id);
      }
    }
    for (uint64_t id : complete) CompleteBcast(id, out);

    // Synchronous events the dead node raised can no longer be answered.
    for (auto& [sid, q] : queues_) {
      std::erase_if(q.pending, [&](const QueuedEvent& e) { return e.raiser == peer && e.sync; });
      for (auto it = q.outstanding.begin(); it != q.outstanding.end();) {
        if (it->second.raiser != peer) {
          ++it;
          continue;
        }
        held_rights_.erase(it->first);
        if (right_tokens_.erase(it->first)) ReleaseTokenRights(it->first, out);
        it = q.outstanding.erase(it);
      }
    }
    // Events this node raised for sessions on the dead node wait for the
    // session to be assumed (claim 3), at most session_failure_timeout_ms.
    const int64_t deadline = MonotonicNs() + int64_t(opts_.session_failure_timeout_ms) * 1000000;
    for (auto& [token, r] : raised_)
      if (r.sent_to == peer) r.orphan_deadline_ns = deadline;

    if (rebuilding_ && awaiting_reports_.erase(peer) && awaiting_reports_.empty()) FinishRebuild(out);

    if (peer == sm_) {
      sm_ready_ = false;
      sm_ = LowestAlive();
      if (sm_ == opts_.rank && !rebuilding_) BecomeSmCandidate(out);
    } else if (sm_ == opts_.rank && sm_ready_) {
      DropRightsOf(peer, out);
      Broadcast({[peer](Fbb& fbb) {
                  return wire::CreateChange(fbb, wire::ChangeKind::NodeDead, 0, 0, 0, 0, peer);
                }},
                false, -1, 0, 0, out);
      out.write_cluster_json = true;
    }
    cv_.notify_all();
  }
  Flush(out);
}

// ---------------------------------------------------------------------------
// Event routing

void Node::QueueEvent(QueuedEvent ev, Outbox& out) {
  const SessionRecord* rec = tables_.Find(ev.sid);
  if (!rec || rec->owner != opts_.rank) {
    // A raiser that applied "session assumed here" before this node did can
    // send its re-queued event first. Hold it until the update arrives; the
    // timer drops strays that no update claims.
    spdlog::debug("event token {:#x} for session {} not (yet) owned here; held", ev.token, ev.sid);
    strays_.push_back(Stray{MonotonicNs(), std::move(ev)});
    return;
  }
  SessionQueue& q = queues_[ev.sid];
  if (ev.token != 0) {
    if (q.outstanding.count(ev.token)) return;  // re-sent, already handed out
    for (const auto& p : q.pending)
      if (p.token == ev.token) return;
  }
  ev.sequence = q.next_sequence++;
  const uint64_t sid = ev.sid;
  q.pending.push_back(std::move(ev));
  ServeWaiters(sid, out);
}

void Node::ServeWaiters(uint64_t sid, Outbox& out) {
  auto wit = waiters_.find(sid);
  auto qit = queues_.find(sid);
  if (wit == waiters_.end() || qit == queues_.end()) return;
  // Hand the events straight to a parked get-events: its answer is written
  // by this thread after the lock is released, so the event reaches the DM
  // application without first waking the thread that parked.
  while (!wit->second.empty() && !qit->second.pending.empty()) {
    Waiter w = std::move(wit->second.front());
    wit->second.pop_front();
    waiter_sid_.erase(w.id);
    size_t needed = 0;
    auto r = TakeEvents(qit->second, w.max_msgs, w.max_bytes, w.overhead, &needed);
    out.calls.push_back([d = std::move(w.done), r = std::move(r), needed]() mutable { d(std::move(r), needed); });
  }
  if (wit->second.empty()) waiters_.erase(wit);
}

void Node::FailWaiters(uint64_t sid, const Status& why, Outbox& out) {
  auto wit = waiters_.find(sid);
  if (wit == waiters_.end()) return;
  for (auto& w : wit->second) {
    waiter_sid_.erase(w.id);
    out.calls.push_back([d = std::move(w.done), why] { d(why, 0); });
  }
  waiters_.erase(wit);
}

void Node::AdoptStrays(uint64_t sid, Outbox& out) {
  std::vector<Stray> keep;
  std::vector<QueuedEvent> mine;
  for (auto& st : strays_) {
    if (st.ev.sid == sid)
      mine.push_back(std::move(st.ev));
    else
      keep.push_back(std::move(st));
  }
  strays_ = std::move(keep);
  for (auto& ev : mine) QueueEvent(std::move(ev), out);
}

bool Node::SendEvent(Raised& r, Outbox& out) {
  const SessionRecord* rec = tables_.Find(r.ev.sid);
  if (!rec) return false;
  const int owner = rec->owner;
  if (owner == opts_.rank) {
    QueueEvent(r.ev, out);
    r.sent_to = owner;
    r.orphan_deadline_ns = 0;
  } else if (owner >= 0 && owner < opts_.size && alive_[owner]) {
    out.frames.emplace_back(owner, EventFrame(r.ev));
    r.sent_to = owner;
    r.orphan_deadline_ns = 0;
  } else if (r.orphan_deadline_ns == 0) {
    r.sent_to = owner;
    r.orphan_deadline_ns = MonotonicNs() + int64_t(opts_.session_failure_timeout_ms) * 1000000;
  }
  return true;
}

void Node::ResendForSession(uint64_t sid, Outbox& out) {
  std::vector<uint64_t> gone;
  for (auto it = raised_.begin(); it != raised_.end();) {
    Raised& r = it->second;
    if (r.ev.sid == sid) {
      if (!SendEvent(r, out)) {
        gone.push_back(it->first);
        ++it;
        continue;
      }
      // An asynchronous event is forgotten once handed to a live owner.
      if (!r.ev.sync && r.orphan_deadline_ns == 0) {
        it = raised_.erase(it);
        continue;
      }
    }
    ++it;
  }
  for (uint64_t token : gone) FinishRaised(token, kRespAbort, EIO, out);
}

void Node::FinishRaised(uint64_t token, int response, int err, Outbox& out) {
  auto it = raised_.find(token);
  if (it == raised_.end()) return;
  Raised r = std::move(it->second);
  raised_.erase(it);
  if (!r.on_done) return;
  RaiseOutcome o;
  o.delivered = true;
  o.response = response == kRespDontCare ? kRespContinue : response;
  o.err = err;
  o.token = token;
  o.sid = r.ev.sid;
  // Answered on the thread that got the answer, after the lock is released.
  out.calls.push_back([d = std::move(r.on_done), o] { d(o); });
}

void Node::RaiseAsync(const RaiseSpec& spec, RaiseDone done) {
  if (spec.type >= wire::kEventTypeCount) return done(InvalidArgument("event type " + std::to_string(spec.type)));
  Outbox out;
  std::unique_lock<std::mutex> lk(mu_);
  if (stopping_) {
    lk.unlock();
    return done(Aborted("node agent is stopping", EINTR));
  }
  std::vector<uint64_t> holders;
  if (spec.target_sid != 0) {
    if (!tables_.Find(spec.target_sid)) {
      lk.unlock();
      return done(InvalidArgument("no session " + std::to_string(spec.target_sid)));
    }
    holders.push_back(spec.target_sid);
  } else {
    holders = tables_.Holders(spec.fsid, spec.type);
  }
  if (holders.empty()) {  // nobody has the disposition: not generated
    lk.unlock();
    return done(RaiseOutcome{});
  }

  // One handler: the instance on this node if the disposition belongs to a
  // parallel application with one here (claim 17), else the lowest live one.
  uint64_t primary = holders[0];
  int best = opts_.size + 1;
  for (uint64_t h : holders) {
    const SessionRecord* s = tables_.Find(h);
    int score = s->owner == opts_.rank ? -1 : (alive_[s->owner] ? s->owner : opts_.size);
    if (score < best) best = score, primary = h;
  }
  Raised r;
  r.ev.token = (uint64_t(opts_.rank + 1) << 48) | next_token_++;
  r.ev.sid = primary;
  r.ev.raiser = opts_.rank;
  r.ev.type = spec.type;
  r.ev.sync = spec.sync;
  r.ev.fsid = spec.fsid;
  r.ev.payload = spec.payload;
  const uint64_t token = r.ev.token;
  RaiseOutcome outcome;
  outcome.delivered = true;
  outcome.token = spec.sync ? token : 0;
  outcome.sid = primary;
  if (spec.sync) r.on_done = std::move(done);
  // Registered before it is sent: a session on this node may answer it from
  // the delivery that SendEvent queues.
  auto [it, inserted] = raised_.emplace(token, std::move(r));
  const bool sent = SendEvent(it->second, out);
  // Claim 18: the other instances hear of the event.
  for (uint64_t h : holders) {
    if (h == primary) continue;
    Raised n;
    n.ev = it->second.ev;
    n.ev.token = (uint64_t(opts_.rank + 1) << 48) | next_token_++;
    n.ev.sid = h;
    n.ev.sync = false;
    n.ev.notice = true;
    n.on_done = nullptr;
    if (SendEvent(n, out) && n.orphan_deadline_ns != 0) raised_.emplace(n.ev.token, std::move(n));
  }
  if (!sent) {
    FinishRaised(token, kRespAbort, EIO, out);  // the session vanished
  } else if (!spec.sync) {
    // An asynchronous event is kept only while its session's node is down.
    if (it->second.orphan_deadline_ns == 0) raised_.erase(it);
  }
  lk.unlock();
  Flush(out);
  if (!spec.sync && done) done(outcome);
}

Result<RaiseOutcome> Node::Raise(const RaiseSpec& spec) {
  struct Wait {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    Result<RaiseOutcome> r = Internal("pending");
  };
  auto w = std::make_shared<Wait>();
  RaiseAsync(spec, [w](Result<RaiseOutcome> r) {
    std::lock_guard<std::mutex> l(w->m);
    w->r = std::move(r);
    w->done = true;
    w->cv.notify_all();
  });
  std::unique_lock<std::mutex> l(w->m);
  w->cv.wait(l, [&] { return w->done; });
  return std::move(w->r);
}

// ---------------------------------------------------------------------------
// Session calls

Result<uint64_t> Node::CreateSession(uint64_t oldsid, const std::string& info, const std::string& group) {
  if (info.size() >= wire::kSessionInfoMax)
    return InvalidArgument("session info of " + std::to_string(info.size()) + " bytes (limit " +
                               std::to_string(wire::kSessionInfoMax - 1) + ")",
                           E2BIG);
  std::unique_lock<std::mutex> lk(mu_);
  SmCall c;
  c.op = oldsid ? wire::SmOp::Assume : wire::SmOp::Create;
  c.sid = oldsid;
  c.info = info;
  c.group = group;
  if (!oldsid) return CallSm(lk, std::move(c));
  // Every node detects a failure on its own (its connection to the dead
  // node closing, or the node's heartbeats stopping), and the SM decides an
  // assume by its own view. So a node that has already seen the session's
  // node die can ask before the SM has seen it: a dying process's sockets
  // close one by one, a busy host delays either side, and a socket kept
  // open elsewhere leaves the SM only the heartbeat timeout. EBUSY then
  // would contradict what this node reports (owner_alive false). While this
  // node sees the owner dead, ask again until the SM agrees; it must notice
  // within its heartbeat timeout. Bounded by the session failure timeout,
  // after which the session's waiting events have failed anyway; an owner
  // the SM still hears from after that is alive (EBUSY).
  const int64_t deadline = MonotonicNs() + int64_t(opts_.session_failure_timeout_ms) * 1000000;
  auto owner_dead_here = [&] {
    const SessionRecord* rec = tables_.Find(oldsid);
    return rec && rec->owner >= 0 && rec->owner < opts_.size && rec->owner != opts_.rank && !alive_[rec->owner];
  };
  for (int backoff_ms = 20;; backoff_ms = std::min(backoff_ms * 2, 500)) {
    Result<uint64_t> r = CallSm(lk, c);
    if (r.ok() || r.status().err() != EBUSY || stopping_ || !owner_dead_here() || MonotonicNs() >= deadline)
      return r;
    spdlog::info("rank {}: the SM does not see the node of session {} dead yet; asking again", opts_.rank,
                 oldsid);
    cv_.wait_for(lk, std::chrono::milliseconds(backoff_ms), [&] { return stopping_; });
  }
}

Status Node::DestroySession(uint64_t sid) {
  std::unique_lock<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckOwnSession(sid));
  auto q = queues_.find(sid);
  if (q != queues_.end()) {
    // Queued messages of any kind, unanswered tokens or a parked
    // dm_get_events keep the session (XDSM; LTP expects EBUSY).
    if (!q->second.pending.empty() || !q->second.outstanding.empty() || waiters_.count(sid))
      return FailedPrecondition("session " + std::to_string(sid) + " has undelivered or unanswered events",
                                EBUSY);
  }
  SmCall c;
  c.op = wire::SmOp::Destroy;
  c.sid = sid;
  auto r = CallSm(lk, std::move(c));
  return r.ok() ? Status::Ok() : r.status();
}

Status Node::ModifySession(uint64_t sid, const std::string& info) {
  if (info.size() >= wire::kSessionInfoMax) return InvalidArgument("session info too long", E2BIG);
  std::unique_lock<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckOwnSession(sid));
  SmCall c;
  c.op = wire::SmOp::Modify;
  c.sid = sid;
  c.info = info;
  auto r = CallSm(lk, std::move(c));
  return r.ok() ? Status::Ok() : r.status();
}

Result<SessionView> Node::QuerySession(uint64_t sid) {
  std::lock_guard<std::mutex> lk(mu_);
  const SessionRecord* rec = tables_.Find(sid);
  if (!rec) return InvalidArgument("no session " + std::to_string(sid));
  return SessionView{*rec, rec->owner >= 0 && rec->owner < opts_.size && alive_[rec->owner]};
}

std::vector<SessionView> Node::AllSessions() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<SessionView> v;
  v.reserve(tables_.sessions.size());
  for (const auto& [sid, s] : tables_.sessions)
    v.push_back(SessionView{s, s.owner >= 0 && s.owner < opts_.size && alive_[s.owner]});
  return v;
}

Status Node::SetDisp(uint64_t sid, uint64_t fsid, uint64_t events) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!tables_.Find(sid)) return InvalidArgument("no session " + std::to_string(sid));
  // Checked here too so the common conflict costs no round trip; the SM
  // checks again against the authoritative tables.
  PDM_RETURN_IF_ERROR(tables_.CheckDisp(sid, fsid, events));
  SmCall c;
  c.op = wire::SmOp::SetDisp;
  c.sid = sid;
  c.fsid = fsid;
  c.events = events;
  auto r = CallSm(lk, std::move(c));
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> Node::GetAllDisp(uint64_t sid) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!tables_.Find(sid)) return InvalidArgument("no session " + std::to_string(sid));
  std::vector<std::pair<uint64_t, uint64_t>> v;
  for (const auto& [k, ev] : tables_.disps)
    if (k.second == sid) v.emplace_back(k.first, ev);
  return v;
}

Status Node::SetFsEvents(uint64_t sid, uint64_t fsid, uint64_t events) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!tables_.Find(sid)) return InvalidArgument("no session " + std::to_string(sid));
  SmCall c;
  c.op = wire::SmOp::SetFsEvents;
  c.sid = sid;
  c.fsid = fsid;
  c.events = events;
  auto r = CallSm(lk, std::move(c));
  return r.ok() ? Status::Ok() : r.status();
}

uint64_t Node::GetFsEvents(uint64_t fsid) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = tables_.fs_events.find(fsid);
  return it == tables_.fs_events.end() ? 0 : it->second;
}

Result<std::vector<QueuedEvent>> Node::TakeEvents(SessionQueue& q, unsigned max_msgs, size_t max_bytes,
                                                  size_t overhead, size_t* needed) {
  std::vector<QueuedEvent> out;
  // A message takes overhead + payload, 8-aligned, in the caller's buffer.
  auto size_of = [&](const QueuedEvent& e) { return (overhead + e.payload.size() + 7) & ~size_t(7); };
  if (max_bytes != 0 && !q.pending.empty() && size_of(q.pending.front()) > max_bytes) {
    // Nothing is dequeued: the caller learns the size and asks again.
    if (needed) *needed = size_of(q.pending.front());
    return InvalidArgument("buffer too small for the first event", E2BIG);
  }
  size_t used = 0;
  while (!q.pending.empty() && (max_msgs == 0 || out.size() < max_msgs)) {
    if (max_bytes != 0 && used + size_of(q.pending.front()) > max_bytes) break;
    used += size_of(q.pending.front());
    QueuedEvent ev = std::move(q.pending.front());
    q.pending.pop_front();
    if (ev.sync && !ev.notice) {
      q.outstanding.emplace(ev.token, ev);
    } else {
      ev.token = 0;  // asynchronous events carry DM_INVALID_TOKEN
    }
    out.push_back(std::move(ev));
  }
  return out;
}

uint64_t Node::GetEventsAsync(uint64_t sid, unsigned max_msgs, bool wait, size_t max_bytes, size_t overhead,
                              EventsDone done) {
  // An answer must fit one local frame: never hand out more than that.
  constexpr size_t kMaxAnswer = wire::kMaxLocalFrame - (1u << 20);
  if (max_bytes == 0 || max_bytes > kMaxAnswer) max_bytes = kMaxAnswer;
  std::unique_lock<std::mutex> lk(mu_);
  Status st = CheckOwnSession(sid);
  if (st.ok() && stopping_) st = Aborted("node agent is stopping", EINTR);
  if (!st.ok()) {
    lk.unlock();
    done(st, 0);
    return 0;
  }
  SessionQueue& q = queues_[sid];
  if (!q.pending.empty() || !wait) {
    size_t needed = 0;
    Result<std::vector<QueuedEvent>> r =
        q.pending.empty() ? Result<std::vector<QueuedEvent>>(Unavailable("no events for session " +
                                                                         std::to_string(sid), EAGAIN))
                          : TakeEvents(q, max_msgs, max_bytes, overhead, &needed);
    lk.unlock();
    done(std::move(r), needed);
    return 0;
  }
  const uint64_t id = next_waiter_++;
  waiters_[sid].push_back(Waiter{id, max_msgs, max_bytes, overhead, std::move(done)});
  waiter_sid_[id] = sid;
  return id;
}

bool Node::CancelGetEvents(uint64_t waiter, const Status& why) {
  EventsDone done;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto s = waiter_sid_.find(waiter);
    if (s == waiter_sid_.end()) return false;  // answered already, or being answered
    auto& ws = waiters_[s->second];
    for (auto it = ws.begin(); it != ws.end(); ++it)
      if (it->id == waiter) {
        done = std::move(it->done);
        ws.erase(it);
        break;
      }
    if (ws.empty()) waiters_.erase(s->second);
    waiter_sid_.erase(s);
  }
  if (done) done(why, 0);
  return true;
}

Result<std::vector<QueuedEvent>> Node::GetEvents(uint64_t sid, unsigned max_msgs, bool wait, unsigned timeout_ms,
                                                 size_t max_bytes, size_t overhead, size_t* needed) {
  struct Wait {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    Result<std::vector<QueuedEvent>> r = Internal("pending");
    size_t needed = 0;
  };
  auto w = std::make_shared<Wait>();
  const uint64_t id =
      GetEventsAsync(sid, max_msgs, wait, max_bytes, overhead, [w](Result<std::vector<QueuedEvent>> r, size_t n) {
        std::lock_guard<std::mutex> l(w->m);
        w->r = std::move(r);
        w->needed = n;
        w->done = true;
        w->cv.notify_all();
      });
  std::unique_lock<std::mutex> l(w->m);
  if (id != 0 && timeout_ms != 0 &&
      !w->cv.wait_for(l, std::chrono::milliseconds(timeout_ms), [&] { return w->done; })) {
    l.unlock();
    CancelGetEvents(id, Unavailable("no events for session " + std::to_string(sid) + " within timeout", EAGAIN));
    l.lock();
  }
  w->cv.wait(l, [&] { return w->done; });
  if (needed) *needed = w->needed;
  return std::move(w->r);
}

Status Node::Respond(uint64_t sid, uint64_t token, int response, int err) {
  Outbox out;
  {
    std::lock_guard<std::mutex> lk(mu_);
    PDM_RETURN_IF_ERROR(CheckOwnSession(sid));
    if (token == 0 || token == ~uint64_t(0)) return InvalidArgument("DM_NO_TOKEN / DM_INVALID_TOKEN");
    SessionQueue& q = queues_[sid];
    auto it = q.outstanding.find(token);
    if (it == q.outstanding.end())
      return NotFound("token " + std::to_string(token) + " is not outstanding on session " + std::to_string(sid),
                      ESRCH);
    switch (response) {
      case kRespContinue:
        if (err != 0) return InvalidArgument("DM_RESP_CONTINUE with a nonzero reterror");
        break;
      case kRespAbort:
        if (err <= 0) return InvalidArgument("DM_RESP_ABORT needs a positive reterror");
        break;
      case kRespDontCare:
        if (it->second.type != kEventMount) return InvalidArgument("DM_RESP_DONTCARE is valid only for mount events");
        break;
      default:
        return InvalidArgument("invalid response " + std::to_string(response));
    }
    QueuedEvent ev = std::move(it->second);
    q.outstanding.erase(it);
    // Answering an event releases every right its token holds or asked for.
    held_rights_.erase(token);
    if (right_tokens_.erase(token)) ReleaseTokenRights(token, out);
    if (ev.raiser == opts_.rank) {
      FinishRaised(token, response, err, out);
    } else if (ev.raiser >= 0 && ev.raiser < opts_.size && alive_[ev.raiser]) {
      out.frames.emplace_back(ev.raiser, Envelope(wire::Body::EventResponse, [&](Fbb& fbb) {
                                return wire::CreateEventResponse(fbb, token, sid, response, err);
                              }));
    }
  }
  Flush(out);
  return Status::Ok();
}

Result<uint64_t> Node::CreateUserEvent(uint64_t sid, std::vector<uint8_t> payload) {
  std::lock_guard<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckOwnSession(sid));
  QueuedEvent ev;
  ev.token = (uint64_t(opts_.rank + 1) << 48) | next_token_++;
  ev.sid = sid;
  ev.type = kEventUser;
  ev.sync = true;
  ev.raiser = -1;  // nobody waits for the answer
  ev.payload = std::move(payload);
  SessionQueue& q = queues_[sid];
  ev.sequence = q.next_sequence++;
  const uint64_t token = ev.token;
  q.outstanding.emplace(token, std::move(ev));  // outstanding at once: never delivered
  return token;
}

Status Node::MoveEvent(uint64_t src, uint64_t token, uint64_t dst) {
  std::lock_guard<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckOwnSession(src));
  PDM_RETURN_IF_ERROR(CheckOwnSession(dst));
  SessionQueue& from = queues_[src];
  auto it = from.outstanding.find(token);
  if (it == from.outstanding.end())
    return NotFound("token " + std::to_string(token) + " is not outstanding on session " + std::to_string(src),
                    ENOENT);
  QueuedEvent ev = std::move(it->second);
  from.outstanding.erase(it);
  ev.sid = dst;
  // The raiser answers by token, so the answer from dst reaches it unchanged.
  queues_[dst].outstanding.emplace(token, std::move(ev));
  return Status::Ok();
}

Status Node::Rewatch(uint64_t sid, const std::string& object) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!tables_.Find(sid)) return InvalidArgument("no session " + std::to_string(sid));
  // Group broadcast: while one Rewatch broadcast is out, the objects of
  // every caller that comes meanwhile queue for the next, which one of them
  // sends for all. An HSM request gives hundreds of files their regions side
  // by side; one broadcast per file was a fifth of a small-file migrate.
  if (!rewatch_next_) rewatch_next_ = std::make_shared<RewatchBatch>();
  std::shared_ptr<RewatchBatch> mine = rewatch_next_;
  mine->objects.push_back(object);
  cv_.wait(lk, [&] { return stopping_ || mine->done || !rewatch_inflight_; });
  if (mine->done) return mine->st;
  if (stopping_) return Aborted("node agent is stopping", EINTR);
  rewatch_inflight_ = true;
  rewatch_next_.reset();
  SmCall c;
  c.op = wire::SmOp::Rewatch;
  c.sid = sid;
  c.objects = std::move(mine->objects);
  spdlog::trace("rewatch: one broadcast for {} files", c.objects.size());
  auto r = CallSm(lk, std::move(c));
  mine->st = r.ok() ? Status::Ok() : r.status();
  mine->done = true;
  rewatch_inflight_ = false;
  cv_.notify_all();
  return mine->st;
}

Status Node::Pending(uint64_t sid, uint64_t token) {
  std::lock_guard<std::mutex> lk(mu_);
  return CheckToken(sid, token);
}

Result<std::vector<QueuedEvent>> Node::Outstanding(uint64_t sid) {
  std::lock_guard<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckOwnSession(sid));
  std::vector<QueuedEvent> v;
  for (const auto& [t, e] : queues_[sid].outstanding) v.push_back(e);
  return v;
}

Result<QueuedEvent> Node::FindEvent(uint64_t sid, uint64_t token, bool with_payload) {
  std::unique_lock<std::mutex> lk(mu_);
  const SessionRecord* rec = tables_.Find(sid);
  if (!rec) return InvalidArgument("no session " + std::to_string(sid));
  if (rec->owner == opts_.rank) {
    auto& q = queues_[sid];
    auto it = q.outstanding.find(token);
    if (it == q.outstanding.end()) return NotFound("token not outstanding", ESRCH);
    if (with_payload) return it->second;
    return it->second.Head();
  }
  const int owner = rec->owner;
  if (owner < 0 || owner >= opts_.size || !alive_[owner])
    return NotFound("the session's node is down: its tokens cannot be checked", ESRCH);
  const uint64_t req = next_req_id_++;
  token_calls_[req].rank = owner;
  Outbox out;
  out.frames.emplace_back(owner, Envelope(wire::Body::TokenQuery, [&](Fbb& fbb) {
                            return wire::CreateTokenQuery(fbb, req, sid, token, !with_payload);
                          }));
  lk.unlock();
  Flush(out);
  lk.lock();
  // OnPeerDown and Stop wake us; the bound covers a reply lost otherwise.
  cv_.wait_for(lk, std::chrono::milliseconds(opts_.session_failure_timeout_ms + 1000), [&] {
    const TokenCall& c = token_calls_.at(req);
    return stopping_ || c.done || !alive_[c.rank];
  });
  TokenCall c = std::move(token_calls_.at(req));
  token_calls_.erase(req);
  if (!c.done) return NotFound("the session's node did not answer for the token", ESRCH);
  if (c.err != 0) return FromErrno(c.err, "token not outstanding on its session node");
  c.ev.token = token;
  c.ev.sid = sid;
  return c.ev;
}

void Node::HandleTokenQuery(int origin, const wire::TokenQuery& q, Outbox& out) {
  int err = 0;
  const QueuedEvent* ev = nullptr;
  const SessionRecord* rec = tables_.Find(q.sid());
  if (!rec || rec->owner != opts_.rank) {
    err = ESRCH;
  } else {
    auto& queue = queues_[q.sid()];
    auto it = queue.outstanding.find(q.token());
    if (it == queue.outstanding.end()) err = ESRCH; else ev = &it->second;
  }
  out.frames.emplace_back(origin, Envelope(wire::Body::TokenReply, [&](Fbb& fbb) {
                            auto payload = fbb.CreateVector(ev && !q.no_payload() ? ev->payload : std::vector<uint8_t>{});
                            return wire::CreateTokenReply(fbb, q.req_id(), err, ev ? uint8_t(ev->type) : 0,
                                                          ev && ev->sync, ev ? ev->raiser : -1, ev ? ev->fsid : 0,
                                                          payload, ev ? ev->sequence : 0);
                          }));
}

void Node::CompleteTokenCall(int peer, const wire::TokenReply& r) {
  auto it = token_calls_.find(r.req_id());
  if (it == token_calls_.end() || it->second.rank != peer) return;
  TokenCall& c = it->second;
  c.done = true;
  c.err = r.err();
  if (c.err == 0) {
    c.ev.type = r.type();
    c.ev.sync = r.sync();
    c.ev.raiser = r.raiser();
    c.ev.fsid = r.fsid();
    c.ev.sequence = r.sequence();
    if (r.payload()) c.ev.payload.assign(r.payload()->begin(), r.payload()->end());
  }
  cv_.notify_all();
}

int Node::session_manager() {
  std::lock_guard<std::mutex> lk(mu_);
  return sm_;
}

ClusterView Node::Cluster() {
  std::lock_guard<std::mutex> lk(mu_);
  ClusterView v;
  v.rank = opts_.rank;
  v.session_manager = sm_;
  v.nodes = opts_.nodes;
  v.alive = alive_;
  return v;
}

}  // namespace pdm

namespace pdm {

// ---------------------------------------------------------------------------
// Rights. The SM holds the one lock table; the session node keeps what its
// tokens hold (to answer queries and to report to a new SM).

namespace {
constexpr int kRightNull = 0, kRightShared = 1, kRightExcl = 2;
}

Status Node::CheckToken(uint64_t sid, uint64_t token) const {
  PDM_RETURN_IF_ERROR(CheckOwnSession(sid));
  if (token == 0 || token == ~uint64_t(0)) return InvalidArgument("DM_NO_TOKEN / DM_INVALID_TOKEN");
  auto q = queues_.find(sid);
  if (q == queues_.end() || !q->second.outstanding.count(token))
    return NotFound("token " + std::to_string(token) + " is not outstanding on session " + std::to_string(sid),
                    ESRCH);
  return Status::Ok();
}

bool Node::TryGrant(const std::string& object, uint64_t token, int right, int holder) {
  auto& holders = rights_[object];
  for (const auto& [t, h] : holders)
    if (t != token && (right == kRightExcl || h.right == kRightExcl)) return false;
  holders[token] = Hold{right, holder};
  return true;
}

void Node::RetryParked(Outbox& out) {
  for (auto it = parked_.begin(); it != parked_.end();) {
    if (TryGrant(it->object, it->token, it->right, it->origin)) {
      ReplySm(it->origin, it->req_id, 0, 0, out);
      it = parked_.erase(it);
    } else {
      ++it;
    }
  }
}

void Node::DropRightsOf(int rank, Outbox& out) {
  // GPFS semantics: a failed session node's tokens, and their rights, are gone.
  for (auto& [obj, holders] : rights_) std::erase_if(holders, [&](const auto& kv) { return kv.second.holder == rank; });
  std::erase_if(parked_, [&](const Parked& p) { return p.origin == rank; });
  RetryParked(out);
}

void Node::ReleaseTokenRights(uint64_t token, Outbox& out) {
  SmCall c;
  c.op = wire::SmOp::ReleaseToken;
  c.token = token;
  c.detached = true;
  const uint64_t req_id = next_req_id_++;
  auto [it, inserted] = sm_calls_.emplace(req_id, std::move(c));
  if (sm_ready_) SendSmCall(req_id, it->second, out);
}

void Node::HandleRightRequest(int origin, const wire::SmRequest& r, Outbox& out) {
  const std::string object = r.object() ? r.object()->str() : "";
  switch (r.op()) {
    case wire::SmOp::RequestRight:
      if (r.right() != kRightShared && r.right() != kRightExcl)
        return ReplySm(origin, r.req_id(), EINVAL, 0, out);
      if (TryGrant(object, r.token(), r.right(), origin)) {
        ReplySm(origin, r.req_id(), 0, 0, out);
        return RetryParked(out);  // a downgrade to SHARED may admit waiters
      }
      if (!r.wait()) return ReplySm(origin, r.req_id(), EAGAIN, 0, out);
      parked_.push_back(Parked{origin, r.req_id(), r.token(), object, r.right()});
      return;
    case wire::SmOp::ReleaseRight:
      if (auto it = rights_.find(object); it != rights_.end()) {
        it->second.erase(r.token());
        if (it->second.empty()) rights_.erase(it);
      }
      ReplySm(origin, r.req_id(), 0, 0, out);
      return RetryParked(out);
    case wire::SmOp::ReleaseToken:
      for (auto it = rights_.begin(); it != rights_.end();) {
        it->second.erase(r.token());
        it = it->second.empty() ? rights_.erase(it) : std::next(it);
      }
      for (auto it = parked_.begin(); it != parked_.end();) {
        if (it->token != r.token()) {
          ++it;
          continue;
        }
        ReplySm(it->origin, it->req_id, ESRCH, 0, out);  // the token was answered
        it = parked_.erase(it);
      }
      ReplySm(origin, r.req_id(), 0, 0, out);
      return RetryParked(out);
    default:
      return ReplySm(origin, r.req_id(), EINVAL, 0, out);
  }
}

Status Node::RequestRight(uint64_t sid, uint64_t token, const std::string& object, int right, bool wait) {
  if (right != kRightShared && right != kRightExcl) return InvalidArgument("right must be SHARED or EXCL");
  std::unique_lock<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckToken(sid, token));
  int cur = kRightNull;
  if (auto t = held_rights_.find(token); t != held_rights_.end())
    if (auto o = t->second.find(object); o != t->second.end()) cur = o->second;
  if (cur >= right) return Status::Ok();  // holding it (or more) already
  right_tokens_.insert(token);
  SmCall c;
  c.op = wire::SmOp::RequestRight;
  c.sid = sid;
  c.token = token;
  c.object = object;
  c.right = right;
  c.wait = wait;
  auto r = CallSm(lk, std::move(c));
  if (!r.ok()) return r.status().err() == EAGAIN ? Unavailable("right is held by another token", EAGAIN) : r.status();
  if (Status still = CheckToken(sid, token); !still.ok()) {
    // Answered while we waited: the grant belongs to nobody. Give it back.
    Outbox out;
    ReleaseTokenRights(token, out);
    lk.unlock();
    Flush(out);
    return still;
  }
  held_rights_[token][object] = right;
  return Status::Ok();
}

Status Node::ReleaseRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::unique_lock<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckToken(sid, token));
  auto t = held_rights_.find(token);
  if (t == held_rights_.end() || !t->second.erase(object))
    return PermissionDenied("token holds no right on that object", EACCES);
  if (t->second.empty()) held_rights_.erase(t);
  SmCall c;
  c.op = wire::SmOp::ReleaseRight;
  c.sid = sid;
  c.token = token;
  c.object = object;
  auto r = CallSm(lk, std::move(c));
  return r.ok() ? Status::Ok() : r.status();
}

Result<int> Node::QueryRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::lock_guard<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckToken(sid, token));
  auto t = held_rights_.find(token);
  if (t == held_rights_.end()) return kRightNull;
  auto o = t->second.find(object);
  return o == t->second.end() ? kRightNull : o->second;
}

Status Node::UpgradeRight(uint64_t sid, uint64_t token, const std::string& object) {
  auto cur = QueryRight(sid, token, object);
  if (!cur.ok()) return cur.status();
  if (*cur == kRightNull) return PermissionDenied("no right to upgrade", EACCES);
  if (*cur == kRightExcl) return Status::Ok();
  // Upgrade does not wait: another SHARED holder makes it EAGAIN (as XFS).
  return RequestRight(sid, token, object, kRightExcl, false);
}

Status Node::DowngradeRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::unique_lock<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(CheckToken(sid, token));
  auto t = held_rights_.find(token);
  if (t == held_rights_.end() || !t->second.count(object) || t->second[object] != kRightExcl)
    return PermissionDenied("token does not hold DM_RIGHT_EXCL on that object", EACCES);
  SmCall c;
  c.op = wire::SmOp::RequestRight;  // SHARED over our own EXCL: always granted
  c.sid = sid;
  c.token = token;
  c.object = object;
  c.right = kRightShared;
  auto r = CallSm(lk, std::move(c));
  if (!r.ok()) return r.status();
  held_rights_[token][object] = kRightShared;
  Outbox out;
  RetryParked(out);  // a no-op unless we are the SM: the SM retries on grant
  lk.unlock();
  Flush(out);
  return Status::Ok();
}

}  // namespace pdm
