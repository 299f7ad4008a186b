#include "events/fd_passing.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pdm::events {

namespace {
constexpr char kTag = 'F';  // the payload byte; checked so a stray byte is not taken for an fd
}

Status SendFd(int sock, int fd) {
  char payload = kTag;
  iovec iov{&payload, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PosixError("sendmsg", "SCM_RIGHTS", errno);
  return Status::Ok();
}

Result<UniqueFd> RecvFd(int sock) {
  char payload = 0;
  iovec iov{&payload, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PosixError("recvmsg", "SCM_RIGHTS", errno);
  if (n == 0) return NotFound("RecvFd: peer closed the socket", ECONNRESET);

  // Own whatever arrived before judging the message, so no path leaks an fd.
  UniqueFd got;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      if (!got.valid()) got = UniqueFd(fd); else ::close(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return Internal("RecvFd: control data truncated");
  if (payload != kTag) return Internal("RecvFd: unexpected payload byte");
  if (!got.valid()) return Internal("RecvFd: message carried no fd");
  return got;
}

}  // namespace pdm::events
