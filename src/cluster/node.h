// Node: the cluster half of a node agent — membership, the session manager
// role, the replicated tables, event routing and failure recovery.
//
// Every rank runs one Node. The lowest live rank is the session manager (SM):
// it validates every change to sessions, dispositions and event lists,
// assigns session ids, and distributes each change down a k-nomial tree to
// every node; a change's requester gets its answer only once every live node
// has applied it, so a session is visible everywhere when
// dm_create_session returns. Events are routed by the raising node from its
// own replica, straight to the session's node, without asking the SM.
//
// Failures (claims 3-4, blueprint section 2):
//  * SM dies: the next lowest live rank asks every live node for its tables,
//    adopts the most advanced replica, takes a higher term (so new session
//    ids never repeat) and broadcasts the rebuilt tables; requests in flight
//    are re-sent to it and de-duplicated.
//  * A session node dies: its sessions stay in the tables; synchronous events
//    raised for them wait (with their tokens) until the session is assumed
//    with dm_create_session(oldsid) on any node, then are re-sent there; if
//    nobody assumes it within session_failure_timeout_ms they fail with EIO.
//
// Thread-safety: all public methods may be called concurrently from any
// thread; state is guarded by mu_. Blocking calls (Raise of a synchronous
// event, GetEvents with wait, SM requests) wait on cv_ without holding mu_.
// Network sends are collected in an Outbox under mu_ and sent after it is
// released, so a slow peer never stalls the lock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/tables.h"
#include "cluster/types.h"
#include "common/status.h"
#include "transport/transport.h"

namespace pdm {

struct NodeOptions {
  int rank = 0;
  int size = 1;
  int radix = 4;                            // k of the broadcast tree
  int session_failure_timeout_ms = 60000;   // then pending events of a dead session fail EIO
  int max_sessions_per_node = 4000;         // GPFS's documented limit
  std::string state_dir;                    // cluster.json goes here (SM writes it)
  std::vector<NodeStatic> nodes;            // indexed by rank
  // Called (with mu_ held; must not call back into the Node) when a file
  // got managed regions anywhere in the cluster: the event source drops any
  // "this file needs no events" shortcut it keeps for it. `object` is the
  // file's DM handle bytes.
  std::function<void(const std::string& object)> rewatch;
};

class Node final : public Transport::Handler {
 public:
  // `transport` must outlive the Node and be started with this Node as handler.
  Node(NodeOptions opts, Transport* transport);
  ~Node() override;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Starts the timer thread; the SM writes cluster.json.
  void Start();
  // Wakes every blocked caller (they get EINTR) and stops the timer thread.
  void Stop();

  // --- session calls (claims 1-2, 9-14, 16) -------------------------------
  // oldsid == 0: a new session owned by this node. Otherwise assume oldsid
  // (same id), allowed when its node has failed or it is already ours.
  Result<uint64_t> CreateSession(uint64_t oldsid, const std::string& info, const std::string& group = "");
  // Session node only; EBUSY while it holds undelivered or unanswered events.
  Status DestroySession(uint64_t sid);
  Status ModifySession(uint64_t sid, const std::string& info);
  Result<SessionView> QuerySession(uint64_t sid);
  std::vector<SessionView> AllSessions();

  // --- dispositions and event lists (claims 6-8), from any node -----------
  Status SetDisp(uint64_t sid, uint64_t fsid, uint64_t events);
  Result<std::vector<std::pair<uint64_t, uint64_t>>> GetAllDisp(uint64_t sid);
  Status SetFsEvents(uint64_t sid, uint64_t fsid, uint64_t events);
  uint64_t GetFsEvents(uint64_t fsid);

