// Status and Result<T>: how every fallible call in pdm reports its outcome.
//
// A Status is OK or carries a code from a small closed set, the errno that the
// DMAPI caller will see, and a message naming what failed. OK costs one null
// pointer. Codes carry Abseil's retry meanings because the control plane
// retries: kUnavailable = retry the same call (peer down, SM being elected);
// kAborted = retry the whole sequence; kFailedPrecondition = do not retry until
// the state is fixed. The errno is what crosses the DMAPI boundary; each API
// translates a foreign error into a Status in exactly one place (posix.h for
// errno, the transports for verbs/sockets).
//
// Thread-safety: values; a Status is not shared between threads while mutated.
#pragma once

#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pdm {

enum class Code : unsigned char {
  kOk = 0,
  kInvalidArgument,     // bad handle, session, token, malformed input
  kNotFound,            // no such session / token / file
  kAlreadyExists,       // e.g. a disposition held by another session
  kPermissionDenied,    // non-root caller, missing DM rights
  kUnavailable,         // peer or SM unreachable now; retry the call
  kAborted,             // sequence interrupted (e.g. SM failover); retry it
  kFailedPrecondition,  // state must change first
  kResourceExhausted,   // limits, full archive
  kDeadlineExceeded,
  kUnimplemented,
  kInternal,
  kDataLoss,            // corrupt archive object
};

const char* CodeName(Code c);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, int err, std::string_view msg);
  Status(const Status& o) : state_(o.state_ ? std::make_unique<State>(*o.state_) : nullptr) {}
  Status& operator=(const Status& o) {
    if (this != &o) state_ = o.state_ ? std::make_unique<State>(*o.state_) : nullptr;
    return *this;
  }
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  bool ok() const { return state_ == nullptr; }
  Code code() const { return state_ ? state_->code : Code::kOk; }
  // The errno a DMAPI caller sees; 0 when OK.
  int err() const { return state_ ? state_->err : 0; }
  const std::string& message() const;
  std::string ToString() const;
  void IgnoreError() const {}

 private:
  struct State {
    Code code;
    int err;
    std::string msg;
  };
  std::unique_ptr<State> state_;
};

// Named factories. Each takes the errno the caller should see, because DMAPI
// semantics are defined by errno, and a message naming the object.
Status InvalidArgument(std::string_view msg, int err = EINVAL);
Status NotFound(std::string_view msg, int err = ENOENT);
Status AlreadyExists(std::string_view msg, int err = EEXIST);
Status PermissionDenied(std::string_view msg, int err = EPERM);
Status Unavailable(std::string_view msg, int err = EAGAIN);
Status Aborted(std::string_view msg, int err = EINTR);
Status FailedPrecondition(std::string_view msg, int err = EBUSY);
Status ResourceExhausted(std::string_view msg, int err = ENOMEM);
Status DeadlineExceeded(std::string_view msg, int err = ETIMEDOUT);
Status Unimplemented(std::string_view msg, int err = ENOSYS);
Status Internal(std::string_view msg, int err = EIO);
Status DataLoss(std::string_view msg, int err = EIO);
// Maps an errno to the closest code; used where a peer reports only an errno.
Status FromErrno(int err, std::string_view msg);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status st) : status_(std::move(st)) {}  // NOLINT
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace pdm

#define PDM_CONCAT_INNER(a, b) a##b
#define PDM_CONCAT(a, b) PDM_CONCAT_INNER(a, b)

#define PDM_RETURN_IF_ERROR(expr)             \
  do {                                        \
    ::pdm::Status pdm_st_ = (expr);           \
    if (!pdm_st_.ok()) return pdm_st_;        \
  } while (0)

#define PDM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()

#define PDM_ASSIGN_OR_RETURN(lhs, expr) \
  PDM_ASSIGN_OR_RETURN_IMPL(PDM_CONCAT(pdm_res_, __LINE__), lhs, expr)
