// TcpTransport: the control plane over TCP sockets (clusters without RDMA,
// and machines like our CI host).
//
// Wire: every frame is [u32 length, little endian][u8 kind][3 zero bytes]
// [length bytes, zero-padded to a multiple of 8] (payloads stay 8-aligned);
// kind 0 carries a payload for the handler, kind 1 is a heartbeat (empty).
// Connections: rank i connects to every j < i and accepts from every j > i;
// each runs the auth handshake (transport/auth.h) before any frame counts.
// One epoll thread reads all peers, runs the heartbeat timer and detects
// failures; Send() writes from the caller's thread under a per-peer mutex.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/posix.h"
#include "transport/transport.h"

namespace pdm {

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(const TransportOptions& opts);
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  std::string_view name() const override { return "tcp"; }
  Result<std::string> Listen() override;
  Status Start(const std::vector<std::string>& addresses, Handler* handler) override;
  Status Send(int peer, std::span<const uint8_t> frame) override;
  bool IsAlive(int peer) const override;
  void Stop() override;

 private:
  // Connection state of one peer; an explicit state machine:
  // kConnecting -> kUp -> kDown (terminal).
  enum class PeerState { kConnecting, kUp, kDown };
  struct Peer {
    UniqueFd fd;
    std::mutex send_mu;                  // serialises writers on fd
    std::atomic<PeerState> state{PeerState::kConnecting};
    std::vector<uint8_t> rx;             // bytes read, not yet a whole frame
    int64_t last_rx_ns = 0;              // progress thread only
  };

  Status ConnectTo(int peer, const std::string& address, int64_t deadline_ns);
  Status AcceptUntil(int64_t deadline_ns, int expected);
  Status SendRaw(int peer, uint8_t kind, std::span<const uint8_t> payload);
  void Run();                              // progress thread
  void OnReadable(int peer);
  void MarkDown(int peer, const Status& why);

  TransportOptions opts_;
  UniqueFd listen_fd_;
  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;   // eventfd: Stop() wakes the progress thread
  UniqueFd timer_fd_;  // heartbeats and failure checks
  std::vector<std::unique_ptr<Peer>> peers_;
  Handler* handler_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: started after everything it uses exists
};

}  // namespace pdm
