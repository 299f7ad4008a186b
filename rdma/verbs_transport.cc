#include "rdma/verbs_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <rdma/rdma_cma.h>
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "common/posix.h"
#include "rdma/credit_window.h"
#include "transport/auth.h"

namespace pdm {
namespace {

// ---------------------------------------------------------------------------
// Protocol constants and the wire header.

// Receives pre-posted per connection, and therefore each side's initial credits.
constexpr uint32_t kRecvDepth = 32;
// Send slots per connection. Credits already bound the sends in flight to
// kRecvDepth; slots are a separate resource only because a send completion
// (and with it the slot) can lag behind the credits the peer returns.
constexpr uint32_t kSendDepth = 32;
constexpr size_t kSlotBytes = 64 * 1024;
// One credit only a credit message may use (see credit_window.h for why), and
// an explicit credit message once a quarter of the window is owed.
constexpr uint32_t kCreditReserve = 1;
constexpr uint32_t kCreditThreshold = kRecvDepth / 4;
static_assert(CreditWindow::ValidConfig(kRecvDepth, kCreditReserve, kCreditThreshold));

constexpr int kResolveTimeoutMs = 2000;
// Pause between connection attempts to a peer whose listener is not up yet
// or whose CM handshake failed; only while Start() is running.
constexpr int64_t kConnectRetryNs = 200'000'000;
// Timer resolution while connecting, so retries are not late by a heartbeat.
constexpr int64_t kStartTickNs = 50'000'000;
constexpr int kListenBacklog = 1024;
// wr_id layout: the slot index, plus this bit for sends. Encoded in the id
// because wc.opcode is undefined in a completion with error status.
constexpr uint64_t kSendWrFlag = uint64_t{1} << 32;

enum class MsgKind : uint8_t {
  kChallenge = 1,   // auth: acceptor -> connector
  kHello = 2,       // auth: connector -> acceptor
  kWelcome = 3,     // auth: acceptor -> connector
  kFrameStart = 4,  // first (or only) fragment of a frame
  kFrameMore = 5,   // a following fragment
  kCredit = 6,      // no payload: returns credits when nothing else goes out
  kHeartbeat = 7,   // no payload: proves liveness on an idle link
};

// Host byte order, like the auth structs: one pdmd job is one binary on one
// architecture.
#pragma pack(push, 1)
struct WireHeader {
  uint8_t kind;      // MsgKind
  uint8_t reserved;  // 0
  uint16_t credits;  // receives the sender reposted since its last message
  uint32_t total;    // kFrameStart/kFrameMore: length of the whole frame
};
#pragma pack(pop)
static_assert(sizeof(WireHeader) == 8);
constexpr size_t kMaxPayload = kSlotBytes - sizeof(WireHeader);

template <typename T>
std::span<const uint8_t> AsBytes(const T& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}

// ---------------------------------------------------------------------------
// Error translation: the one place rdma_cm and verbs errors become Status.

// A failed verbs or rdma_cm call. Verbs calls return the errno; rdma_cm calls
// return -1 and set errno; callers pass whichever applies.
Status VerbsError(std::string_view call, std::string_view what, int err) {
  return FromErrno(err, fmt::format("verbs: {}({}): {}", call, what, std::strerror(err)));
}

// A work completion with error status: the QP is in the error state, so the
// peer is lost either way.
Status CompletionError(const ibv_wc& wc, std::string_view what) {
  return Unavailable(fmt::format("verbs: {} completion for {} failed: {} (vendor error {:#x})",
                                 (wc.wr_id & kSendWrFlag) ? "send" : "receive", what,
                                 ibv_wc_status_str(wc.status), wc.vendor_err),
                     ECONNRESET);
}

// An rdma_cm event that ends a connection. `status` is a negative errno for
// the error events and the IB reject reason for REJECTED.
Status CmEventError(rdma_cm_event_type type, int status, std::string_view what) {
  int err = ECONNRESET;
  switch (type) {
    case RDMA_CM_EVENT_REJECTED: err = ECONNREFUSED; break;
    case RDMA_CM_EVENT_DEVICE_REMOVAL: err = ENODEV; break;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE: err = status < 0 ? -status : EHOSTUNREACH; break;
    case RDMA_CM_EVENT_CONNECT_ERROR: err = status < 0 ? -status : ECONNRESET; break;
    default: break;
  }
  return Unavailable(fmt::format("verbs: {} for {} (status {})", rdma_event_str(type), what, status), err);
}

Status ProtocolViolation(std::string_view who, std::string_view what) {
  return Unavailable(fmt::format("verbs: protocol error from {}: {}", who, what), EPROTO);
}

// ---------------------------------------------------------------------------
// One owner per C handle. Traits name the release call so a failed release
// is logged with the right name; the destructor logs and carries on.

template <typename Traits>
class Owned {
 public:
  using Handle = typename Traits::Handle;
  Owned() = default;
  explicit Owned(Handle h) : h_(h) {}
  Owned(Owned&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Owned& operator=(Owned&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  ~Owned() { reset(); }

  Handle get() const { return h_; }
  Handle operator->() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }
  void reset() noexcept {
    if (h_ == nullptr) return;
    if (int err = Traits::Release(h_); err != 0) {
      spdlog::error("verbs: {} failed: {}", Traits::kReleaseCall, std::strerror(err));
    }
    h_ = nullptr;
  }

 private:
  Handle h_ = nullptr;
};

struct DeviceListTraits {
  using Handle = ibv_device**;
  static constexpr const char* kReleaseCall = "ibv_free_device_list";
  static int Release(Handle h) {
    ibv_free_device_list(h);
    return 0;
  }
};
struct EventChannelTraits {
  using Handle = rdma_event_channel*;
  static constexpr const char* kReleaseCall = "rdma_destroy_event_channel";
  static int Release(Handle h) {
    rdma_destroy_event_channel(h);
    return 0;
  }
};
struct CmIdTraits {
  using Handle = rdma_cm_id*;
  static constexpr const char* kReleaseCall = "rdma_destroy_id";
  static int Release(Handle h) { return rdma_destroy_id(h) == 0 ? 0 : errno; }
};
struct CompChannelTraits {
  using Handle = ibv_comp_channel*;
  static constexpr const char* kReleaseCall = "ibv_destroy_comp_channel";
  static int Release(Handle h) { return ibv_destroy_comp_channel(h); }
};
struct PdTraits {
  using Handle = ibv_pd*;
  static constexpr const char* kReleaseCall = "ibv_dealloc_pd";
  static int Release(Handle h) { return ibv_dealloc_pd(h); }
};
struct MrTraits {
  using Handle = ibv_mr*;
  static constexpr const char* kReleaseCall = "ibv_dereg_mr";
  static int Release(Handle h) { return ibv_dereg_mr(h); }
};
struct CqTraits {
  using Handle = ibv_cq*;
  static constexpr const char* kReleaseCall = "ibv_destroy_cq";
  static int Release(Handle h) { return ibv_destroy_cq(h); }
};
// rdma_create_qp hangs the QP off the cm_id, so the handle that releases it
// is the id (not owned here: CmId owns it and must outlive this).
struct CmQpTraits {
  using Handle = rdma_cm_id*;
  static constexpr const char* kReleaseCall = "rdma_destroy_qp";
  static int Release(Handle h) {
    rdma_destroy_qp(h);
    return 0;
  }
};

using DeviceList = Owned<DeviceListTraits>;
using EventChannel = Owned<EventChannelTraits>;
using CmId = Owned<CmIdTraits>;
using CompChannel = Owned<CompChannelTraits>;
using ProtectionDomain = Owned<PdTraits>;
using MemoryRegion = Owned<MrTraits>;
using CompletionQueue = Owned<CqTraits>;
using CmQueuePair = Owned<CmQpTraits>;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuffer = std::unique_ptr<uint8_t[], FreeDeleter>;

// ---------------------------------------------------------------------------
// Addresses.

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

std::string FormatHostPort(std::string_view host, uint16_t port) {
  if (host.find(':') != std::string_view::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

// "host:port" or "[v6addr]:port".
Result<HostPort> ParseHostPort(std::string_view s) {
  HostPort out;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return InvalidArgument(fmt::format("verbs: bad address '{}': expected [host]:port", s));
    }
    out.host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos || s.substr(0, colon).find(':') != std::string_view::npos) {
      return InvalidArgument(fmt::format("verbs: bad address '{}': expected host:port", s));
    }
    out.host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (out.host.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    return InvalidArgument(fmt::format("verbs: bad address '{}': expected host:port", s));
  }
  out.port = static_cast<uint16_t>(value);
  return out;
}

struct SockAddr {
  sockaddr_storage storage{};
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

// getaddrinfo errors are translated here, their one place.
Result<SockAddr> ResolveHost(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    std::string msg = fmt::format("verbs: cannot resolve '{}': {}", host, ::gai_strerror(rc));
    if (rc == EAI_SYSTEM) return FromErrno(errno, msg);
    return rc == EAI_AGAIN ? Unavailable(msg) : InvalidArgument(msg);
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, &::freeaddrinfo);
  SockAddr out;
  std::memcpy(&out.storage, res->ai_addr, std::min<size_t>(res->ai_addrlen, sizeof(out.storage)));
  return out;
}

std::string SockaddrToString(const sockaddr* sa) {
  if (sa == nullptr || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) return "?";
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  socklen_t len = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return FormatHostPort(host, static_cast<uint16_t>(std::atoi(serv)));
}

Status SetNonBlocking(int fd, std::string_view what) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return PosixError("fcntl(O_NONBLOCK)", what, errno);
  return Status::Ok();
}

rdma_conn_param ConnParam() {
  rdma_conn_param p{};
  p.responder_resources = 0;  // SEND/RECV only: no RDMA reads either way
  p.initiator_depth = 0;
  p.retry_count = 7;
  // The credit window guarantees a posted receive for every send, so an RNR
  // NAK means a bug; surface it as a failed completion instead of retrying.
  p.rnr_retry_count = 0;
  return p;
}

// ---------------------------------------------------------------------------
// Connection: one RC queue pair to one peer and everything it needs.

enum class Role : uint8_t { kConnector, kAcceptor };

enum class ConnState : uint8_t {
  kResolvingAddr,   // connector: rdma_resolve_addr issued
  kResolvingRoute,  // connector: rdma_resolve_route issued
  kConnecting,      // connector: rdma_connect issued
  kAccepting,       // acceptor: rdma_accept issued
  kAwaitChallenge,  // connector: established, waiting for the Challenge
  kAwaitHello,      // acceptor: sent the Challenge, waiting for the Hello
  kAwaitWelcome,    // connector: sent the Hello, waiting for the Welcome
  kReady,           // authenticated; frames flow
  kClosed,          // done; freed by the progress thread after the current batch
};

// Where the sender is within one frame.
struct FragmentCursor {
  uint32_t total = 0;    // frame length
  size_t next = 0;       // offset of the first byte not yet posted
  bool started = false;  // the kFrameStart fragment has been posted
  bool done() const { return started && next == total; }
};

// A frame (or the unsent rest of one) waiting for credits or send slots.
struct OutFrame {
  std::vector<uint8_t> tail;  // the frame's bytes from `base` on
  size_t base = 0;
  FragmentCursor cursor;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(CmId id, Role r, int peer_rank, std::string display_name)
      : role(r), peer(peer_rank), name(std::move(display_name)), id_(std::move(id)) {
    last_rx_ns = last_tx_ns_ = MonotonicNs();
  }
  // Disconnects first so the peer sees DISCONNECTED; then the members release
  // in reverse declaration order: QP, CQ, MR, buffer, PD, channel, cm_id.
  ~Connection() { Disconnect(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  rdma_cm_id* id() const { return id_.get(); }
  int comp_fd() const { return channel_ ? channel_->fd : -1; }
  ibv_comp_channel* comp_channel() const { return channel_.get(); }
  ibv_cq* cq() const { return cq_.get(); }

  // Acquires, on the device the cm_id resolved to, the completion channel,
  // PD, buffer, MR, CQ and QP in the order they depend on each other, and
  // posts every receive. On failure the members acquired so far are released
  // by the destructor.
  Status SetUp() {
    ibv_context* ctx = id_->verbs;
    if (ctx == nullptr) return Internal(fmt::format("verbs: {}: rdma_cm bound no device", name));
    channel_ = CompChannel(ibv_create_comp_channel(ctx));
    if (!channel_) return VerbsError("ibv_create_comp_channel", name, errno);
    // Nonblocking: epoll may report the fd readable after the event was taken.
    PDM_RETURN_IF_ERROR(SetNonBlocking(channel_->fd, "completion channel"));
    pd_ = ProtectionDomain(ibv_alloc_pd(ctx));
    if (!pd_) return VerbsError("ibv_alloc_pd", name, errno);
    const size_t bytes = kSlotBytes * (kRecvDepth + kSendDepth);
    buffer_.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)));
    if (!buffer_) return ResourceExhausted(fmt::format("verbs: {}: cannot allocate {} buffer bytes", name, bytes));
    // An int, not the enum: ibv_reg_mr is a macro that ANDs the flags with a
    // different enum type, which C++20 deprecates.
    const int access = IBV_ACCESS_LOCAL_WRITE;
    mr_ = MemoryRegion(ibv_reg_mr(pd_.get(), buffer_.get(), bytes, access));
    if (!mr_) return VerbsError("ibv_reg_mr", name, errno);
    cq_ = CompletionQueue(ibv_create_cq(ctx, kRecvDepth + kSendDepth, this, channel_.get(), 0));
    if (!cq_) return VerbsError("ibv_create_cq", name, errno);
    if (int err = ibv_req_notify_cq(cq_.get(), 0)) return VerbsError("ibv_req_notify_cq", name, err);
    ibv_qp_init_attr attr{};
    attr.send_cq = cq_.get();
    attr.recv_cq = cq_.get();
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = kSendDepth;
    attr.cap.max_recv_wr = kRecvDepth;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    if (rdma_create_qp(id_.get(), pd_.get(), &attr) != 0) return VerbsError("rdma_create_qp", name, errno);
    qp_ = CmQueuePair(id_.get());
    // Every receive is posted before connect/accept: that is what makes the
    // peer's initial kRecvDepth credits true.
    for (uint32_t slot = 0; slot < kRecvDepth; ++slot) PDM_RETURN_IF_ERROR(PostRecv(slot));
    std::lock_guard lock(mu);
    for (uint32_t slot = kSendDepth; slot > 0; --slot) free_send_slots_.push_back(slot - 1);
    return Status::Ok();
  }

