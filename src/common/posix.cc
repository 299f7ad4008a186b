#include "common/posix.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pdm {

Status PosixError(std::string_view call, std::string_view what, int err) {
  std::string msg(call);
  msg += "(";
  msg += what;
  msg += "): ";
  msg += std::strerror(err);
  return FromErrno(err, msg);
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Status WriteAll(int fd, std::span<const uint8_t> buf, std::string_view what) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::send(fd, buf.data() + done, buf.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, buf.data() + done, buf.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("send", what, errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status ReadExact(int fd, std::span<uint8_t> buf, std::string_view what) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read", what, errno);
    }
    if (n == 0) {
      if (done == 0) return NotFound(std::string(what) + ": connection closed", ECONNRESET);
      return Unavailable(std::string(what) + ": truncated frame", ECONNRESET);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view contents) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return PosixError("open", tmp, errno);
  PDM_RETURN_IF_ERROR(WriteAll(fd.get(), {reinterpret_cast<const uint8_t*>(contents.data()), contents.size()}, tmp));
  if (::fsync(fd.get()) != 0) return PosixError("fsync", tmp, errno);
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return PosixError("rename", path, e);
  }
  return Status::Ok();
}

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace pdm
