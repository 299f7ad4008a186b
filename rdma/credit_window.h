// CreditWindow: the receive-credit accounting of one reliable-connected queue
// pair, kept apart from verbs so that it can be tested without a device.
//
// Each side pre-posts `depth` receive buffers before the connection is made, so
// each side starts with `depth` credits: one credit is the right to post one
// send, and a send without a posted receive on the other side would end in an
// RNR error. A receiver that has consumed a message and reposted its buffer
// owes the sender one credit. Owed credits travel back piggybacked in the
// header of every message, and in an explicit credit message when `threshold`
// are owed and nothing else is going out.
//
// Why a reserve: if both sides spent every credit on data, neither could send
// the credit message that would unblock the other. Data therefore never takes
// the last `reserve` credits; only a credit message may. Why threshold >= 2: a
// credit message itself consumes a receive, so with threshold 1 two idle sides
// would return each other's credit messages forever. Why threshold <= depth -
// reserve: a sender blocked on data has at most `reserve` credits left, so once
// its messages have drained the receiver owes it at least depth - reserve
// credits; that must reach the threshold or the credit message never comes.
//
// The window also checks the peer: credits returned beyond depth, or a message
// that arrives when the peer had no credit, are protocol violations (false).
//
// Thread-safety: a value; the owner serializes access (the verbs transport
// holds the connection's send mutex).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <optional>

namespace pdm {

// What a message costs: data (frames, handshake, heartbeats) must leave the
// reserve alone; a credit-only message may use it.
enum class MessageClass : uint8_t { kData, kCredit };

class CreditWindow {
 public:
  // The largest depth whose owed count still fits the 16-bit header field.
  static constexpr uint32_t kMaxDepth = 0xffff;

  static constexpr bool ValidConfig(uint32_t depth, uint32_t reserve, uint32_t threshold) {
    return depth <= kMaxDepth && reserve >= 1 && reserve < depth && threshold >= 2 &&
           threshold <= depth - reserve;
  }

  // Both sides must use the same depth. Terminates on an invalid config: the
  // parameters are compile-time constants of the transport, so a bad one is a
  // programming error, not a runtime condition.
  CreditWindow(uint32_t depth, uint32_t reserve, uint32_t threshold)
      : depth_(depth), reserve_(reserve), threshold_(threshold), credits_(depth), peer_credits_(depth) {
    if (!ValidConfig(depth, reserve, threshold)) std::abort();
  }

  uint32_t depth() const { return depth_; }
  uint32_t reserve() const { return reserve_; }
  uint32_t threshold() const { return threshold_; }
  // Sends we may still post.
  uint32_t credits() const { return credits_; }
  // Reposted receives not yet advertised to the peer.
  uint32_t owed() const { return owed_; }
  // Messages received whose buffer has not been reposted yet.
  uint32_t unreposted() const { return unreposted_; }

  bool CanSend(MessageClass c) const { return c == MessageClass::kData ? credits_ > reserve_ : credits_ > 0; }

  // True when an explicit credit message should be sent: enough is owed and
  // nothing else is carrying it. Callers first send whatever data they can,
  // since each data message already piggybacks everything owed.
  bool CreditMessageDue() const { return owed_ >= threshold_ && credits_ > 0; }

  // The send policy in one place: data if any is waiting and allowed, else a
  // credit message if one is due, else nothing.
  std::optional<MessageClass> NextToSend(bool data_waiting) const {
    if (data_waiting && CanSend(MessageClass::kData)) return MessageClass::kData;
    if (CreditMessageDue()) return MessageClass::kCredit;
    return std::nullopt;
  }

  // Spends one credit on a message about to be posted and returns the credit
  // count to put in its header (everything owed, which is then no longer
  // owed). Returns nullopt and changes nothing if CanSend(c) is false. If the
  // post then fails, the connection is dead and the window with it.
  std::optional<uint16_t> Spend(MessageClass c) {
    if (!CanSend(c)) return std::nullopt;
    --credits_;
    const uint32_t piggyback = owed_;
    peer_credits_ += owed_;
    owed_ = 0;
    return static_cast<uint16_t>(piggyback);
  }

  // The peer returned `n` credits in a message header. False (window
  // unchanged) if that would exceed depth: the peer has no such buffers.
  [[nodiscard]] bool OnCreditsReturned(uint32_t n) {
    if (n > depth_ - credits_) return false;
    credits_ += n;
    return true;
  }

  // A message from the peer consumed one of our receive buffers. False if the
  // peer had no credit for it by our count (a protocol violation).
  [[nodiscard]] bool OnMessageReceived() {
    if (peer_credits_ == 0) return false;
    --peer_credits_;
    ++unreposted_;
    return true;
  }

  // One consumed receive buffer was posted again: one more credit is owed.
  // False if no received buffer was outstanding (a bug in the caller).
  [[nodiscard]] bool OnReceiveReposted() {
    if (unreposted_ == 0) return false;
    --unreposted_;
    ++owed_;
    return true;
  }

 private:
  uint32_t depth_;
  uint32_t reserve_;
  uint32_t threshold_;
  uint32_t credits_;          // our sends the peer can still take
  uint32_t peer_credits_;     // peer's sends we can still take (as advertised)
  uint32_t unreposted_ = 0;   // received, buffer not yet reposted
  uint32_t owed_ = 0;         // reposted, not yet advertised
  // Invariant: peer_credits_ + unreposted_ + owed_ == depth_.
};

}  // namespace pdm