  // Only the progress thread posts receives, so no lock.
  Status PostRecv(uint32_t slot) {
    ibv_sge sge{};
    sge.addr = reinterpret_cast<uintptr_t>(RecvSlot(slot));
    sge.length = static_cast<uint32_t>(kSlotBytes);
    sge.lkey = mr_->lkey;
    ibv_recv_wr wr{};
    wr.wr_id = slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    if (int err = ibv_post_recv(id_->qp, &wr, &bad)) return VerbsError("ibv_post_recv", name, err);
    return Status::Ok();
  }

  const uint8_t* RecvSlot(uint32_t slot) const { return buffer_.get() + size_t{slot} * kSlotBytes; }

  // Idempotent; only meaningful after ESTABLISHED. The peer gets
  // RDMA_CM_EVENT_DISCONNECTED, our QP moves to the error state.
  void Disconnect() {
    if (!established || disconnected_) return;
    disconnected_ = true;
    if (rdma_disconnect(id_.get()) != 0) spdlog::debug("verbs: rdma_disconnect({}): {}", name, std::strerror(errno));
  }

  // ---- send side; every *Locked method requires `mu`.

  // A send slot is free and the window allows a message of class `c`.
  bool CanPostLocked(MessageClass c) const { return !free_send_slots_.empty() && window_.CanSend(c); }

