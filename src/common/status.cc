#include "common/status.h"

#include <cstring>

namespace pdm {

const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNotFound: return "NotFound";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kPermissionDenied: return "PermissionDenied";
    case Code::kUnavailable: return "Unavailable";
    case Code::kAborted: return "Aborted";
    case Code::kFailedPrecondition: return "FailedPrecondition";
    case Code::kResourceExhausted: return "ResourceExhausted";
    case Code::kDeadlineExceeded: return "DeadlineExceeded";
    case Code::kUnimplemented: return "Unimplemented";
    case Code::kInternal: return "Internal";
    case Code::kDataLoss: return "DataLoss";
  }
  return "Unknown";
}

Status::Status(Code code, int err, std::string_view msg) {
  if (code != Code::kOk) state_ = std::make_unique<State>(State{code, err, std::string(msg)});
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return state_ ? state_->msg : kEmpty;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s = CodeName(state_->code);
  s += " (";
  s += std::strerror(state_->err);
  s += "): ";
  s += state_->msg;
  return s;
}

Status InvalidArgument(std::string_view m, int e) { return Status(Code::kInvalidArgument, e, m); }
Status NotFound(std::string_view m, int e) { return Status(Code::kNotFound, e, m); }
Status AlreadyExists(std::string_view m, int e) { return Status(Code::kAlreadyExists, e, m); }
Status PermissionDenied(std::string_view m, int e) { return Status(Code::kPermissionDenied, e, m); }
Status Unavailable(std::string_view m, int e) { return Status(Code::kUnavailable, e, m); }
Status Aborted(std::string_view m, int e) { return Status(Code::kAborted, e, m); }
Status FailedPrecondition(std::string_view m, int e) { return Status(Code::kFailedPrecondition, e, m); }
Status ResourceExhausted(std::string_view m, int e) { return Status(Code::kResourceExhausted, e, m); }
Status DeadlineExceeded(std::string_view m, int e) { return Status(Code::kDeadlineExceeded, e, m); }
Status Unimplemented(std::string_view m, int e) { return Status(Code::kUnimplemented, e, m); }
Status Internal(std::string_view m, int e) { return Status(Code::kInternal, e, m); }
Status DataLoss(std::string_view m, int e) { return Status(Code::kDataLoss, e, m); }

Status FromErrno(int err, std::string_view msg) {
  switch (err) {
    case 0: return Status();
    case EINVAL: case EBADF: case E2BIG: case EBADMSG: return InvalidArgument(msg, err);
    case ENOENT: case ESRCH: case ESTALE: return NotFound(msg, err);
    case EEXIST: return AlreadyExists(msg, err);
    case EPERM: case EACCES: return PermissionDenied(msg, err);
    case EAGAIN: case ECONNREFUSED: case ECONNRESET: case EPIPE: case ENOTCONN: return Unavailable(msg, err);
    case EINTR: return Aborted(msg, err);
    case EBUSY: return FailedPrecondition(msg, err);
    case ENOMEM: case ENOSPC: case EMFILE: case ENFILE: return ResourceExhausted(msg, err);
    case ETIMEDOUT: return DeadlineExceeded(msg, err);
    case ENOSYS: case ENOTSUP: return Unimplemented(msg, err);
    default: return Internal(msg, err);
  }
}

}  // namespace pdm
