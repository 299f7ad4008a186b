// HsmClient: a tool's side of the HSM request protocol (hsm/protocol.h). It is
// a plain DMAPI client of the local node agent (DMAPI_SOCKET, default
// /run/pdm/dmapi.sock): it creates a session of its own for the attribute
// reads, finds the coordinator session by its info string, sends Requests
// with dm_send_msg(DM_MSGTYPE_SYNC) and judges each file by the state the HSM
// left in its "pdmhsm" DM attribute — the coordinator's answer only says
// whether everything went well, never which file failed.
//
// Thread-safety: after Open, every const member may be called from any
// number of threads at once (libdmapi gives each thread its own connection
// to the agent, and the session is only read). Open and the destructor run
// on one thread.
#pragma once

#include <dmapi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "hsm/protocol.h"
#include "hsm/state.h"

namespace pdm::tools {

// The message a tool prints when it cannot reach the HSM.
inline constexpr std::string_view kNoCoordinatorMessage = "no HSM coordinator: is pdmd running with --archive?";

// True when s shows that op is done for the file: migrate and release →
// released; archive → archived and not dirty; recall → not released; remove →
// not archived.
bool OpReached(hsm::Op op, const hsm::FileState& s);
// What OpReached expects, for failure messages ("released", "not released").
std::string_view OpGoal(hsm::Op op);

class HsmClient {
 public:
  // Connects to the node agent and creates a session whose info string names
  // the tool and its pid. With need_coordinator, also finds the coordinator:
  // none → FailedPrecondition(ENOENT) carrying kNoCoordinatorMessage. An
  // unreachable agent → Unavailable naming the socket.
  static Result<std::unique_ptr<HsmClient>> Open(std::string_view tool, bool need_coordinator);
  ~HsmClient();  // destroys the session; a failure is printed, never thrown
  HsmClient(const HsmClient&) = delete;
  HsmClient& operator=(const HsmClient&) = delete;

  dm_sessid_t session() const { return sid_; }
  uint64_t coordinator() const { return coordinator_; }

  // The DM handle bytes of a regular file, without following a symlink at
  // any point of the last component: the file is opened O_PATH|O_NOFOLLOW
  // and its handle taken from that descriptor, so a symlink swapped in after
  // the walk is refused (InvalidArgument), not followed. Local (no agent).
  static Result<std::string> RegularFileHandle(const std::string& path, uint64_t* size = nullptr);

  // The file's HSM state (dm_get_dmattr "pdmhsm" under this session, no
  // token). No attribute → a default state. Corrupt → DataLoss.
  Result<hsm::FileState> State(const std::string& handle) const;

  // One Request of at most hsm::kMaxFilesPerRequest handles; blocks until the
  // coordinator answers. OK = it answered CONTINUE; otherwise the errno of
  // the ABORT (or of the delivery) is in the Status. Either way the caller
  // learns per-file outcomes from State.
  Status Send(hsm::Op op, const std::vector<std::string>& handles) const;

  struct Outcome {
    bool ok = false;
    uint64_t size = 0;     // st_size when the handle was taken
    hsm::FileState state;  // after the request (when it could be read)
    std::string error;     // why not ok, naming the path
  };
  // The whole flow for one batch of paths (≤ kMaxFilesPerRequest): handles,
  // one Request, each file's state. Outcomes are in the order of paths.
  std::vector<Outcome> Run(hsm::Op op, const std::vector<std::string>& paths) const;

 private:
  HsmClient() = default;
  dm_sessid_t sid_ = DM_NO_SESSION;
  uint64_t coordinator_ = 0;
};

// The socket libdmapi connects to: $DMAPI_SOCKET, else /run/pdm/dmapi.sock
// (the rule of src/client/local_client.cc, repeated for messages only).
std::string DmapiSocketPath();

}  // namespace pdm::tools