  // Posts one message. Requires CanPostLocked(cls).
  Status PostLocked(MessageClass cls, MsgKind kind, uint32_t total, std::span<const uint8_t> payload) {
    if (free_send_slots_.empty() || payload.size() > kMaxPayload) {
      return Internal(fmt::format("verbs: {}: send posted without a free slot", name));
    }
    std::optional<uint16_t> credits = window_.Spend(cls);
    if (!credits) return Internal(fmt::format("verbs: {}: send posted without a credit", name));
    const uint32_t slot = free_send_slots_.back();
    free_send_slots_.pop_back();
    uint8_t* p = SendSlot(slot);
    const WireHeader h{static_cast<uint8_t>(kind), 0, *credits, total};
    std::memcpy(p, &h, sizeof h);
    if (!payload.empty()) std::memcpy(p + sizeof h, payload.data(), payload.size());
    ibv_sge sge{};
    sge.addr = reinterpret_cast<uintptr_t>(p);
    sge.length = static_cast<uint32_t>(sizeof h + payload.size());
    sge.lkey = mr_->lkey;
    ibv_send_wr wr{};
    wr.wr_id = kSendWrFlag | slot;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;  // the completion frees the slot
    ibv_send_wr* bad = nullptr;
    if (int err = ibv_post_send(id_->qp, &wr, &bad)) return VerbsError("ibv_post_send", name, err);
    last_tx_ns_ = MonotonicNs();
    return Status::Ok();
  }

  // Posts as many fragments of `frame` as slots and credits allow, then
  // queues the rest (copied) behind any frames already waiting.
  Status SendFrameLocked(std::span<const uint8_t> frame) {
    FragmentCursor cursor{static_cast<uint32_t>(frame.size()), 0, false};
    if (queue_.empty()) {
      while (!cursor.done() && CanPostLocked(MessageClass::kData)) {
        PDM_RETURN_IF_ERROR(PostFragmentLocked(frame, 0, cursor));
      }
    }
    if (!cursor.done()) {
      queue_.push_back(OutFrame{std::vector<uint8_t>(frame.begin() + cursor.next, frame.end()), cursor.next, cursor});
    }
    return FlushLocked();  // a credit message may be due
  }

  // Posts what the window's policy says: queued fragments while data may go,
  // else an explicit credit message when one is due. Called after anything
  // that frees a slot, returns credits or adds owed credits.
  Status FlushLocked() {
    while (!free_send_slots_.empty()) {
      std::optional<MessageClass> next = window_.NextToSend(!queue_.empty());
      if (!next) break;
      if (*next == MessageClass::kCredit) {
        PDM_RETURN_IF_ERROR(PostLocked(MessageClass::kCredit, MsgKind::kCredit, 0, {}));
        continue;
      }
      OutFrame& f = queue_.front();
      PDM_RETURN_IF_ERROR(PostFragmentLocked(f.tail, f.base, f.cursor));
      if (f.cursor.done()) queue_.pop_front();
    }
    return Status::Ok();
  }

  // A heartbeat goes out only on a link idle for `interval_ns` in our
  // direction; a link blocked on credits is not idle, and the peer owes us
  // a credit message then anyway.
  Status HeartbeatIfIdleLocked(int64_t now_ns, int64_t interval_ns) {
    if (now_ns - last_tx_ns_ < interval_ns || !queue_.empty() || !CanPostLocked(MessageClass::kData)) {
      return Status::Ok();
    }
    return PostLocked(MessageClass::kData, MsgKind::kHeartbeat, 0, {});
  }

  void OnSendCompletedLocked(uint32_t slot) { free_send_slots_.push_back(slot); }
  CreditWindow& windowLocked() { return window_; }

  // ---- identity and progress-thread state (only the progress thread).
  const Role role;
  int peer;          // -1 for an acceptor until the Hello names the rank
  std::string name;  // "peer 3 at host:port", for logs and statuses
  ConnState state = role == Role::kConnector ? ConnState::kResolvingAddr : ConnState::kAccepting;
  bool established = false;  // saw ESTABLISHED: disconnect on close
  bool in_epoll = false;
  int64_t last_rx_ns;
  auth::Challenge challenge{};  // acceptor: what we sent
  auth::Hello hello{};          // connector: what we sent
  // Reassembly of a fragmented frame.
  bool reassembling = false;
  uint32_t partial_total = 0;
  std::vector<uint8_t> partial;
  // Frames that completed before the mesh did; delivered when it is.
  std::deque<std::vector<uint8_t>> held;

  // Send side, shared between Send() callers and the progress thread.
  std::mutex mu;
  Status broken;  // GUARDED_BY(mu): a post failure seen by a Send() caller

 private:
  uint8_t* SendSlot(uint32_t slot) { return buffer_.get() + size_t{kRecvDepth + slot} * kSlotBytes; }

  Status PostFragmentLocked(std::span<const uint8_t> bytes, size_t base, FragmentCursor& cursor) {
    const size_t len = std::min<size_t>(cursor.total - cursor.next, kMaxPayload);
    const MsgKind kind = cursor.started ? MsgKind::kFrameMore : MsgKind::kFrameStart;
    PDM_RETURN_IF_ERROR(PostLocked(MessageClass::kData, kind, cursor.total, bytes.subspan(cursor.next - base, len)));
    cursor.started = true;
    cursor.next += len;
    return Status::Ok();
  }

  // Resources in acquisition order (the cm_id first: it yields the device
  // context, and librdmacm requires the QP gone before the id is destroyed).
  CmId id_;
  CompChannel channel_;
  ProtectionDomain pd_;
  AlignedBuffer buffer_;  // kRecvDepth receive slots, then kSendDepth send slots
  MemoryRegion mr_;
  CompletionQueue cq_;
  CmQueuePair qp_;
  bool disconnected_ = false;

  CreditWindow window_{kRecvDepth, kCreditReserve, kCreditThreshold};  // GUARDED_BY(mu)
  std::vector<uint32_t> free_send_slots_;                              // GUARDED_BY(mu)
  std::deque<OutFrame> queue_;                                         // GUARDED_BY(mu)
  int64_t last_tx_ns_;                                                 // GUARDED_BY(mu)
};

}  // namespace

// ---------------------------------------------------------------------------
// VerbsTransport::Impl

class VerbsTransport::Impl {
 public:
  explicit Impl(const TransportOptions& opts)
      : opts_(opts),
        max_frame_(std::min<size_t>(opts.max_frame_bytes, UINT32_MAX)),
        failure_ns_(int64_t{std::max(1, opts.failure_timeout_ms)} * 1'000'000),
        heartbeat_ns_(int64_t{opts.heartbeat_interval_ms > 0 ? opts.heartbeat_interval_ms
                                                             : std::max(1, opts.failure_timeout_ms / 4)} *
                      1'000'000),
        peers_(static_cast<size_t>(std::max(opts.size, 0))) {}

  ~Impl() { Stop(); }

  Result<std::string> Listen();
  Status Start(const std::vector<std::string>& addresses, Handler* handler);
  Status Send(int peer, std::span<const uint8_t> frame);
  bool IsAlive(int peer) const;
  void Stop();