  // --- events (session node) ----------------------------------------------
  // Up to max_msgs (0 = all) events; EAGAIN if none and !wait; waits up to
  // timeout_ms (0 = forever) and then fails EAGAIN.
  // The asynchronous forms behind GetEvents and Raise. `done` runs exactly
  // once: in the calling thread before return when the answer is at hand,
  // else later on the thread that produces it (the one that queued the event
  // or received the response), after mu_ is released — so an event reaches a
  // waiting DM application without an extra thread wake-up on the way.
  using EventsDone = std::function<void(Result<std::vector<QueuedEvent>> events, size_t needed)>;
  using RaiseDone = std::function<void(Result<RaiseOutcome>)>;
  // Returns a waiter id for CancelGetEvents, or 0 when `done` already ran.
  uint64_t GetEventsAsync(uint64_t sid, unsigned max_msgs, bool wait, size_t max_bytes, size_t overhead,
                          EventsDone done);
  // Runs a parked get-events' `done` with `why` and returns true; false if
  // it has run or is being run by another thread.
  bool CancelGetEvents(uint64_t waiter, const Status& why);
  void RaiseAsync(const RaiseSpec& spec, RaiseDone done);

  // max_bytes (0 = no limit): hand out only what fits when each event takes
  // overhead + payload bytes (8-aligned); if even the first does not fit,
  // nothing is dequeued, *needed gets its size and the call fails E2BIG.
  Result<std::vector<QueuedEvent>> GetEvents(uint64_t sid, unsigned max_msgs, bool wait, unsigned timeout_ms,
                                             size_t max_bytes = 0, size_t overhead = 0, size_t* needed = nullptr);
  // dm_create_userevent: a token outstanding on sid at once, never delivered.
  Result<uint64_t> CreateUserEvent(uint64_t sid, std::vector<uint8_t> payload);
  // dm_move_event: both sessions on this node; the token keeps its value.
  Status MoveEvent(uint64_t src, uint64_t token, uint64_t dst);
  // dm_pending: validates the token (no event timeout to extend today).
  Status Pending(uint64_t sid, uint64_t token);
  // After dm_set_region: returns once every live node's event source
  // watches `object` (its DM handle) again. sid must exist.
  Status Rewatch(uint64_t sid, const std::string& object);
  // CONTINUE (err 0) or ABORT (err > 0) for an outstanding synchronous token.
  Status Respond(uint64_t sid, uint64_t token, int response, int err);
  // Tokens delivered and not yet answered (dm_getall_tokens).
  Result<std::vector<QueuedEvent>> Outstanding(uint64_t sid);
  // From any node: a session owned elsewhere is asked over the transport
  // (TokenQuery), so a worker node can check the (sid, token) it was handed.
  // ESRCH when the token is not outstanding (or its session node is gone).
  Result<QueuedEvent> FindEvent(uint64_t sid, uint64_t token, bool with_payload = true);

  // Raises an event on this node (the node agent API; later the kernel event
  // source). A synchronous event blocks until the session answers, or EIO
  // after the session failure timeout.
  Result<RaiseOutcome> Raise(const RaiseSpec& spec);

  // --- DM rights, cluster-wide (session node; token outstanding there) -----
  // The SM keeps the one lock table, so two tokens on two nodes never both
  // hold EXCL on an object. `object` is the object's DM handle bytes.
  // Not available now and !wait: EAGAIN. Rights die with the token's answer.
  Status RequestRight(uint64_t sid, uint64_t token, const std::string& object, int right, bool wait);
  Status ReleaseRight(uint64_t sid, uint64_t token, const std::string& object);
  Result<int> QueryRight(uint64_t sid, uint64_t token, const std::string& object);
  Status UpgradeRight(uint64_t sid, uint64_t token, const std::string& object);
  Status DowngradeRight(uint64_t sid, uint64_t token, const std::string& object);

  ClusterView Cluster();
  int rank() const { return opts_.rank; }
  int session_manager();
  // The DM events this node generates (dm_get_config_events): user events
  // always, data events when the kernel event source runs.
  void SetGeneratedEvents(uint64_t mask) { generated_events_ = mask; }
  uint64_t generated_events() const { return generated_events_; }

  // --- Transport::Handler --------------------------------------------------
  void OnFrame(int peer, std::span<const uint8_t> frame) override;
  void OnPeerDown(int peer, const Status& why) override;

