#include "transport/tcp_transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "transport/auth.h"

namespace pdm {

namespace {

constexpr uint8_t kKindData = 0;
constexpr uint8_t kKindHeartbeat = 1;
// [u32 len][u8 kind][3 bytes zero] then the payload padded to 8 bytes, so
// every payload starts 8-aligned in the receive buffer (FlatBuffers reads
// scalars in place and requires their natural alignment).
constexpr size_t kHeaderBytes = 8;
constexpr size_t Padded(size_t n) { return (n + 7) & ~size_t(7); }
constexpr uint32_t kWakeTag = 0xffffffffu;
constexpr uint32_t kTimerTag = 0xfffffffeu;
constexpr uint32_t kListenTag = 0xfffffffdu;

Result<sockaddr_in> Resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr)
    return InvalidArgument("cannot resolve host '" + host + "': " + gai_strerror(rc), EHOSTUNREACH);
  sockaddr_in sa = *reinterpret_cast<sockaddr_in*>(res->ai_addr);
  freeaddrinfo(res);
  sa.sin_port = htons(port);
  return sa;
}

Result<std::pair<std::string, uint16_t>> SplitAddress(const std::string& a) {
  auto colon = a.rfind(':');
  if (colon == std::string::npos || colon + 1 >= a.size())
    return InvalidArgument("bad transport address '" + a + "' (want host:port)");
  int port = std::atoi(a.c_str() + colon + 1);
  if (port <= 0 || port > 65535) return InvalidArgument("bad port in address '" + a + "'");
  return std::make_pair(a.substr(0, colon), static_cast<uint16_t>(port));
}

void SetTimeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

template <typename T>
Status SendStruct(int fd, const T& v, std::string_view what) {
  return WriteAll(fd, {reinterpret_cast<const uint8_t*>(&v), sizeof(T)}, what);
}
template <typename T>
Status RecvStruct(int fd, T* v, std::string_view what) {
  return ReadExact(fd, {reinterpret_cast<uint8_t*>(v), sizeof(T)}, what);
}

}  // namespace

TcpTransport::TcpTransport(const TransportOptions& opts) : opts_(opts) {
  if (opts_.heartbeat_interval_ms <= 0) opts_.heartbeat_interval_ms = std::max(1, opts_.failure_timeout_ms / 4);
  for (int i = 0; i < opts_.size; ++i) peers_.push_back(std::make_unique<Peer>());
}

TcpTransport::~TcpTransport() { Stop(); }

Result<std::string> TcpTransport::Listen() {
  PDM_ASSIGN_OR_RETURN(sockaddr_in sa, Resolve(opts_.bind_host, 0));
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return PosixError("socket", "tcp listen", errno);
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
    return PosixError("bind", opts_.bind_host, errno);
  if (::listen(fd.get(), 128) != 0) return PosixError("listen", opts_.bind_host, errno);
  socklen_t len = sizeof(sa);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
  listen_fd_ = std::move(fd);
  return std::string(ip) + ":" + std::to_string(ntohs(sa.sin_port));
}

Status TcpTransport::ConnectTo(int peer, const std::string& address, int64_t deadline_ns) {
  PDM_ASSIGN_OR_RETURN(auto hp, SplitAddress(address));
  PDM_ASSIGN_OR_RETURN(sockaddr_in sa, Resolve(hp.first, hp.second));
  const std::string what = "rank " + std::to_string(peer) + " at " + address;
  for (;;) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return PosixError("socket", what, errno);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      int e = errno;
      if (MonotonicNs() > deadline_ns) return PosixError("connect", what, e);
      ::usleep(20000);
      continue;
    }
    SetTimeouts(fd.get(), 5000);
    auth::Challenge ch;
    PDM_RETURN_IF_ERROR(RecvStruct(fd.get(), &ch, what));
    if (ch.magic != auth::kMagic || ch.version != auth::kVersion)
      return InvalidArgument("handshake with " + what + ": bad challenge", EBADMSG);
    auth::Hello hello = auth::MakeHello(opts_.secret, ch, opts_.rank);
    PDM_RETURN_IF_ERROR(SendStruct(fd.get(), hello, what));
    auth::Welcome w;
    PDM_RETURN_IF_ERROR(RecvStruct(fd.get(), &w, what));
    PDM_RETURN_IF_ERROR(auth::VerifyWelcome(opts_.secret, hello, w, peer));
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SetTimeouts(fd.get(), opts_.failure_timeout_ms);
    peers_[peer]->fd = std::move(fd);
    return Status::Ok();
  }
}