 private:
  enum class Phase : uint8_t { kNew, kListening, kStarting, kRunning, kStartFailed, kStopped };
  enum class PeerState : uint8_t {
    kWaiting,  // no authenticated connection yet
    kReady,    // authenticated connection bound
    kRefused,  // (a peer we connect to) its Welcome did not verify
    kDown,     // failed after being ready; stays down
  };
  struct Peer {
    PeerState state = PeerState::kWaiting;  // GUARDED_BY(peers_mu_)
    // The bound connection, GUARDED_BY(peers_mu_); written only by the
    // progress thread, which may therefore read it without the lock. Send()
    // copies it under the lock, so a connection outlives a Send() using it.
    std::shared_ptr<Connection> conn;
    Status last_error;  // GUARDED_BY(peers_mu_): why the last attempt failed
    // Progress thread only (written by Start before the thread exists).
    SockAddr addr;            // peers we connect to
    std::string addr_text;
    bool connecting = false;  // a connector Connection for it is open
    int64_t retry_at_ns = 0;
  };

  void Run();
  void Wake();
  int64_t TickNs() const;
  void OnTick(int64_t now);
  void BeginConnect(int peer);
  void DrainCmEvents();
  void OnConnectRequest(rdma_cm_id* id);
  void OnConnEvent(Connection& c, rdma_cm_event_type type, int status);
  void DrainCompletions(Connection& c);
  void PollCq(Connection& c);
  void OnCompletion(Connection& c, const ibv_wc& wc);
  void OnReceive(Connection& c, uint32_t slot, uint32_t bytes);
  void OnMessage(Connection& c, const WireHeader& h, std::span<const uint8_t> payload);
  void OnFrameFragment(Connection& c, const WireHeader& h, std::span<const uint8_t> payload);
  void Deliver(Connection& c, std::span<const uint8_t> frame);
  void DeliverHeld();
  void PostOrFail(Connection& c, MsgKind kind, std::span<const uint8_t> payload);
  void MarkReady(Connection& c);
  void Fail(Connection& c, const Status& why);
  void ProtocolError(Connection& c, std::string_view what);
  void Refuse(Connection& c, const Status& why);
  void PeerFailed(Connection& c, const Status& why);
  void AttemptFailed(Connection& c, const Status& why);
  void Close(Connection& c);
  void FailBroken();
  void FailAll(const Status& why);
  void Reap();
  std::string MissingPeersLocked() const;

  const TransportOptions opts_;
  const size_t max_frame_;
  const int64_t failure_ns_;
  const int64_t heartbeat_ns_;

  // Acquired by Listen() in this order; released in reverse after conns_.
  EventChannel cm_channel_;
  CmId listener_;
  UniqueFd epoll_;
  UniqueFd wake_;  // eventfd: Stop() and failing senders wake the thread
  SockAddr bind_addr_;  // bind_host, port 0: the source of our connections

  // Every connection in any state; only the progress thread (or Stop after
  // joining it) adds or drops one. A Send() may briefly share one, so the
  // thread frees a closed connection only once it holds the last reference:
  // a cm_id must not be destroyed while the thread may handle its events.
  // Declared after the event channel, which must outlive every cm_id on it.
  std::vector<std::shared_ptr<Connection>> conns_;
  bool reap_needed_ = false;

  // A plain mutex, held only for lookups: Send() callers in a tight loop
  // would starve a reader-writer lock's writer, and with it failure handling.
  mutable std::mutex peers_mu_;  // before any Connection::mu
  std::condition_variable phase_cv_;
  std::vector<Peer> peers_;
  int ready_count_ = 0;                 // GUARDED_BY(peers_mu_)
  Status start_error_;                  // GUARDED_BY(peers_mu_)
  std::atomic<Phase> phase_{Phase::kNew};  // written under peers_mu_
  Handler* handler_ = nullptr;          // set by Start before the thread exists

  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> any_broken_{false};
  std::atomic<std::thread::id> progress_tid_{};
  std::mutex stop_mu_;  // serializes Stop() and the thread's creation
  std::thread thread_;
};

Result<std::string> VerbsTransport::Impl::Listen() {
  if (phase_ != Phase::kNew) return FailedPrecondition("verbs: Listen() may be called once");
  {
    int n = 0;
    DeviceList devices(ibv_get_device_list(&n));
    // NULL (ENOSYS without kernel support) and an empty list mean the same.
    if (!devices || n == 0) return Unavailable("no RDMA device: ibv_get_device_list found none", ENODEV);
  }
  PDM_ASSIGN_OR_RETURN(SockAddr bind_addr, ResolveHost(opts_.bind_host, 0));

  // Locals in member order, so a failure halfway releases what was acquired.
  EventChannel channel(rdma_create_event_channel());
  if (!channel) return VerbsError("rdma_create_event_channel", opts_.bind_host, errno);
  PDM_RETURN_IF_ERROR(SetNonBlocking(channel->fd, "rdma_cm event channel"));
  rdma_cm_id* raw = nullptr;
  if (rdma_create_id(channel.get(), &raw, nullptr, RDMA_PS_TCP) != 0) {
    return VerbsError("rdma_create_id", "listener", errno);
  }
  CmId listener(raw);
  if (rdma_bind_addr(listener.get(), bind_addr.get()) != 0) return VerbsError("rdma_bind_addr", opts_.bind_host, errno);
  if (rdma_listen(listener.get(), kListenBacklog) != 0) return VerbsError("rdma_listen", opts_.bind_host, errno);
  const uint16_t port = ntohs(rdma_get_src_port(listener.get()));

  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep.valid()) return PosixError("epoll_create1", "verbs progress", errno);
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake.valid()) return PosixError("eventfd", "verbs wake-up", errno);
  // The tags are member addresses; connections register themselves.
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &cm_channel_;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, channel->fd, &ev) != 0) return PosixError("epoll_ctl", "cm channel", errno);
  ev.data.ptr = &wake_;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, wake.get(), &ev) != 0) return PosixError("epoll_ctl", "eventfd", errno);

  cm_channel_ = std::move(channel);
  listener_ = std::move(listener);
  epoll_ = std::move(ep);
  wake_ = std::move(wake);
  bind_addr_ = bind_addr;
  phase_ = Phase::kListening;
  return FormatHostPort(opts_.bind_host, port);
}

Status VerbsTransport::Impl::Start(const std::vector<std::string>& addresses, Handler* handler) {
  if (phase_ != Phase::kListening) {
    return FailedPrecondition("verbs: Start() needs a successful Listen() and may be called once");
  }
  if (handler == nullptr) return InvalidArgument("verbs: Start() without a handler");
  if (opts_.rank < 0 || opts_.rank >= opts_.size || addresses.size() != static_cast<size_t>(opts_.size)) {
    return InvalidArgument(fmt::format("verbs: rank {} of {} with {} addresses", opts_.rank, opts_.size,
                                       addresses.size()));
  }
  for (int j = 0; j < opts_.rank; ++j) {
    PDM_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(addresses[j]));
    PDM_ASSIGN_OR_RETURN(peers_[j].addr, ResolveHost(hp.host, hp.port));
    peers_[j].addr_text = addresses[j];
  }
  handler_ = handler;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.connect_timeout_ms);
  {
    std::lock_guard lock(peers_mu_);
    phase_ = opts_.size == 1 ? Phase::kRunning : Phase::kStarting;
  }
  {
    std::lock_guard guard(stop_mu_);
    if (stop_requested_) return Aborted("verbs: stopped during Start()");
    thread_ = std::thread(&Impl::Run, this);
  }

  Status result;
  {
    std::unique_lock lock(peers_mu_);
    phase_cv_.wait_until(lock, deadline, [this] { return phase_ != Phase::kStarting; });
    switch (phase_.load()) {
      case Phase::kRunning: return Status::Ok();
      case Phase::kStarting:
        phase_ = Phase::kStartFailed;  // the thread stops retrying
        result = DeadlineExceeded(fmt::format("verbs: rank {}: mesh incomplete after {} ms; missing {}", opts_.rank,
                                              opts_.connect_timeout_ms, MissingPeersLocked()));
        break;
      case Phase::kStartFailed: result = start_error_; break;
      default: result = Aborted("verbs: stopped during Start()"); break;
    }
  }
  Stop();
  return result;
}

