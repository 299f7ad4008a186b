// Passing a file descriptor to another process over a Unix-domain socket
// (SCM_RIGHTS). The receiver gets a new fd for the same open file
// description, so for a fanotify group both processes hold the one group: the
// kernel releases it (and answers its pending events FAN_ALLOW) only when the
// last such fd closes. That is how a supervisor keeps a pre-content group
// alive while the agent that reads it restarts: the supervisor creates the
// group, marks the files, and hands a copy to each agent it starts over a
// socketpair (or an AF_UNIX socket the agent connects to); it never reads
// the group itself.
//
// Thread-safety: reentrant; concurrent calls on the same socket interleave
// messages, so give each socket one sender and one receiver.
#pragma once

#include "common/posix.h"
#include "common/status.h"

namespace pdm::events {

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