Status TcpTransport::AcceptUntil(int64_t deadline_ns, int expected) {
  int accepted = 0;
  while (accepted < expected) {
    int64_t left_ms = (deadline_ns - MonotonicNs()) / 1000000;
    if (left_ms <= 0) break;
    pollfd p{listen_fd_.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 200)));
    if (rc <= 0) continue;
    UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd.valid()) continue;
    SetTimeouts(fd.get(), 5000);
    auth::Challenge ch = auth::MakeChallenge();
    if (!SendStruct(fd.get(), ch, "challenge").ok()) continue;
    auth::Hello hello;
    if (Status st = RecvStruct(fd.get(), &hello, "hello"); !st.ok()) {
      spdlog::warn("tcp: refused a connection: {}", st.ToString());
      continue;
    }
    Result<int> rank = auth::VerifyHello(opts_.secret, ch, hello, opts_.size);
    if (!rank.ok()) {
      spdlog::warn("tcp: refused a connection: {}", rank.status().ToString());
      continue;
    }
    int r = *rank;
    if (r <= opts_.rank || peers_[r]->fd.valid()) {
      spdlog::warn("tcp: refused a connection from rank {}: not expected (duplicate or lower rank)", r);
      continue;
    }
    if (!SendStruct(fd.get(), auth::MakeWelcome(opts_.secret, hello, opts_.rank), "welcome").ok()) continue;
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SetTimeouts(fd.get(), opts_.failure_timeout_ms);
    peers_[r]->fd = std::move(fd);
    ++accepted;
  }
  return Status::Ok();
}

Status TcpTransport::Start(const std::vector<std::string>& addresses, Handler* handler) {
  if (!listen_fd_.valid()) return FailedPrecondition("tcp: Start before Listen", EINVAL);
  if (static_cast<int>(addresses.size()) != opts_.size)
    return InvalidArgument("tcp: " + std::to_string(addresses.size()) + " addresses for " +
                           std::to_string(opts_.size) + " ranks");
  handler_ = handler;
  const int64_t deadline = MonotonicNs() + int64_t(opts_.connect_timeout_ms) * 1000000;
  std::thread acceptor([this, deadline] { (void)AcceptUntil(deadline, opts_.size - 1 - opts_.rank); });
  Status first_error;
  for (int j = 0; j < opts_.rank; ++j) {
    Status st = ConnectTo(j, addresses[j], deadline);
    if (!st.ok() && first_error.ok()) first_error = st;
  }
  acceptor.join();
  std::string missing;
  for (int j = 0; j < opts_.size; ++j)
    if (j != opts_.rank && !peers_[j]->fd.valid()) missing += (missing.empty() ? "" : ",") + std::to_string(j);
  if (!missing.empty()) {
    std::string msg = "tcp: rank " + std::to_string(opts_.rank) + " could not connect/authenticate ranks [" +
                      missing + "]";
    if (!first_error.ok()) msg += ": " + first_error.message();
    return DeadlineExceeded(msg);
  }

  epoll_fd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!epoll_fd_.valid() || !wake_fd_.valid() || !timer_fd_.valid())
    return PosixError("epoll/eventfd/timerfd", "tcp transport", errno);
  auto add = [this](int fd, uint32_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = tag;
    return ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev);
  };
  add(wake_fd_.get(), kWakeTag);
  add(timer_fd_.get(), kTimerTag);
  add(listen_fd_.get(), kListenTag);
  const int64_t now = MonotonicNs();
  for (int j = 0; j < opts_.size; ++j) {
    if (j == opts_.rank) continue;
    peers_[j]->last_rx_ns = now;
    peers_[j]->state = PeerState::kUp;
    add(peers_[j]->fd.get(), static_cast<uint32_t>(j));
  }
  itimerspec its{};
  its.it_interval.tv_sec = opts_.heartbeat_interval_ms / 1000;
  its.it_interval.tv_nsec = (opts_.heartbeat_interval_ms % 1000) * 1000000L;
  its.it_value = its.it_interval;
  timerfd_settime(timer_fd_.get(), 0, &its, nullptr);
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Status TcpTransport::SendRaw(int peer, uint8_t kind, std::span<const uint8_t> payload) {
  if (peer < 0 || peer >= opts_.size || peer == opts_.rank)
    return InvalidArgument("tcp: send to invalid rank " + std::to_string(peer));
  Peer& p = *peers_[peer];
  uint8_t hdr[kHeaderBytes] = {0};
  uint32_t len = static_cast<uint32_t>(payload.size());
  std::memcpy(hdr, &len, 4);  // little endian on every platform we build for
  hdr[4] = kind;
  static const uint8_t kZeros[8] = {0};
  iovec iov[3] = {{hdr, kHeaderBytes},
                  {const_cast<uint8_t*>(payload.data()), payload.size()},
                  {const_cast<uint8_t*>(kZeros), Padded(payload.size()) - payload.size()}};
  size_t total = kHeaderBytes + Padded(payload.size()), done = 0;
  std::lock_guard<std::mutex> lock(p.send_mu);
  // Checked under the lock: Stop() closes the fd under it too.
  if (p.state.load() != PeerState::kUp) return Unavailable("tcp: rank " + std::to_string(peer) + " is down", ECONNRESET);
  while (done < total) {
    msghdr msg{};
    iovec cur[3];
    int n = 0;
    size_t skip = done;
    for (auto& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      cur[n].iov_base = static_cast<uint8_t*>(v.iov_base) + skip;
      cur[n].iov_len = v.iov_len - skip;
      skip = 0;
      ++n;
    }
    msg.msg_iov = cur;
    msg.msg_iovlen = n;
    ssize_t w = ::sendmsg(p.fd.get(), &msg, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      // A frame cut off midway would garble every later one: the link is
      // done. The progress thread sees the shutdown and reports the peer.
      const int e = errno;
      ::shutdown(p.fd.get(), SHUT_RDWR);
      return PosixError("sendmsg", "rank " + std::to_string(peer), e);
    }
    done += static_cast<size_t>(w);
  }
  return Status::Ok();
}