std::string VerbsTransport::Impl::MissingPeersLocked() const {
  std::string out;
  for (int j = 0; j < opts_.size; ++j) {
    if (j == opts_.rank || peers_[j].state == PeerState::kReady) continue;
    if (!out.empty()) out += "; ";
    out += fmt::format("peer {}", j);
    if (j < opts_.rank) {
      out += fmt::format(" at {}", peers_[j].addr_text);
      if (!peers_[j].last_error.ok()) out += fmt::format(" (last error: {})", peers_[j].last_error.ToString());
    } else {
      out += " (never authenticated to us)";
    }
  }
  return out;
}

Status VerbsTransport::Impl::Send(int peer, std::span<const uint8_t> frame) {
  if (peer < 0 || peer >= opts_.size || peer == opts_.rank) {
    return InvalidArgument(fmt::format("verbs: Send to invalid peer {}", peer));
  }
  if (frame.size() > max_frame_) {
    return InvalidArgument(fmt::format("verbs: frame of {} bytes exceeds max_frame_bytes {}", frame.size(), max_frame_),
                           EMSGSIZE);
  }
  std::shared_ptr<Connection> conn;
  {
    std::lock_guard lock(peers_mu_);
    const Peer& p = peers_[peer];
    if (p.state != PeerState::kReady || p.conn == nullptr) {
      return Unavailable(
          fmt::format("verbs: peer {} is {}", peer, p.state == PeerState::kDown ? "down" : "not connected"), ENOTCONN);
    }
    conn = p.conn;
  }
  // If the peer fails meanwhile, the post below goes to a QP in the error
  // state and is flushed: the frame is lost with the peer, as it would be a
  // moment later anyway.
  Connection& c = *conn;
  std::lock_guard conn_lock(c.mu);
  if (c.broken.ok()) {
    Status st = c.SendFrameLocked(frame);
    if (st.ok()) return st;
    // Not ours to fail: the progress thread owns the connection's life cycle.
    c.broken = std::move(st);
    any_broken_ = true;
    Wake();
  }
  return Unavailable(fmt::format("verbs: peer {} is failing: {}", peer, c.broken.message()), ECONNRESET);
}

bool VerbsTransport::Impl::IsAlive(int peer) const {
  if (peer < 0 || peer >= opts_.size) return false;
  if (peer == opts_.rank) return true;
  std::lock_guard lock(peers_mu_);
  return peers_[peer].state == PeerState::kReady;
}

void VerbsTransport::Impl::Stop() {
  if (progress_tid_.load() == std::this_thread::get_id()) {
    // From inside a handler: joining ourselves would deadlock. The loop ends
    // after the callback returns; the next Stop() from outside cleans up.
    stop_requested_ = true;
    return;
  }
  std::lock_guard guard(stop_mu_);
  stop_requested_ = true;
  Wake();
  if (thread_.joinable()) thread_.join();
  progress_tid_ = std::thread::id();
  {
    std::lock_guard lock(peers_mu_);
    for (Peer& p : peers_) {
      p.conn.reset();
      if (p.state == PeerState::kReady) p.state = PeerState::kDown;
    }
    ready_count_ = 0;
    phase_ = Phase::kStopped;
  }
  phase_cv_.notify_all();
  // Each disconnects, then frees QP, CQ, MR, buffer, PD, channel, id; one
  // still shared by a Send() in flight goes when that call returns, which is
  // safe now that no thread handles its events.
  conns_.clear();
  listener_.reset();
}

void VerbsTransport::Impl::Wake() {
  if (!wake_.valid()) return;
  const uint64_t one = 1;
  // EAGAIN means the counter is already nonzero: the thread wakes anyway.
  if (::write(wake_.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
    spdlog::error("verbs: eventfd write: {}", std::strerror(errno));
  }
}

int64_t VerbsTransport::Impl::TickNs() const {
  int64_t tick = std::max<int64_t>(heartbeat_ns_ / 2, 1'000'000);
  if (phase_ == Phase::kStarting) tick = std::min(tick, kStartTickNs);
  return tick;
}

// ---- the progress thread

void VerbsTransport::Impl::Run() {
  progress_tid_ = std::this_thread::get_id();
  if (phase_ == Phase::kStarting) {
    for (int j = 0; j < opts_.rank; ++j) BeginConnect(j);
  }
  int64_t next_tick = MonotonicNs() + TickNs();
  epoll_event events[64];
  while (!stop_requested_) {
    const int64_t wait_ns = std::max<int64_t>(next_tick - MonotonicNs(), 0);
    const int timeout_ms = static_cast<int>((wait_ns + 999'999) / 1'000'000);
    int n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      FailAll(PosixError("epoll_wait", "verbs progress", errno));
      break;
    }
    // Connections closed while handling this batch are freed only after it,
    // so a later event in the same batch never points at a freed one.
    for (int i = 0; i < n && !stop_requested_; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &wake_) {
        uint64_t count;
        if (::read(wake_.get(), &count, sizeof count) < 0 && errno != EAGAIN) {
          spdlog::error("verbs: eventfd read: {}", std::strerror(errno));
        }
      } else if (tag == &cm_channel_) {
        DrainCmEvents();
      } else {
        DrainCompletions(*static_cast<Connection*>(tag));
      }
    }
    if (any_broken_.exchange(false)) FailBroken();
    const int64_t now = MonotonicNs();
    if (now >= next_tick && !stop_requested_) {
      OnTick(now);
      next_tick = now + TickNs();
    }
    Reap();
  }
}

void VerbsTransport::Impl::OnTick(int64_t now) {
  if (phase_ == Phase::kStarting) {
    for (int j = 0; j < opts_.rank; ++j) {
      Peer& p = peers_[j];
      if (p.state == PeerState::kWaiting && !p.connecting && now >= p.retry_at_ns) BeginConnect(j);
    }
  }
  // Index loop: Fail() may call a handler, but never adds a connection.
  for (size_t i = 0; i < conns_.size(); ++i) {
    Connection& c = *conns_[i];
    if (c.state == ConnState::kClosed || !c.established) continue;
    if (now - c.last_rx_ns > failure_ns_) {
      // The thread may have been late (a slow handler); count what already
      // arrived before calling the peer silent.
      PollCq(c);
      if (c.state == ConnState::kClosed) continue;
      if (MonotonicNs() - c.last_rx_ns > failure_ns_) {
        Fail(c, Unavailable(fmt::format("verbs: nothing from {} for {} ms", c.name, failure_ns_ / 1'000'000),
                            ETIMEDOUT));
        continue;
      }
    }
    if (c.state != ConnState::kReady) continue;
    Status st;
    {
      std::lock_guard lock(c.mu);
      st = c.HeartbeatIfIdleLocked(now, heartbeat_ns_);
    }
    if (!st.ok()) Fail(c, st);
  }
}

void VerbsTransport::Impl::BeginConnect(int j) {
  Peer& p = peers_[j];
  rdma_cm_id* raw = nullptr;
  if (rdma_create_id(cm_channel_.get(), &raw, nullptr, RDMA_PS_TCP) != 0) {
    Status st = VerbsError("rdma_create_id", p.addr_text, errno);
    std::lock_guard lock(peers_mu_);
    p.last_error = st;
    p.retry_at_ns = MonotonicNs() + kConnectRetryNs;
    return;
  }
  auto conn =
      std::make_shared<Connection>(CmId(raw), Role::kConnector, j, fmt::format("peer {} at {}", j, p.addr_text));
  raw->context = conn.get();
  Connection& c = *conn;
  conns_.push_back(std::move(conn));
  p.connecting = true;
  // Our bind address as the source pins the connection to the device the
  // listener is on.
  SockAddr src = bind_addr_;
  if (rdma_resolve_addr(raw, src.get(), p.addr.get(), kResolveTimeoutMs) != 0) {
    AttemptFailed(c, VerbsError("rdma_resolve_addr", c.name, errno));
  }
}

void VerbsTransport::Impl::DrainCmEvents() {
  for (;;) {
    rdma_cm_event* event = nullptr;
    if (rdma_get_cm_event(cm_channel_.get(), &event) != 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      Status why = VerbsError("rdma_get_cm_event", "cm channel", errno);
      // Level-triggered: a channel that keeps failing would spin the loop.
      ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, cm_channel_->fd, nullptr);
      FailAll(why);
      return;
    }
    // Copy and ack at once: rdma_destroy_id() waits for every event on its
    // id to be acked, and the handling below may destroy (reject) an id.
    const rdma_cm_event_type type = event->event;
    const int status = event->status;
    rdma_cm_id* id = event->id;
    if (rdma_ack_cm_event(event) != 0) spdlog::error("verbs: rdma_ack_cm_event: {}", std::strerror(errno));

    if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
      OnConnectRequest(id);
    } else if (id == listener_.get()) {
      if (type == RDMA_CM_EVENT_DEVICE_REMOVAL) FailAll(CmEventError(type, status, "the listener"));
    } else if (id->context != nullptr) {
      OnConnEvent(*static_cast<Connection*>(id->context), type, status);
    }
  }
}

