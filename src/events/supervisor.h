// Supervisor: the process (pdm-eventd) that owns a node's fanotify
// pre-content group, so that no access to a released range ever reads zeros
// because the node agent died or restarted (issue 4, item 5).
//
// Why a separate process: closing the last fd of a group answers every
// pending event FAN_ALLOW (a stub then reads as zeros), and an event read by
// a process that dies stays pending under an fd number only that process
// knew. So the group, its mount mark and every unanswered event's fd live
// here, in a small single-threaded program that does no file I/O of its own
// and outlives any number of agents:
//
//   * it reads the group and forwards each permission event to the attached
//     agent (kEvent + the event fd); the agent answers on the group by the
//     event's id (our fd number) and reports kDone, and only then do we
//     close our fd, so an id is never reused while an answer may still come;
//   * when the agent's socket closes (kill -9, crash, clean exit) we keep
//     every event it had not finished and hand them again, same ids, to the
//     next agent that attaches; duplicates are harmless (answering an id
//     twice gets ENOENT from the kernel);
//   * while no agent is attached: an access to a file with no managed region
//     touching it is allowed at once (unmanaged files never hang on an agent
//     restart); any other access waits for the next agent, or, when the
//     agent asked for an event timeout, fails with EIO once it has waited
//     that long (default 0: wait, as GPFS does with dmapiEventTimeout
//     unset);
//   * when we die (kill -9), the agent holds the group, fails what we had
//     read with EIO (every id below our fd limit, which kWelcome tells it)
//     and starts the next supervisor with the group;
//   * SIGTERM / Stop() detaches the node from the file system: pending
//     accesses fail with EIO (never FAN_ALLOW), then the group closes.
//
// Cost: one Unix-socket hop (supervisor -> agent) on the way in; the answer
// goes straight to the kernel. benchmarks/run_events_bench.sh measures it.
//
// Thread-safety: Run() on one thread; Stop() from any thread or a signal
// handler (it writes an eventfd).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/posix.h"
#include "common/status.h"
#include "events/fanotify.h"

namespace pdm::events {

class Supervisor {
 public:
  struct Options {
    std::string view;    // the mount to mark (the node's view)
    std::string socket;  // where agents attach (mode 0600, root only)
    // A group handed over by an agent whose supervisor died (-1: create a
    // new one). The agent has failed (EIO) every access the dead supervisor
    // had read before it hands the group on: their ids are fd numbers that
    // ours reuse, and the kernel would take our answer for theirs.
    int inherit_group_fd = -1;
  };
  explicit Supervisor(Options opts);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Group, mount mark, listening socket. EADDRINUSE when a live supervisor
  // already serves the socket; EOPNOTSUPP without pre-content support.
  Status Start();
  // Serves until Stop(); then fails every held access with EIO.
  Status Run();
  void Stop();

  // For tests and logs.
  size_t held() const { return held_.size(); }

 private:
  struct Held {
    FanotifyEvent ev;
    int64_t since_ns = 0;  // when it arrived, for the event timeout
    bool sent = false;     // forwarded to the attached agent
  };
  void OnGroupReadable();
  void OnAccept();
  void OnAgentReadable();
  void AgentGone(const char* why);
  void FlushToAgent();
  // No agent attached: allow what cannot touch missing data, keep the rest.
  bool AllowWithoutAgent(const FanotifyEvent& ev);
  void Deny(Held& h, int err);
  void ExpireHeld();

  const Options opts_;
  UniqueFd stop_fd_;  // eventfd written by Stop()
  std::unique_ptr<FanotifyGroup> group_;
  UniqueFd listen_fd_;
  UniqueFd agent_fd_;
  int agent_pid_ = 0;
  bool attached_ = false;      // kAttach received on agent_fd_
  int64_t timeout_ms_ = 0;     // the last agent's event timeout; 0 = wait
  std::map<int, Held> held_;   // by event id
};

}  // namespace pdm::events