Status TcpTransport::Send(int peer, std::span<const uint8_t> frame) {
  if (frame.size() > opts_.max_frame_bytes)
    return InvalidArgument("tcp: frame of " + std::to_string(frame.size()) + " bytes exceeds the limit", EMSGSIZE);
  return SendRaw(peer, kKindData, frame);
}

bool TcpTransport::IsAlive(int peer) const {
  if (peer == opts_.rank) return true;
  if (peer < 0 || peer >= opts_.size) return false;
  return peers_[peer]->state.load() == PeerState::kUp;
}

void TcpTransport::MarkDown(int peer, const Status& why) {
  Peer& p = *peers_[peer];
  PeerState expected = PeerState::kUp;
  if (!p.state.compare_exchange_strong(expected, PeerState::kDown)) return;
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, p.fd.get(), nullptr);
  ::shutdown(p.fd.get(), SHUT_RDWR);
  spdlog::warn("tcp: rank {} down: {}", peer, why.ToString());
  if (handler_) handler_->OnPeerDown(peer, why);
}

void TcpTransport::OnReadable(int peer) {
  Peer& p = *peers_[peer];
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::recv(p.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      MarkDown(peer, PosixError("recv", "rank " + std::to_string(peer), errno));
      return;
    }
    if (n == 0) {
      MarkDown(peer, Unavailable("connection closed by rank " + std::to_string(peer), ECONNRESET));
      return;
    }
    p.last_rx_ns = MonotonicNs();
    p.rx.insert(p.rx.end(), buf, buf + n);
    if (static_cast<size_t>(n) < sizeof(buf)) break;
  }
  size_t off = 0;
  while (p.rx.size() - off >= kHeaderBytes) {
    uint32_t len;
    std::memcpy(&len, p.rx.data() + off, 4);
    uint8_t kind = p.rx[off + 4];
    if (len > opts_.max_frame_bytes || kind > kKindHeartbeat) {
      MarkDown(peer, InvalidArgument("protocol error from rank " + std::to_string(peer) + ": frame kind " +
                                         std::to_string(kind) + " length " + std::to_string(len),
                                     EBADMSG));
      return;
    }
    if (p.rx.size() - off - kHeaderBytes < Padded(len)) break;
    if (kind == kKindData && handler_)
      handler_->OnFrame(peer, std::span<const uint8_t>(p.rx.data() + off + kHeaderBytes, len));
    off += kHeaderBytes + Padded(len);
    if (p.state.load() != PeerState::kUp) return;
  }
  if (off > 0) p.rx.erase(p.rx.begin(), p.rx.begin() + static_cast<long>(off));
}

void TcpTransport::Run() {
  epoll_event evs[64];
  while (!stopping_.load()) {
    int n = ::epoll_wait(epoll_fd_.get(), evs, 64, 1000);
    for (int i = 0; i < n; ++i) {
      uint32_t tag = evs[i].data.u32;
      if (tag == kWakeTag) return;
      if (tag == kTimerTag) {
        uint64_t ticks;
        (void)::read(timer_fd_.get(), &ticks, sizeof(ticks));
        const int64_t now = MonotonicNs();
        for (int j = 0; j < opts_.size; ++j) {
          if (j == opts_.rank || peers_[j]->state.load() != PeerState::kUp) continue;
          if (now - peers_[j]->last_rx_ns > int64_t(opts_.failure_timeout_ms) * 1000000) {
            MarkDown(j, DeadlineExceeded("no traffic from rank " + std::to_string(j) + " for " +
                                         std::to_string(opts_.failure_timeout_ms) + " ms"));
            continue;
          }
          (void)SendRaw(j, kKindHeartbeat, {});
        }
        continue;
      }
      if (tag == kListenTag) {
        // Membership is fixed at bootstrap: a late connection is refused.
        UniqueFd late(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (late.valid()) spdlog::warn("tcp: refused a connection after bootstrap (membership is fixed)");
        continue;
      }
      if (tag < static_cast<uint32_t>(opts_.size)) OnReadable(static_cast<int>(tag));
    }
  }
}

void TcpTransport::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_.valid()) {
    uint64_t one = 1;
    (void)::write(wake_fd_.get(), &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
  for (auto& p : peers_) {
    std::lock_guard<std::mutex> lock(p->send_mu);
    p->state = PeerState::kDown;
    p->fd.reset();
  }
}

}  // namespace pdm
