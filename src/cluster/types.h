// Plain records shared by the node agent (cluster/node.h) and its clients
// (client/local_client.h): sessions, events, the cluster's membership.
// No behaviour and no dependencies, so a DMAPI client links none of the
// cluster code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pdm {

struct SessionRecord {
  uint64_t sid = 0;
  int owner = -1;  // session node
  std::string info;
  std::string group;  // parallel DM application group, "" if none
  int create_origin = -1;
  uint64_t create_req = 0;
};

struct NodeStatic {  // what cluster.json says about each rank
  int rank = 0;
  int pid = 0;
  std::string view;
  std::string socket;
};

// An event as queued at the session node and handed out by GetEvents.
struct QueuedEvent {
  uint64_t token = 0;  // 0 for asynchronous events (DM_INVALID_TOKEN)
  uint64_t sid = 0;
  unsigned type = 0;
  bool sync = false;
  int raiser = -1;
  uint64_t fsid = 0;
  bool notice = false;  // parallel-mode copy of an event handled elsewhere
  uint64_t sequence = 0;
  std::vector<uint8_t> payload;
  // A copy without the payload.
  QueuedEvent Head() const {
    QueuedEvent h;
    h.token = token;
    h.sid = sid;
    h.type = type;
    h.sync = sync;
    h.raiser = raiser;
    h.fsid = fsid;
    h.notice = notice;
    h.sequence = sequence;
    return h;
  }
};

struct RaiseSpec {
  uint64_t fsid = 0;
  unsigned type = 0;
  bool sync = false;
  uint64_t target_sid = 0;  // nonzero: deliver to this session, not by disposition
  std::vector<uint8_t> payload;
};

struct RaiseOutcome {
  bool delivered = false;  // false: no session has a disposition for it
  int response = 0;        // DM_RESP_* for synchronous events
  int err = 0;             // the errno an ABORT carried
  uint64_t token = 0;
  uint64_t sid = 0;
};

struct SessionView {
  SessionRecord rec;
  bool owner_alive = true;
};

struct ClusterView {
  int rank = 0;
  int session_manager = 0;
  std::vector<NodeStatic> nodes;
  std::vector<bool> alive;
};

// Responses carried by EventResponse; the values of dm_response_t.
enum : int { kRespContinue = 1, kRespAbort = 2, kRespDontCare = 3 };

}  // namespace pdm