 private:
  using Frame = std::vector<uint8_t>;
  struct Outbox {
    std::vector<std::pair<int, Frame>> frames;
    std::vector<std::function<void()>> calls;  // answers to local callers
    bool write_cluster_json = false;
  };

  // A request this node sent to the SM; re-sent after every SM change.
  struct SmCall {
    wire::SmOp op;
    uint64_t sid = 0;
    std::string info, group;
    uint64_t fsid = 0, events = 0;
    int rank = -1;
    uint64_t token = 0;
    std::string object;
    std::vector<std::string> objects;  // Rewatch
    int right = 0;
    bool wait = false;
    bool detached = false;  // nobody waits: forgotten once answered
    bool done = false;
    int err = 0;
    uint64_t result_sid = 0;
  };
  // A broadcast in progress at this node.
  struct Bcast {
    Frame frame;                 // the Update, to re-forward to orphans
    std::vector<int> members;
    int radix = 4;
    std::set<int> waiting;       // ranks whose ack is outstanding
    std::vector<int> ack_to;     // senders to ack when complete (-1: root)
    // At the root: who asked for it.
    int origin = -1;
    uint64_t req_id = 0;
    int err = 0;
    uint64_t sid = 0;
    bool snapshot = false;
  };
  // A sync event raised here and not yet answered, or an async one held
  // while its session's node is down.
  struct Raised {
    QueuedEvent ev;
    int sent_to = -1;                // rank it was last sent to
    int64_t orphan_deadline_ns = 0;  // set while the session's node is dead
    RaiseDone on_done;               // sync: who waits for the answer
  };
  struct SessionQueue {
    std::deque<QueuedEvent> pending;            // not yet handed out
    std::map<uint64_t, QueuedEvent> outstanding;  // handed out, unanswered
    uint64_t next_sequence = 1;
  };
  // A get-events parked until an event arrives.
  struct Waiter {
    uint64_t id;
    unsigned max_msgs;
    size_t max_bytes, overhead;
    EventsDone done;
  };

  // Locked helpers (mu_ held).
  Result<uint64_t> CallSm(std::unique_lock<std::mutex>& lk, SmCall call);
  void SendSmCall(uint64_t req_id, const SmCall& c, Outbox& out);
  using ChangeBuilder = std::function<flatbuffers::Offset<wire::Change>(flatbuffers::FlatBufferBuilder&)>;
  // Root only: applies the changes (or, with snapshot, the whole tables) here
  // and sends them down the tree; replies to (origin, req_id) when every live
  // node has applied them. origin -1: nobody to reply to.
  void Broadcast(const std::vector<ChangeBuilder>& changes, bool snapshot, int origin, uint64_t req_id, uint64_t sid,
                 Outbox& out);
  void HandleSmRequest(int origin, const wire::SmRequest& r, std::span<const uint8_t> frame, Outbox& out);
  void HandleUpdate(int from, const wire::Update& u, std::span<const uint8_t> frame, Outbox& out);
  void ApplyUpdate(const wire::Update& u, Outbox& out);
  void ForwardTo(Bcast& b, const std::vector<int>& positions, Outbox& out);
  void HandleAck(int from, uint64_t bcast_id, Outbox& out);
  void CompleteBcast(uint64_t bcast_id, Outbox& out);
  void BecomeSmCandidate(Outbox& out);
  void FinishRebuild(Outbox& out);
  void OnSmChanged(Outbox& out);
  void QueueEvent(QueuedEvent ev, Outbox& out);
  void AdoptStrays(uint64_t sid, Outbox& out);
  Result<std::vector<QueuedEvent>> TakeEvents(SessionQueue& q, unsigned max_msgs, size_t max_bytes, size_t overhead,
                                              size_t* needed);
  void ServeWaiters(uint64_t sid, Outbox& out);
  void FailWaiters(uint64_t sid, const Status& why, Outbox& out);
  // false: the session is gone (the caller fails the event with EIO).
  bool SendEvent(Raised& r, Outbox& out);
  void ResendForSession(uint64_t sid, Outbox& out);
  void FinishRaised(uint64_t token, int response, int err, Outbox& out);
  void CompleteSmCall(uint64_t req_id, int err, uint64_t sid);
  void HandleTokenQuery(int origin, const wire::TokenQuery& q, Outbox& out);
  void CompleteTokenCall(int peer, const wire::TokenReply& r);
  void ReplySm(int origin, uint64_t req_id, int err, uint64_t sid, Outbox& out);
  int LowestAlive() const;
  std::vector<int> AliveRanks(int root) const;
  Status CheckOwnSession(uint64_t sid) const;
  Status CheckToken(uint64_t sid, uint64_t token) const;
  // SM side of rights.
  void HandleRightRequest(int origin, const wire::SmRequest& r, Outbox& out);
  bool TryGrant(const std::string& object, uint64_t token, int right, int holder);
  void RetryParked(Outbox& out);
  void DropRightsOf(int rank, Outbox& out);
  void ReleaseTokenRights(uint64_t token, Outbox& out);

