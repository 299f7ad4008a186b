#include "events/fd_passing.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pdm::events {

namespace {
constexpr uint8_t kTag = 'F';  // SendFd's payload; checked so a stray byte is not taken for an fd
}

Status SendWithFd(int sock, std::span<const uint8_t> payload, int fd, int flags) {
  if (payload.empty()) return InvalidArgument("SendWithFd: empty payload", EINVAL);
  iovec iov{const_cast<uint8_t*>(payload.data()), payload.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PosixError("sendmsg", fd >= 0 ? "message with SCM_RIGHTS" : "message", errno);
  if (static_cast<size_t>(n) != payload.size()) return Internal("SendWithFd: short send");
  return Status::Ok();
}

Result<Received> RecvWithFd(int sock, std::span<uint8_t> buf, int flags) {
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PosixError("recvmsg", "message", errno);
  if (n == 0) return NotFound("peer closed the socket", ECONNRESET);

  // Own whatever arrived before judging the message, so no path leaks an fd.
  Received r;
  r.bytes = static_cast<size_t>(n);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      const size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < nfds; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (!r.fd.valid()) r.fd = UniqueFd(fd); else ::close(fd);
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return Internal("RecvWithFd: control data truncated");
  if (msg.msg_flags & MSG_TRUNC) return Internal("RecvWithFd: message longer than the buffer");
  return r;
}

Status SendFd(int sock, int fd) {
  const uint8_t tag = kTag;
  return SendWithFd(sock, {&tag, 1}, fd);
}

Result<UniqueFd> RecvFd(int sock) {
  uint8_t tag = 0;
  PDM_ASSIGN_OR_RETURN(Received r, RecvWithFd(sock, {&tag, 1}));
  if (tag != kTag) return Internal("RecvFd: unexpected payload byte");
  if (!r.fd.valid()) return Internal("RecvFd: message carried no fd");
  return std::move(r.fd);
}

}  // namespace pdm::events
