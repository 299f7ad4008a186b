// VerbsTransport: the Transport back end over InfiniBand/RoCE verbs.
//
// Connection setup goes through librdmacm (RDMA_PS_TCP, so the addresses are
// ordinary "host:port" strings on the IPoIB or RoCE interface). Each peer gets
// one reliable-connected queue pair with its own completion queue, completion
// channel, protection domain and one registered buffer holding 32 receive and
// 32 send slots of 64 KiB. Every message is one SEND into one pre-posted
// receive: an 8-byte header (kind, credits returned, frame length) and up to
// 64 KiB - 8 of payload. Frames larger than that are split into fragments and
// reassembled in order (RC delivers in order). A sender never posts more sends
// than the receiver has receives posted: the credit accounting lives in
// rdma/credit_window.h, credits travel back in every header and in an
// explicit credit message when a quarter of the window is owed.
//
// Full mesh: rank i connects to every j < i and accepts from every j > i; the
// first three messages on every connection are the auth handshake of
// transport/auth.h (Challenge from the acceptor, Hello from the connector,
// Welcome from the acceptor). A peer that fails it is refused and logged.
//
// Failure detection: RDMA_CM_EVENT_DISCONNECTED and other CM errors, a
// completion with error status, a malformed message, or no message at all
// within failure_timeout_ms while heartbeats go out every
// heartbeat_interval_ms (default failure_timeout_ms / 4) on an idle link.
//
// One progress thread (started by Start) waits with epoll on the CM event
// channel, every completion channel, and an eventfd that Stop() and failing
// senders use to wake it. It owns every connection's life cycle; Send() only
// touches a connection's send state under that connection's mutex.
//
// Without an RDMA device the constructor still succeeds, and Listen() returns
// kUnavailable with errno ENODEV; there is no emulation.
//
// Thread-safety: as Transport (Send/IsAlive from any thread, also from inside
// a handler; Listen/Start from one thread; Stop from any thread, idempotent).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "transport/transport.h"

namespace pdm {

class VerbsTransport final : public Transport {
 public:
  // Never fails; a missing device is reported by Listen(). max_frame_bytes is
  // capped at 4 GiB - 1, the largest length the fragment header can carry.
  explicit VerbsTransport(const TransportOptions& opts);
  ~VerbsTransport() override;  // Stop()
  VerbsTransport(const VerbsTransport&) = delete;
  VerbsTransport& operator=(const VerbsTransport&) = delete;

  std::string_view name() const override { return "verbs"; }

  // Binds an rdma_cm listener to opts.bind_host on a port the kernel picks and
  // returns "host:port" ("[v6addr]:port" for IPv6). Fails with kUnavailable /
  // ENODEV when ibv_get_device_list() lists no device, and with
  // kFailedPrecondition when called twice.
  Result<std::string> Listen() override;
  // Requires a successful Listen(). On failure everything is stopped again:
  // kDeadlineExceeded names the peers still missing at connect_timeout_ms,
  // kPermissionDenied a peer whose Welcome did not verify, kUnavailable a peer
  // that failed after connecting but before the mesh was complete.
  // Handler callbacks start once the mesh is complete (frames that arrive
  // earlier are held until then) and may run before Start() returns.
  Status Start(const std::vector<std::string>& addresses, Handler* handler) override;
  // Posts what credits allow at once and queues the rest (a copy); returns
  // before the frame is on the wire and never blocks on the peer. The queue
  // has no bound of its own: the control plane's protocol bounds its
  // traffic. kInvalidArgument (EMSGSIZE) for a frame over max_frame_bytes,
  // kUnavailable for a peer that is not connected or has failed.
  Status Send(int peer, std::span<const uint8_t> frame) override;
  // True for our own rank and for a peer that is connected and not failed.
  bool IsAlive(int peer) const override;
  // Joins the progress thread, disconnects every peer (they see
  // RDMA_CM_EVENT_DISCONNECTED) and frees the listener. No handler call
  // follows. Called from inside a handler it only asks the thread to stop;
  // a later Stop() or the destructor, from another thread, finishes the job
  // (the transport must not be destroyed from inside its own handler).
  void Stop() override;

 private:
  // The implementation keeps verbs and rdma_cm headers out of every includer.
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pdm
