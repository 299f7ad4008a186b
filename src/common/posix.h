// POSIX helpers: the one place errno becomes a Status (PosixError), an owning
// file descriptor, and whole-buffer I/O loops that retry EINTR and short counts.
//
// Thread-safety: UniqueFd is a value with one owner; the free functions are
// reentrant.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pdm {

// Status for a failed POSIX call: names the call and the object, keeps errno.
Status PosixError(std::string_view call, std::string_view what, int err);

// Owns one file descriptor; closes it once. Move-only.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Writes all of buf; retries EINTR and short writes. MSG_NOSIGNAL for sockets.
Status WriteAll(int fd, std::span<const uint8_t> buf, std::string_view what);
// Reads exactly buf.size() bytes. Returns NotFound(ECONNRESET) on orderly EOF
// before the first byte and Unavailable on EOF mid-buffer.
Status ReadExact(int fd, std::span<uint8_t> buf, std::string_view what);

// Writes path atomically: temp file in the same directory, fsync, rename.
Status WriteFileAtomic(const std::string& path, std::string_view contents);

// Monotonic clock in nanoseconds.
int64_t MonotonicNs();

}  // namespace pdm