  void Flush(Outbox& out);           // mu_ NOT held
  void WriteClusterJson();           // mu_ NOT held
  void TimerLoop();

  const NodeOptions opts_;
  Transport* const transport_;

  std::mutex mu_;
  std::condition_variable cv_;
  Tables tables_;
  std::vector<bool> alive_;
  int sm_ = 0;
  bool sm_ready_ = true;              // false while a new SM rebuilds
  bool rebuilding_ = false;           // I am the new SM, collecting reports
  std::set<int> awaiting_reports_;
  std::vector<Tables> reports_;
  std::vector<std::pair<int, Frame>> deferred_sm_requests_;
  uint64_t next_req_id_ = 1;
  std::map<uint64_t, SmCall> sm_calls_;
  // Rewatch callers waiting for one broadcast (see Rewatch).
  struct RewatchBatch {
    std::vector<std::string> objects;
    bool done = false;
    Status st;
  };
  std::shared_ptr<RewatchBatch> rewatch_next_;  // the batch the next broadcast carries
  bool rewatch_inflight_ = false;
  struct TokenCall {
    int rank = -1;  // asked
    bool done = false;
    int err = 0;
    QueuedEvent ev;
  };
  std::map<uint64_t, TokenCall> token_calls_;
  uint64_t next_bcast_ = 1;
  std::map<uint64_t, Bcast> bcasts_;
  std::map<uint64_t, bool> bcast_seen_;  // non-root: completed broadcasts (dedupe)
  uint64_t next_token_ = 1;
  std::map<uint64_t, Raised> raised_;
  std::map<uint64_t, SessionQueue> queues_;
  std::map<uint64_t, std::deque<Waiter>> waiters_;  // by session, FIFO
  std::map<uint64_t, uint64_t> waiter_sid_;         // waiter id -> session
  uint64_t next_waiter_ = 1;
  struct Stray {
    int64_t arrived_ns;
    QueuedEvent ev;
  };
  std::vector<Stray> strays_;  // events that arrived before their session did

  // Rights this node's tokens hold: token -> object -> right.
  std::map<uint64_t, std::map<std::string, int>> held_rights_;
  std::set<uint64_t> right_tokens_;  // tokens that ever asked for a right
  // SM only: the cluster's lock table and requests waiting on it (FIFO).
  struct Hold {
    int right;
    int holder;
  };
  std::map<std::string, std::map<uint64_t, Hold>> rights_;
  struct Parked {
    int origin;
    uint64_t req_id;
    uint64_t token;
    std::string object;
    int right;
  };
  std::deque<Parked> parked_;
  std::vector<std::pair<std::string, std::pair<uint64_t, Hold>>> reported_rights_;  // during rebuild
  bool stopping_ = false;

  std::atomic<uint64_t> generated_events_{uint64_t(1) << 22};  // DM_EVENT_USER
  std::thread timer_;
};

}  // namespace pdm
