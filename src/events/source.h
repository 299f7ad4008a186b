// EventSource: file I/O on this node's view of the file system becomes DM
// data events at this node's rank (claims 17-19; blueprint section 3).
//
// One fanotify pre-content group per node agent, with a mount mark on the
// node's view for FAN_PRE_ACCESS: every read, write, truncate or mmap through
// this view (and only this view: bind-mounted views are separate mounts)
// blocks in the kernel until we answer. For each access:
//   * the file has no managed regions -> answer FAN_ALLOW and add an
//     evictable ignore mark on the inode, so later accesses to the file raise
//     nothing: an unmanaged file pays one event, once (until its inode leaves
//     the cache). dm_set_region makes every node drop that mark (Rewatch)
//     before it returns, so a file that becomes managed is watched again;
//   * the access touches no managed region, or its event is not enabled (the
//     file's or the file system's event list) -> FAN_ALLOW;
//   * else a synchronous DM_EVENT_READ / WRITE / TRUNCATE (dm_data_event_t:
//     handle, offset, length of the access) is routed by disposition; the
//     session's answer maps back: CONTINUE -> FAN_ALLOW, ABORT(err) ->
//     FAN_DENY with err. No session holding the disposition -> EIO: a managed
//     range may be a hole, and a hole must never be read as data.
// The kernel reports every access as FAN_PRE_ACCESS (no read/write bit), so
// the event type comes from the touched regions' flags: READ if one has
// DM_REGION_READ, else WRITE, else TRUNCATE.
//
// Accesses by DM applications (processes connected to this node's DMAPI
// socket, and the agent itself) raise no data events: that is how
// dm_read_invis / dm_write_invis stay invisible and a DM application can
// never deadlock on its own I/O.
//
// The group itself is held by the node's event supervisor (pdm-eventd,
// events/supervisor.h), which Start() attaches to or spawns: the events come
// over its socket and the answers go straight to the group by event id, so
// a kill -9 of this agent leaves every waiting access waiting (or failing
// with EIO after the event timeout) instead of reading holes, and the next
// agent to attach gets them again.
//
// When the supervisor dies instead, this agent holds the group's only other
// fd, so nothing is allowed through; it starts a new supervisor and hands it
// the group. The accesses the dead one had read stay in the kernel under the
// dead one's fd numbers, and the new one's event fds get the same small
// numbers: an answer by number would reach the oldest access with it, i.e.
// allow a dead supervisor's access (a stub read as zeros) and leave the new
// one hanging. So before anything reads the group again, the agent fails
// every number the dead supervisor could have used (below its fd limit)
// with EIO; only then does the new supervisor start. Those accesses fail
// with EIO, never zeros; new ones are served by the new supervisor.
//
// Thread-safety: Start/Stop from one thread; Rewatch from any thread. One
// reader thread; answers are written by whichever thread has them.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/node.h"
#include "common/posix.h"
#include "events/fanotify.h"

namespace pdm::events {

class EventSource {
 public:
  struct Options {
    std::string view;                       // this node's mount of the file system
    std::function<bool(int pid)> is_dm_app;  // exempt from data events
    std::string supervisor_socket;          // where the node's pdm-eventd listens
    std::string supervisor_exe;             // started when none listens ("" = never)
    std::string supervisor_log;             // its stdout/stderr ("" = /dev/null)
    // Accesses that wait for an agent fail with EIO after this long with no
    // agent attached; 0 = wait for the next agent, however long.
    int64_t event_timeout_ms = 0;
  };
  EventSource(Options opts, Node* node);
  ~EventSource();
  EventSource(const EventSource&) = delete;
  EventSource& operator=(const EventSource&) = delete;

  // Attaches to the node's supervisor (starting one if none listens), which
  // owns the group and the mount mark. EOPNOTSUPP when the file system has
  // no pre-content support (the agent then runs without kernel events).
  Status Start();
  void Stop();
  // A file got managed regions: drop its ignore mark here.
  void Rewatch(const std::string& handle_bytes);
  uint64_t fsid() const { return fsid_; }

 private:
  struct Pending {
    FanotifyEvent ev;
    uint64_t link = 0;  // which supervisor connection it came over
  };
  // Connects (spawning the supervisor if needed), attaches, takes the group.
  Status Attach();
  // The supervisor we were attached to exited (waits up to wait_ms for its
  // exit): fail with EIO every access it had read, so none of their ids can
  // be answered for another access. Unavailable while it still runs (it
  // keeps its accesses and hands them out again); OK when it is gone or
  // there is none to wait for. Called with no link.
  Status FailAccessesOfDeadSupervisor(int wait_ms);
  void Run();
  void OnEvent(std::shared_ptr<Pending> p);
  void Answer(const Pending& p, bool allow, int err);

  const Options opts_;
  Node* const node_;
  UniqueFd view_fd_;  // for open_by_handle_at in Rewatch
  uint64_t fsid_ = 0;
  std::mutex group_mu_;  // answers and kDone (any thread) vs reattach and Stop
  UniqueFd link_;        // the supervisor connection
  uint64_t link_gen_ = 0;  // bumped per connection: older events' ids are void
  std::unique_ptr<FanotifyGroup> group_;  // our copy of the supervisor's group
  // The supervisor that welcomed us (its exit is how we know its ids are
  // free) and its fd limit (every id it hands out is below it). Reader
  // thread only.
  UniqueFd sup_pidfd_;
  int sup_fd_limit_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace pdm::events