void VerbsTransport::Impl::OnConnectRequest(rdma_cm_id* raw) {
  CmId id(raw);  // owns it from here; a refused request is destroyed on return
  const std::string from = SockaddrToString(rdma_get_peer_addr(raw));
  if (phase_ != Phase::kStarting) {
    // Every peer is bound (or Start failed): nobody may join later.
    spdlog::warn("verbs: rank {}: rejected a connection request from {} outside Start()", opts_.rank, from);
    if (rdma_reject(raw, nullptr, 0) != 0) spdlog::debug("verbs: rdma_reject({}): {}", from, std::strerror(errno));
    return;
  }
  auto conn = std::make_shared<Connection>(std::move(id), Role::kAcceptor, -1, "unauthenticated " + from);
  raw->context = conn.get();
  Status st = conn->SetUp();
  if (st.ok()) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = conn.get();
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, conn->comp_fd(), &ev) != 0) {
      st = PosixError("epoll_ctl", conn->name, errno);
    } else {
      conn->in_epoll = true;
    }
  }
  if (st.ok()) {
    rdma_conn_param param = ConnParam();
    if (rdma_accept(raw, &param) != 0) st = VerbsError("rdma_accept", conn->name, errno);
  }
  if (!st.ok()) {
    spdlog::warn("verbs: rank {}: cannot accept a connection from {}: {}", opts_.rank, from, st.ToString());
    if (rdma_reject(raw, nullptr, 0) != 0) spdlog::debug("verbs: rdma_reject({}): {}", from, std::strerror(errno));
    if (conn->in_epoll) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, conn->comp_fd(), nullptr);
    return;  // not in this batch's events: safe to free now
  }
  conns_.push_back(std::move(conn));
}

void VerbsTransport::Impl::OnConnEvent(Connection& c, rdma_cm_event_type type, int status) {
  if (c.state == ConnState::kClosed) return;  // e.g. the DISCONNECTED after our own
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
      if (rdma_resolve_route(c.id(), kResolveTimeoutMs) != 0) {
        AttemptFailed(c, VerbsError("rdma_resolve_route", c.name, errno));
        return;
      }
      c.state = ConnState::kResolvingRoute;
      return;
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
      // The route fixes the device, so the QP and its resources come now.
      Status st = c.SetUp();
      if (st.ok()) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = &c;
        if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.comp_fd(), &ev) != 0) {
          st = PosixError("epoll_ctl", c.name, errno);
        } else {
          c.in_epoll = true;
        }
      }
      rdma_conn_param param = ConnParam();
      if (st.ok() && rdma_connect(c.id(), &param) != 0) st = VerbsError("rdma_connect", c.name, errno);
      if (!st.ok()) {
        AttemptFailed(c, st);
        return;
      }
      c.state = ConnState::kConnecting;
      return;
    }
    case RDMA_CM_EVENT_ESTABLISHED:
      c.established = true;
      c.last_rx_ns = MonotonicNs();  // the silence timer starts now
      if (c.role == Role::kAcceptor && c.state == ConnState::kAccepting) {
        c.challenge = auth::MakeChallenge();
        c.state = ConnState::kAwaitHello;
        PostOrFail(c, MsgKind::kChallenge, AsBytes(c.challenge));
      } else if (c.state == ConnState::kConnecting) {
        c.state = ConnState::kAwaitChallenge;
      }
      return;
    case RDMA_CM_EVENT_DISCONNECTED:
      if (c.state == ConnState::kAwaitWelcome) {
        // The acceptor closes on a Hello it cannot verify.
        Refuse(c, PermissionDenied(fmt::format("verbs: {} closed the connection after our Hello: it refused our "
                                               "authentication (different job secret?)",
                                               c.name),
                                   EACCES));
        return;
      }
      Fail(c, Unavailable(fmt::format("verbs: {} disconnected", c.name), ECONNRESET));
      return;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
    case RDMA_CM_EVENT_CONNECT_ERROR:
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_REJECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
      Fail(c, CmEventError(type, status, c.name));
      return;
    default:
      // TIMEWAIT_EXIT, ADDR_CHANGE and the rest change nothing for us.
      spdlog::debug("verbs: {} for {}", rdma_event_str(type), c.name);
      return;
  }
}

void VerbsTransport::Impl::DrainCompletions(Connection& c) {
  if (c.state == ConnState::kClosed) return;
  ibv_cq* cq = nullptr;
  void* cq_context = nullptr;
  if (ibv_get_cq_event(c.comp_channel(), &cq, &cq_context) != 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) Fail(c, VerbsError("ibv_get_cq_event", c.name, errno));
    return;
  }
  // Ack at once: ibv_destroy_cq() waits for every event to be acked.
  ibv_ack_cq_events(cq, 1);
  // Re-arm before polling, so a completion that lands after the poll below
  // raises a new event instead of being missed.
  if (int err = ibv_req_notify_cq(cq, 0)) {
    Fail(c, VerbsError("ibv_req_notify_cq", c.name, err));
    return;
  }
  PollCq(c);
}

void VerbsTransport::Impl::PollCq(Connection& c) {
  ibv_wc wcs[16];
  while (c.state != ConnState::kClosed) {
    int n = ibv_poll_cq(c.cq(), 16, wcs);
    if (n < 0) {
      Fail(c, VerbsError("ibv_poll_cq", c.name, EIO));
      return;
    }
    if (n == 0) return;
    for (int i = 0; i < n; ++i) OnCompletion(c, wcs[i]);
  }
}

void VerbsTransport::Impl::OnCompletion(Connection& c, const ibv_wc& wc) {
  // After a close the QP flushes every posted request with an error: expected.
  if (c.state == ConnState::kClosed) return;
  if (wc.status != IBV_WC_SUCCESS) {
    Fail(c, CompletionError(wc, c.name));
    return;
  }
  const uint32_t slot = static_cast<uint32_t>(wc.wr_id & 0xffffffffu);
  if (wc.wr_id & kSendWrFlag) {
    Status st;
    {
      std::lock_guard lock(c.mu);
      c.OnSendCompletedLocked(slot);
      st = c.FlushLocked();
    }
    if (!st.ok()) Fail(c, st);
    return;
  }
  OnReceive(c, slot, wc.byte_len);
}

