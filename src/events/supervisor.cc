#include "events/supervisor.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "dm/attrs.h"
#include "events/supervisor_protocol.h"

namespace pdm::events {

namespace {

Result<UniqueFd> ListenSeqpacket(const std::string& path) {
  PDM_ASSIGN_OR_RETURN(sockaddr_un sa, SupervisorAddress(path));
  UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return PosixError("socket", path, errno);
  // A socket file nobody listens on is left over from a dead supervisor.
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0)
    return AlreadyExists("an event supervisor already serves " + path, EADDRINUSE);
  ::unlink(path.c_str());
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return PosixError("socket", path, errno);
  const mode_t old = ::umask(0177);
  const int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::umask(old);
  if (rc != 0) return PosixError("bind", path, errno);
  if (::listen(fd.get(), 4) != 0) return PosixError("listen", path, errno);
  return fd;
}

}  // namespace

Supervisor::Supervisor(Options opts) : opts_(std::move(opts)) {}

Supervisor::~Supervisor() {
  if (!opts_.socket.empty() && listen_fd_.valid()) ::unlink(opts_.socket.c_str());
}

Status Supervisor::Start() {
  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd_.valid()) return PosixError("eventfd", "stop", errno);
  Result<FanotifyGroup> g = opts_.inherit_group_fd >= 0 ? FanotifyGroup::Adopt(UniqueFd(opts_.inherit_group_fd))
                                                        : FanotifyGroup::Create();
  if (!g.ok()) return g.status();
  group_ = std::make_unique<FanotifyGroup>(std::move(*g));
  // Marking twice is harmless (an inherited group has the mark already).
  PDM_RETURN_IF_ERROR(group_->MarkMount(opts_.view, FAN_PRE_ACCESS));
  PDM_ASSIGN_OR_RETURN(listen_fd_, ListenSeqpacket(opts_.socket));
  return Status::Ok();
}

void Supervisor::Stop() {
  const uint64_t one = 1;
  if (stop_fd_.valid()) (void)!::write(stop_fd_.get(), &one, sizeof one);
}

Status Supervisor::Run() {
  for (;;) {
    pollfd p[4] = {{stop_fd_.get(), POLLIN, 0}, {group_->fd(), POLLIN, 0}, {listen_fd_.get(), POLLIN, 0},
                   {agent_fd_.get(), POLLIN, 0}};
    bool unsent = false;
    for (auto& [id, h] : held_) unsent |= !h.sent;
    if (attached_ && unsent) p[3].events |= POLLOUT;
    const nfds_t n = agent_fd_.valid() ? 4 : 3;
    // Wake for the next event timeout when no agent can answer.
    int wait_ms = -1;
    if (!attached_ && timeout_ms_ > 0 && !held_.empty()) {
      int64_t oldest = INT64_MAX;
      for (auto& [id, h] : held_) oldest = std::min(oldest, h.since_ns);
      const int64_t left = oldest + timeout_ms_ * 1000000 - MonotonicNs();
      wait_ms = left <= 0 ? 0 : static_cast<int>(left / 1000000 + 1);
    }
    if (::poll(p, n, wait_ms) < 0) {
      if (errno == EINTR) continue;
      return PosixError("poll", "event supervisor", errno);
    }
    if (p[0].revents) break;
    if (p[1].revents & POLLIN) OnGroupReadable();
    if (p[2].revents & POLLIN) OnAccept();
    if (n == 4 && p[3].revents & (POLLIN | POLLHUP | POLLERR)) OnAgentReadable();
    if (n == 4 && agent_fd_.valid() && p[3].revents & POLLOUT) FlushToAgent();
    if (!attached_) ExpireHeld();
  }
  // Detaching: nothing held may be allowed through (that would read holes).
  if (!held_.empty()) spdlog::warn("eventd: detaching with {} accesses waiting: they fail with EIO", held_.size());
  for (auto& [id, h] : held_) Deny(h, EIO);
  held_.clear();
  return Status::Ok();
}

void Supervisor::OnGroupReadable() {
  auto evs = group_->Read(std::chrono::milliseconds(0));
  if (!evs.ok()) {
    spdlog::error("eventd: reading the group: {}", evs.status().ToString());
    return;
  }
  for (auto& e : *evs) {
    if (!e.NeedsResponse() || e.id < 0) continue;  // notifications, overflow: nothing waits on them
    if (!attached_ && AllowWithoutAgent(e)) continue;
    const int id = e.id;
    held_[id] = Held{std::move(e), MonotonicNs(), false};
  }
  if (attached_) FlushToAgent();
}

