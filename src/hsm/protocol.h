// The HSM's messages, all carried by DMAPI user events (dm_send_msg), so the
// HSM is a DM application on our own DMAPI and nothing else:
//
//   tool -> coordinator   Request, DM_MSGTYPE_SYNC to the coordinator
//                         session: the tool blocks until the coordinator
//                         answers. CONTINUE = every file done; ABORT(errno)
//                         = at least one failed (the errno of the first).
//                         Which ones: each file's state (hsm/state.h).
//   coordinator -> worker Task, DM_MSGTYPE_ASYNC to a worker session; it
//                         carries the coordinator's session id and the token
//                         (with the rights on the file) the work runs under.
//   worker -> coordinator TaskResult, DM_MSGTYPE_ASYNC to the coordinator
//                         session.
//
// All three are JSON objects (nlohmann) with "pdm_hsm": 1, well under
// DM_CONFIG_MAX_MESSAGE_DATA (64 KiB): a Request carries at most
// kMaxFilesPerRequest handles; tools send bigger lists in several requests.
//
// Sessions are found by their info string: the coordinator's is
// kCoordinatorInfo; worker sessions are kWorkerInfo + " r<rank> <queue>".
//
// Thread-safety: plain values and reentrant functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "hsm/archive.h"

namespace pdm::hsm {

inline constexpr std::string_view kCoordinatorInfo = "pdm-hsm coordinator";
inline constexpr std::string_view kWorkerInfo = "pdm-hsm worker";
inline constexpr size_t kMaxFilesPerRequest = 256;

// kCancel: stop the archive or release of these files where it is still
// in flight (lfs hsm_cancel); what has not been released stays resident, and
// the interrupted request fails those files with ECANCELED. A file with
// nothing in flight: nothing to do.
enum class Op { kArchive, kRelease, kMigrate, kRecall, kRemove, kCancel };
std::string_view OpName(Op op);
Result<Op> ParseOp(std::string_view name);

struct Request {
  Op op = Op::kMigrate;
  std::vector<std::string> handles;  // DM handle bytes, one per file
};
std::string EncodeRequest(const Request& r);
Result<Request> DecodeRequest(std::string_view json);

// The coordinator session's id, found with dm_getall_sessions +
// dm_query_session (the caller has a DMAPI connection: DMAPI_SOCKET).
// NotFound(ENOENT) when no HSM runs.
Result<uint64_t> FindCoordinator();

enum class TaskKind { kPut, kGet, kPunch };

// One unit of data movement. kPut: read [offset, offset+length) of each
// file (dm_read_invis) and store it as chunk `index` of object `key`; several
// files in one task are one batch (small files: one container / one flush).
// kGet: read chunk `index` of object `key` from the archive (checksum
// verified) and write it into the file (dm_write_invis). kPunch: punch the
// whole file.
struct TaskItem {
  std::string handle;  // DM handle bytes
  std::string key;
  uint32_t index = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};
struct Task {
  uint64_t id = 0;  // unique per coordinator incarnation
  TaskKind kind = TaskKind::kPut;
  uint64_t sid = 0;    // the coordinator's session
  uint64_t token = 0;  // the event whose rights the work runs under
  std::vector<TaskItem> items;
};
std::string EncodeTask(const Task& t);
Result<Task> DecodeTask(std::string_view json);

struct TaskResult {
  uint64_t id = 0;
  int err = 0;                  // 0 = done
  std::string what;             // the failure, for the log
  std::vector<ChunkRef> chunks;  // kPut: one per item, in order
};
std::string EncodeResult(const TaskResult& r);
Result<TaskResult> DecodeResult(std::string_view json);

// Which of the three a user event payload is.
enum class MessageKind { kRequest, kTask, kResult, kUnknown };
MessageKind KindOf(std::string_view json);

}  // namespace pdm::hsm