void VerbsTransport::Impl::OnReceive(Connection& c, uint32_t slot, uint32_t bytes) {
  c.last_rx_ns = MonotonicNs();
  if (bytes < sizeof(WireHeader)) {
    ProtocolError(c, fmt::format("message of {} bytes, shorter than the header", bytes));
    return;
  }
  WireHeader h;
  std::memcpy(&h, c.RecvSlot(slot), sizeof h);
  std::string violation;  // acted on outside the lock: failing may call a handler
  {
    std::lock_guard lock(c.mu);
    CreditWindow& w = c.windowLocked();
    if (!w.OnMessageReceived()) {
      violation = "message sent without a credit";
    } else if (!w.OnCreditsReturned(h.credits)) {
      violation = fmt::format("returned {} credits, more than it can owe", unsigned{h.credits});
    }
  }
  if (!violation.empty()) {
    ProtocolError(c, violation);
    return;
  }
  // The payload stays in the receive slot until OnMessage (and a handler
  // reading it in place) returns; only then is the slot reposted.
  OnMessage(c, h, {c.RecvSlot(slot) + sizeof h, bytes - sizeof h});
  if (c.state == ConnState::kClosed) return;
  Status st = c.PostRecv(slot);
  if (st.ok()) {
    std::lock_guard lock(c.mu);
    if (!c.windowLocked().OnReceiveReposted()) {
      st = Internal(fmt::format("verbs: {}: reposted a receive that was not consumed", c.name));
    } else {
      st = c.FlushLocked();  // returned credits may free queued frames; owed ones may be due
    }
  }
  if (!st.ok()) Fail(c, st);
}

void VerbsTransport::Impl::OnMessage(Connection& c, const WireHeader& h, std::span<const uint8_t> payload) {
  const auto kind = static_cast<MsgKind>(h.kind);
  switch (kind) {
    case MsgKind::kChallenge: {
      // kConnecting too: the Challenge can be polled from the CQ before the
      // ESTABLISHED event is read from the CM channel.
      if (c.role != Role::kConnector ||
          (c.state != ConnState::kAwaitChallenge && c.state != ConnState::kConnecting)) {
        ProtocolError(c, "unexpected Challenge");
        return;
      }
      if (payload.size() != sizeof(auth::Challenge)) {
        ProtocolError(c, fmt::format("Challenge of {} bytes", payload.size()));
        return;
      }
      auth::Challenge ch;
      std::memcpy(&ch, payload.data(), sizeof ch);
      if (ch.magic != auth::kMagic || ch.version != auth::kVersion) {
        Refuse(c, PermissionDenied(fmt::format("verbs: {} sent a Challenge with magic {:#x} version {}", c.name,
                                               uint32_t{ch.magic}, unsigned{ch.version}),
                                   EPROTO));
        return;
      }
      c.established = true;
      c.hello = auth::MakeHello(opts_.secret, ch, opts_.rank);
      c.state = ConnState::kAwaitWelcome;
      PostOrFail(c, MsgKind::kHello, AsBytes(c.hello));
      return;
    }
    case MsgKind::kHello: {
      if (c.role != Role::kAcceptor || c.state != ConnState::kAwaitHello) {
        ProtocolError(c, "unexpected Hello");
        return;
      }
      if (payload.size() != sizeof(auth::Hello)) {
        ProtocolError(c, fmt::format("Hello of {} bytes", payload.size()));
        return;
      }
      auth::Hello hello;
      std::memcpy(&hello, payload.data(), sizeof hello);
      Result<int> who = auth::VerifyHello(opts_.secret, c.challenge, hello, opts_.size);
      if (!who.ok()) {
        Refuse(c, who.status());
        return;
      }
      const int r = *who;
      if (r <= opts_.rank) {
        Refuse(c, PermissionDenied(fmt::format("verbs: {} claims rank {}, but only ranks above {} connect to us",
                                               c.name, r, opts_.rank)));
        return;
      }
      bool waiting;
      {
        std::lock_guard lock(peers_mu_);
        waiting = peers_[r].state == PeerState::kWaiting;
      }
      if (!waiting) {
        Refuse(c, AlreadyExists(
                      fmt::format("verbs: {} claims rank {}, which is already connected or failed", c.name, r)));
        return;
      }
      const auth::Welcome welcome = auth::MakeWelcome(opts_.secret, hello, opts_.rank);
      c.peer = r;
      c.name = fmt::format("peer {} at {}", r, SockaddrToString(rdma_get_peer_addr(c.id())));
      PostOrFail(c, MsgKind::kWelcome, AsBytes(welcome));
      if (c.state != ConnState::kClosed) MarkReady(c);
      return;
    }
    case MsgKind::kWelcome: {
      if (c.role != Role::kConnector || c.state != ConnState::kAwaitWelcome) {
        ProtocolError(c, "unexpected Welcome");
        return;
      }
      if (payload.size() != sizeof(auth::Welcome)) {
        ProtocolError(c, fmt::format("Welcome of {} bytes", payload.size()));
        return;
      }
      auth::Welcome welcome;
      std::memcpy(&welcome, payload.data(), sizeof welcome);
      Status st = auth::VerifyWelcome(opts_.secret, c.hello, welcome, c.peer);
      if (!st.ok()) {
        Refuse(c, st);
        return;
      }
      MarkReady(c);
      return;
    }
    case MsgKind::kFrameStart:
    case MsgKind::kFrameMore:
      if (c.state != ConnState::kReady) {
        ProtocolError(c, "frame before authentication");
        return;
      }
      OnFrameFragment(c, h, payload);
      return;
    case MsgKind::kCredit:
    case MsgKind::kHeartbeat:
      // The credits were taken from the header already; arriving was the point.
      if (c.state != ConnState::kReady) ProtocolError(c, "credit or heartbeat before authentication");
      return;
  }
  ProtocolError(c, fmt::format("unknown message kind {}", unsigned{h.kind}));
}

void VerbsTransport::Impl::OnFrameFragment(Connection& c, const WireHeader& h, std::span<const uint8_t> payload) {
  if (static_cast<MsgKind>(h.kind) == MsgKind::kFrameStart) {
    if (c.reassembling) {
      ProtocolError(c, fmt::format("new frame while {} of {} bytes of the last one are missing",
                                   c.partial_total - c.partial.size(), c.partial_total));
      return;
    }
    if (h.total > max_frame_) {
      ProtocolError(c, fmt::format("frame of {} bytes exceeds max_frame_bytes {}", uint32_t{h.total}, max_frame_));
      return;
    }
    if (payload.size() > h.total) {
      ProtocolError(c, fmt::format("fragment of {} bytes in a frame of {}", payload.size(), uint32_t{h.total}));
      return;
    }
    if (payload.size() == h.total) {
      Deliver(c, payload);  // unfragmented: straight from the receive slot
      return;
    }
    c.reassembling = true;
    c.partial_total = h.total;
    c.partial.clear();
    c.partial.reserve(h.total);
    c.partial.insert(c.partial.end(), payload.begin(), payload.end());
    return;
  }
  if (!c.reassembling || h.total != c.partial_total) {
    ProtocolError(c, "continuation fragment without a matching frame start");
    return;
  }
  if (payload.size() > c.partial_total - c.partial.size()) {
    ProtocolError(c, fmt::format("fragments overrun a frame of {} bytes", c.partial_total));
    return;
  }
  c.partial.insert(c.partial.end(), payload.begin(), payload.end());
  if (c.partial.size() < c.partial_total) return;
  c.reassembling = false;
  std::vector<uint8_t> frame = std::move(c.partial);
  c.partial = {};
  Deliver(c, frame);
}

