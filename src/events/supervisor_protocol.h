// The messages between a node agent (pdmd's EventSource) and its event
// supervisor (pdm-eventd, events/supervisor.h), over one SOCK_SEQPACKET Unix
// socket: one fixed-size SupMsg per message, an fd attached to some.
//
//   agent -> supervisor   kAttach  arg = event timeout in ms (0: wait forever)
//   supervisor -> agent   kWelcome + the fanotify group fd; arg = events held,
//                                  count = its RLIMIT_NOFILE: every id it
//                                  hands out is below it (0: not said)
//   supervisor -> agent   kEvent   + the event's fd; id, mask, pid, range
//   agent -> supervisor   kDone    id: the agent has answered the event
//                                  (it wrote the response to the group itself)
//
// The agent answers on the group directly, by id, so the supervisor is not
// on the return path of an access; kDone only lets the supervisor close its
// copy of the event fd, which keeps the id unique until then.
//
// Thread-safety: plain data.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "events/fd_passing.h"

namespace pdm::events {

inline constexpr uint32_t kSupMagic = 0x56535044;  // "DPSV"

enum class SupType : uint32_t { kAttach = 1, kWelcome = 2, kEvent = 3, kDone = 4 };

struct SupMsg {
  uint32_t magic = kSupMagic;
  SupType type = SupType::kAttach;
  int32_t id = -1;
  int32_t pid = 0;
  uint64_t mask = 0;
  uint64_t offset = 0;
  uint64_t count = 0;
  uint32_t has_range = 0;
  uint32_t reserved = 0;
  uint64_t arg = 0;
};
static_assert(sizeof(SupMsg) == 56);

// The supervisor socket's address; ENAMETOOLONG when the path does not fit.
inline Result<sockaddr_un> SupervisorAddress(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return InvalidArgument("socket path too long: " + path, ENAMETOOLONG);
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return sa;
}

inline Status SendSup(int sock, const SupMsg& m, int fd = -1, int flags = 0) {
  return SendWithFd(sock, {reinterpret_cast<const uint8_t*>(&m), sizeof m}, fd, flags);
}

struct SupReceived {
  SupMsg msg;
  UniqueFd fd;
};
// EPROTO for anything that is not a whole SupMsg with our magic.
inline Result<SupReceived> RecvSup(int sock, int flags = 0) {
  SupReceived out;
  PDM_ASSIGN_OR_RETURN(Received r, RecvWithFd(sock, {reinterpret_cast<uint8_t*>(&out.msg), sizeof out.msg}, flags));
  if (r.bytes != sizeof(SupMsg) || out.msg.magic != kSupMagic)
    return InvalidArgument("event supervisor: malformed message", EPROTO);
  out.fd = std::move(r.fd);
  return out;
}

}  // namespace pdm::events
