// Passing a file descriptor to another process over a Unix-domain socket
// (SCM_RIGHTS). The receiver gets a new fd for the same open file
// description, so for a fanotify group both processes hold the one group: the
// kernel releases it (and answers its pending events FAN_ALLOW) only when the
// last such fd closes. The event supervisor (events/supervisor.h) relies on
// it: it keeps the group, and every event's fd, alive while the node agent
// that answers them restarts.
//
// Thread-safety: reentrant; concurrent calls on the same socket interleave
// messages, so give each socket one sender and one receiver.
#pragma once

#include <cstdint>
#include <span>

#include "common/posix.h"
#include "common/status.h"

namespace pdm::events {

// One message (payload.size() >= 1 bytes) with an optional fd (-1: none).
// On a SOCK_SEQPACKET socket the message keeps its boundaries. flags are
// added to MSG_NOSIGNAL (e.g. MSG_DONTWAIT: EAGAIN when the peer's buffer is
// full).
Status SendWithFd(int sock, std::span<const uint8_t> payload, int fd, int flags = 0);

struct Received {
  size_t bytes = 0;
  UniqueFd fd;  // invalid when the message carried none
};
// Receives one message into buf. NotFound(ECONNRESET) when the peer closed
// the socket; Internal when the message (or its control data) did not fit.
Result<Received> RecvWithFd(int sock, std::span<uint8_t> buf, int flags = 0);

// Sends fd (not consumed; the caller keeps its own copy) with a one-byte
// payload, because a message with ancillary data must carry at least one
// byte on a stream socket. MSG_NOSIGNAL: a closed peer gives EPIPE, not a
// signal.
Status SendFd(int sock, int fd);

// Receives one fd sent by SendFd, close-on-exec. NotFound(ECONNRESET) if the
// peer closed the socket first; Internal if the message carried no fd or the
// control data was truncated (any fd that did arrive is closed).
Result<UniqueFd> RecvFd(int sock);

}  // namespace pdm::events