bool Supervisor::AllowWithoutAgent(const FanotifyEvent& ev) {
  auto regions = dm::GetRegions(ev.fd.get());
  if (!regions.ok()) return false;  // cannot tell what is missing: wait
  const uint64_t off = ev.range ? ev.range->offset : 0;
  const uint64_t len = ev.range ? ev.range->count : 0;
  for (const auto& r : *regions)
    if (dm::Overlaps(r, off, len)) return false;
  if (Status st = group_->Allow(ev); !st.ok()) spdlog::warn("eventd: allow: {}", st.ToString());
  return true;
}

void Supervisor::Deny(Held& h, int err) {
  Status st = group_->Deny(h.ev, err);
  // ENOENT: the agent answered it after all.
  if (!st.ok() && st.err() != ENOENT) spdlog::warn("eventd: deny: {}", st.ToString());
}

void Supervisor::ExpireHeld() {
  // A new agent may have lowered or raised the timeout; 0 means wait.
  if (timeout_ms_ <= 0) return;
  const int64_t now = MonotonicNs();
  for (auto it = held_.begin(); it != held_.end();) {
    if (now - it->second.since_ns >= timeout_ms_ * 1000000) {
      spdlog::warn("eventd: an access (pid {}) waited {} ms with no agent: EIO", it->second.ev.pid, timeout_ms_);
      Deny(it->second, EIO);
      it = held_.erase(it);
    } else {
      ++it;
    }
  }
}

void Supervisor::OnAccept() {
  UniqueFd fd(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!fd.valid()) return;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != 0) {
    spdlog::warn("eventd: refused a non-root agent (uid {})", cred.uid);
    return;
  }
  if (agent_fd_.valid()) {
    // One agent per group: a second one would answer events twice.
    spdlog::warn("eventd: refused agent pid {}: pid {} is attached", cred.pid, agent_pid_);
    return;
  }
  agent_fd_ = std::move(fd);
  agent_pid_ = cred.pid;
  attached_ = false;
}

void Supervisor::OnAgentReadable() {
  for (;;) {
    auto m = RecvSup(agent_fd_.get(), MSG_DONTWAIT);
    if (!m.ok()) {
      if (m.status().err() == EAGAIN) return;
      return AgentGone(m.status().err() == ECONNRESET ? "closed" : m.status().message().c_str());
    }
    switch (m->msg.type) {
      case SupType::kAttach: {
        timeout_ms_ = static_cast<int64_t>(m->msg.arg);
        SupMsg w;
        w.type = SupType::kWelcome;
        w.arg = held_.size();
        // Every id we hand out is an fd number below our limit: if we die,
        // the agent fails the numbers below it (see EventSource).
        rlimit nofile{};
        if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0)
          w.count = nofile.rlim_cur == RLIM_INFINITY || nofile.rlim_cur > (1u << 30) ? (1u << 30) : nofile.rlim_cur;
        if (Status st = SendSup(agent_fd_.get(), w, group_->fd()); !st.ok())
          return AgentGone(st.message().c_str());
        attached_ = true;
        for (auto& [id, h] : held_) h.sent = false;
        spdlog::info("eventd: agent attached; {} waiting accesses handed over", held_.size());
        FlushToAgent();
        break;
      }
      case SupType::kDone:
        held_.erase(m->msg.id);  // closes our copy of the event fd: the id may be reused now
        break;
      default:
        return AgentGone("sent an unexpected message");
    }
  }
}

void Supervisor::AgentGone(const char* why) {
  spdlog::warn("eventd: agent gone ({}); {} accesses wait for the next one", why, held_.size());
  agent_fd_.reset();
  attached_ = false;
  for (auto it = held_.begin(); it != held_.end();) {
    it->second.sent = false;
    // What the agent had not answered yet may need no agent at all.
    if (AllowWithoutAgent(it->second.ev)) it = held_.erase(it); else ++it;
  }
}

void Supervisor::FlushToAgent() {
  for (auto& [id, h] : held_) {
    if (h.sent) continue;
    SupMsg m;
    m.type = SupType::kEvent;
    m.id = id;
    m.pid = h.ev.pid;
    m.mask = h.ev.mask;
    if (h.ev.range) {
      m.has_range = 1;
      m.offset = h.ev.range->offset;
      m.count = h.ev.range->count;
    }
    Status st = SendSup(agent_fd_.get(), m, h.ev.fd.get(), MSG_DONTWAIT);
    if (!st.ok()) {
      if (st.err() == EAGAIN) return;  // POLLOUT brings us back
      return AgentGone(st.message().c_str());
    }
    h.sent = true;
  }
}

}  // namespace pdm::events