void VerbsTransport::Impl::Deliver(Connection& c, std::span<const uint8_t> frame) {
  if (phase_ == Phase::kRunning) {
    handler_->OnFrame(c.peer, frame);
  } else {
    c.held.emplace_back(frame.begin(), frame.end());
  }
}

void VerbsTransport::Impl::DeliverHeld() {
  for (int r = 0; r < opts_.size; ++r) {
    Connection* c = peers_[r].conn.get();
    while (c != nullptr && !c->held.empty()) {
      std::vector<uint8_t> frame = std::move(c->held.front());
      c->held.pop_front();
      handler_->OnFrame(r, frame);
    }
  }
}

// The handshake messages: always within the initial credits, so a missing
// slot or credit here is a bug, reported as such by PostLocked.
void VerbsTransport::Impl::PostOrFail(Connection& c, MsgKind kind, std::span<const uint8_t> payload) {
  Status st;
  {
    std::lock_guard lock(c.mu);
    st = c.PostLocked(MessageClass::kData, kind, 0, payload);
  }
  if (!st.ok()) Fail(c, st);
}

void VerbsTransport::Impl::MarkReady(Connection& c) {
  c.state = ConnState::kReady;
  bool mesh_complete = false;
  {
    std::lock_guard lock(peers_mu_);
    Peer& p = peers_[c.peer];
    p.conn = c.shared_from_this();
    p.state = PeerState::kReady;
    p.last_error = Status::Ok();
    ++ready_count_;
    if (phase_ == Phase::kStarting && ready_count_ == opts_.size - 1) {
      phase_ = Phase::kRunning;
      mesh_complete = true;
    }
  }
  phase_cv_.notify_all();
  spdlog::debug("verbs: rank {}: {} authenticated", opts_.rank, c.name);
  if (mesh_complete) DeliverHeld();
}

void VerbsTransport::Impl::Fail(Connection& c, const Status& why) {
  switch (c.state) {
    case ConnState::kClosed: return;
    case ConnState::kReady: PeerFailed(c, why); return;
    default: break;
  }
  if (c.role == Role::kConnector) {
    AttemptFailed(c, why);
    return;
  }
  spdlog::info("verbs: rank {}: dropped {} before authentication: {}", opts_.rank, c.name, why.ToString());
  Close(c);
}

void VerbsTransport::Impl::ProtocolError(Connection& c, std::string_view what) {
  Status st = ProtocolViolation(c.name, what);
  // An unauthenticated peer breaking the handshake is refused, loudly.
  if (c.state == ConnState::kReady) {
    Fail(c, st);
  } else {
    Refuse(c, st);
  }
}

void VerbsTransport::Impl::Refuse(Connection& c, const Status& why) {
  spdlog::warn("verbs: rank {}: refused {}: {}", opts_.rank, c.name, why.ToString());
  Close(c);
  if (c.role != Role::kConnector) return;  // the real peer may still connect
  // The peer at the address we were given cannot prove the secret: retrying
  // would not change that.
  {
    std::lock_guard lock(peers_mu_);
    Peer& p = peers_[c.peer];
    p.state = PeerState::kRefused;
    p.last_error = why;
    if (phase_ == Phase::kStarting) {
      phase_ = Phase::kStartFailed;
      start_error_ = PermissionDenied(
          fmt::format("verbs: rank {}: authentication with {} failed: {}", opts_.rank, c.name, why.message()), EACCES);
    }
  }
  phase_cv_.notify_all();
}

void VerbsTransport::Impl::PeerFailed(Connection& c, const Status& why) {
  const int r = c.peer;
  bool report = false;
  {
    std::lock_guard lock(peers_mu_);
    Peer& p = peers_[r];
    if (p.conn.get() == &c) p.conn.reset();
    if (p.state == PeerState::kReady) {
      p.state = PeerState::kDown;
      p.last_error = why;
      --ready_count_;
      if (phase_ == Phase::kRunning) {
        report = true;
      } else if (phase_ == Phase::kStarting) {
        phase_ = Phase::kStartFailed;
        start_error_ = Unavailable(fmt::format("verbs: rank {}: {} failed before the mesh was complete: {}",
                                               opts_.rank, c.name, why.message()),
                                   why.err());
      }
    }
  }
  phase_cv_.notify_all();
  Close(c);
  if (report) {
    spdlog::warn("verbs: rank {}: {} is down: {}", opts_.rank, c.name, why.ToString());
    handler_->OnPeerDown(r, why);
  }
}

void VerbsTransport::Impl::AttemptFailed(Connection& c, const Status& why) {
  Close(c);
  Peer& p = peers_[c.peer];
  {
    std::lock_guard lock(peers_mu_);
    p.last_error = why;
  }
  if (phase_ == Phase::kStarting) {
    spdlog::debug("verbs: rank {}: connecting to {} failed, retrying: {}", opts_.rank, c.name, why.ToString());
    p.retry_at_ns = MonotonicNs() + kConnectRetryNs;
  }
}

void VerbsTransport::Impl::Close(Connection& c) {
  if (c.state == ConnState::kClosed) return;
  c.state = ConnState::kClosed;
  c.Disconnect();
  c.held.clear();
  c.partial = {};
  if (c.role == Role::kConnector) peers_[c.peer].connecting = false;
  // Out of the epoll set now: the flushed completions that follow would keep
  // a level-triggered fd ready while the connection waits to be freed.
  if (c.in_epoll) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.comp_fd(), nullptr);
    c.in_epoll = false;
  }
  reap_needed_ = true;
}

void VerbsTransport::Impl::FailBroken() {
  for (size_t i = 0; i < conns_.size(); ++i) {
    Connection& c = *conns_[i];
    Status why;
    {
      std::lock_guard lock(c.mu);
      why = c.broken;
    }
    if (!why.ok()) Fail(c, why);
  }
}

void VerbsTransport::Impl::FailAll(const Status& why) {
  spdlog::error("verbs: rank {}: {}", opts_.rank, why.ToString());
  for (size_t i = 0; i < conns_.size(); ++i) Fail(*conns_[i], why);
  std::unique_lock lock(peers_mu_);
  if (phase_ == Phase::kStarting) {
    phase_ = Phase::kStartFailed;
    start_error_ = why;
    lock.unlock();
    phase_cv_.notify_all();
  }
}

void VerbsTransport::Impl::Reap() {
  if (!reap_needed_) return;
  reap_needed_ = false;
  {
    // PeerFailed unbinds already; this only guarantees that no new Send()
    // can reach a connection about to be freed.
    std::lock_guard lock(peers_mu_);
    for (Peer& p : peers_) {
      if (p.conn != nullptr && p.conn->state == ConnState::kClosed) p.conn.reset();
    }
  }
  // With the peer unbound no new reference can appear, so a use count of one
  // is final; a Send() still holding one defers the free to a later pass.
  std::erase_if(conns_, [this](const std::shared_ptr<Connection>& c) {
    if (c->state != ConnState::kClosed) return false;
    if (c.use_count() > 1) {
      reap_needed_ = true;
      return false;
    }
    return true;
  });
}

// ---------------------------------------------------------------------------

VerbsTransport::VerbsTransport(const TransportOptions& opts) : impl_(std::make_unique<Impl>(opts)) {}
VerbsTransport::~VerbsTransport() = default;
Result<std::string> VerbsTransport::Listen() { return impl_->Listen(); }
Status VerbsTransport::Start(const std::vector<std::string>& addresses, Handler* handler) {
  return impl_->Start(addresses, handler);
}
Status VerbsTransport::Send(int peer, std::span<const uint8_t> frame) { return impl_->Send(peer, frame); }
bool VerbsTransport::IsAlive(int peer) const { return impl_->IsAlive(peer); }
void VerbsTransport::Stop() { impl_->Stop(); }

}  // namespace pdm
