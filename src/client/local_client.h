// LocalClient: a connection to one node agent's DMAPI socket (the client
// side of wire/local.fbs). libdmapi, the pdm tools and the tests use it.
//
// Each call sends one Request and waits for its Reply. Calls on one client
// are serialised by a mutex, so a thread blocked in GetEvents(wait) holds the
// connection: give each thread that waits its own LocalClient.
//
// Errors: the errno of a refused call is Status::err() (EINVAL for a bad
// session, ESRCH for an unknown token, EPERM for non-root, ...). A socket the
// caller may not open (mode 0600, non-root) is reported as EPERM too.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cluster/types.h"
#include "common/posix.h"
#include "common/status.h"

namespace pdm {

struct RaiseResult {
  bool delivered = false;  // a session held the disposition
  int response = 0;        // DM_RESP_* (synchronous)
  int abort_errno = 0;
  uint64_t sid = 0;
};

class LocalClient {
 public:
  // Connects and says Hello. path "" means $DMAPI_SOCKET, else /run/pdm/dmapi.sock.
  static Result<std::unique_ptr<LocalClient>> Connect(const std::string& path);
  static std::string DefaultSocketPath();

  int rank() const { return rank_; }

  Result<uint64_t> CreateSession(uint64_t oldsid, const std::string& info, const std::string& group = "");
  Status DestroySession(uint64_t sid);
  Status ModifySession(uint64_t sid, const std::string& info);
  Result<SessionView> QuerySession(uint64_t sid);
  Result<std::vector<SessionView>> AllSessions();
  Status SetDisp(uint64_t sid, uint64_t fsid, uint64_t events);
  Result<std::vector<std::pair<uint64_t, uint64_t>>> GetAllDisp(uint64_t sid);
  Status SetFsEvents(uint64_t sid, uint64_t fsid, uint64_t events);
  Result<uint64_t> GetFsEvents(uint64_t fsid);
  Result<std::vector<QueuedEvent>> GetEvents(uint64_t sid, unsigned max_msgs, bool wait, unsigned timeout_ms = 0);
  // GetEvents with a byte budget (see Node::GetEvents); on E2BIG *needed is set.
  Result<std::vector<QueuedEvent>> GetEventsFitting(uint64_t sid, unsigned max_msgs, bool wait, size_t max_bytes,
                                                    size_t overhead, size_t* needed);
  Result<uint64_t> CreateUserEvent(uint64_t sid, const std::vector<uint8_t>& payload);
  Status MoveEvent(uint64_t src, uint64_t token, uint64_t dst);
  Status Pending(uint64_t sid, uint64_t token);
  // After managed regions were set on `object` (a DM handle): returns when
  // every node's event source watches it again.
  Status Rewatch(uint64_t sid, const std::string& object);
  Status Respond(uint64_t sid, uint64_t token, int response, int err);
  Result<std::vector<QueuedEvent>> Outstanding(uint64_t sid);
  // with_payload false: only whether the token is outstanding (a file
  // call's check); the event comes back without its payload, which for a
  // tool's request can be tens of KiB.
  Result<QueuedEvent> FindEvent(uint64_t sid, uint64_t token, bool with_payload = true);
  // By disposition (target_sid 0) or to one session.
  Result<RaiseResult> Raise(uint64_t fsid, unsigned type, bool sync, const std::vector<uint8_t>& payload,
                            uint64_t target_sid = 0);
  Result<ClusterView> Cluster();
  // The DM events the node generates (a dm_eventset_t).
  Result<uint64_t> GeneratedEvents();

  // DM rights (right: 1 SHARED, 2 EXCL), on the session node.
  Status RequestRight(uint64_t sid, uint64_t token, const std::string& object, int right, bool wait);
  Status ReleaseRight(uint64_t sid, uint64_t token, const std::string& object);
  Result<int> QueryRight(uint64_t sid, uint64_t token, const std::string& object);
  Status UpgradeRight(uint64_t sid, uint64_t token, const std::string& object);
  Status DowngradeRight(uint64_t sid, uint64_t token, const std::string& object);

 private:
  struct Req;  // request fields, defined in the .cc
  Status RightCall(int op, uint64_t sid, uint64_t token, const std::string& object, int right, bool wait);
  explicit LocalClient(UniqueFd fd) : fd_(std::move(fd)) {}
  // Call under the mutex, for calls whose reply carries only the status.
  Status Do(const Req& req);
  // Sends `req`, reads the reply into reply_buf_; returns the decoded reply's
  // status (its err/message) and leaves the buffer for the caller to read.
  Status Call(const Req& req);

  std::mutex mu_;
  UniqueFd fd_;
  std::vector<uint8_t> reply_buf_;
  int rank_ = -1;
};

}  // namespace pdm
