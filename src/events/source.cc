#include "events/source.h"

#include <dmapi.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "dm/attrs.h"
#include "dm/handle.h"
#include "events/supervisor_protocol.h"

namespace pdm::events {

namespace {

// dm_data_event_t followed by the file's handle (its vardata).
std::vector<uint8_t> DataEventPayload(const dm::Handle& h, uint64_t off, uint64_t len) {
  std::span<const uint8_t> hb = h.bytes();
  std::vector<uint8_t> out(sizeof(dm_data_event_t) + hb.size());
  dm_data_event_t de{};
  de.de_handle.vd_offset = static_cast<int>(sizeof(dm_data_event_t));
  de.de_handle.vd_length = static_cast<unsigned>(hb.size());
  de.de_offset = static_cast<dm_off_t>(off);
  de.de_length = len;
  std::memcpy(out.data(), &de, sizeof(de));
  std::memcpy(out.data() + sizeof(de), hb.data(), hb.size());
  return out;
}

Result<UniqueFd> ConnectSeqpacket(const std::string& path) {
  PDM_ASSIGN_OR_RETURN(sockaddr_un sa, SupervisorAddress(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return PosixError("socket", path, errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return PosixError("connect", path, errno);
  return fd;
}

// A pidfd of the process listening on a connected Unix socket: race-free
// through SO_PEERPIDFD (Linux 6.5), else pidfd_open of SO_PEERCRED's pid.
UniqueFd PeerPidfd(int sock) {
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
  int pidfd = -1;
  socklen_t len = sizeof pidfd;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) return UniqueFd(pidfd);
  ucred cred{};
  len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.pid <= 0) return UniqueFd();
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, cred.pid, 0)));
}

// Starts pdm-eventd detached from us (its own session, reparented to init),
// so neither kill -9 of this process nor the MPI launcher's clean-up of our
// process group takes it along. group_fd >= 0 hands it our group (the
// previous supervisor died); it arrives as fd 3.
Status SpawnSupervisor(const EventSource::Options& o, int group_fd) {
  std::vector<std::string> args = {o.supervisor_exe, "--view", o.view, "--socket", o.supervisor_socket};
  if (group_fd >= 0) args.insert(args.end(), {"--group-fd", "3"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = o.supervisor_log.empty() ? "/dev/null" : o.supervisor_log;
  const pid_t child = ::fork();
  if (child < 0) return PosixError("fork", "pdm-eventd", errno);
  if (child == 0) {
    // Only async-signal-safe calls from here to exec: we were forked from a
    // multi-threaded process.
    if (::fork() != 0) ::_exit(0);
    ::setsid();
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in >= 0) ::dup2(in, 0);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    if (group_fd == 3) ::fcntl(3, F_SETFD, 0);
    else if (group_fd >= 0) ::dup2(group_fd, 3);  // dup2 clears close-on-exec
    // Nothing else of ours (MPI sockets, the transport, DMAPI clients) may
    // live on in the supervisor.
    ::close_range(group_fd >= 0 ? 4 : 3, ~0U, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  return Status::Ok();
}

}  // namespace

EventSource::EventSource(Options opts, Node* node) : opts_(std::move(opts)), node_(node) {}

EventSource::~EventSource() { Stop(); }

Status EventSource::Start() {
  view_fd_.reset(::open(opts_.view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!view_fd_.valid()) return PosixError("open", opts_.view, errno);
  PDM_ASSIGN_OR_RETURN(fsid_, dm::FsidOfFd(view_fd_.get()));
  {
    // Ask the kernel here, where the caller sees the answer, rather than
    // leave a spawned supervisor to fail on its own (tmpfs: EOPNOTSUPP).
    PDM_ASSIGN_OR_RETURN(FanotifyGroup probe, FanotifyGroup::Create());
    PDM_RETURN_IF_ERROR(probe.MarkMount(opts_.view, FAN_PRE_ACCESS));
  }
  PDM_RETURN_IF_ERROR(Attach());
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Status EventSource::Attach() {
  // A supervisor that died leaves its group with us only: hand it on.
  const int inherit = group_ ? group_->fd() : -1;
  Result<UniqueFd> link = ConnectSeqpacket(opts_.supervisor_socket);
  if (!link.ok() && !opts_.supervisor_exe.empty()) {
    // Never two readers of one group: the one we knew must be gone (and its
    // accesses failed) before another gets the group.
    PDM_RETURN_IF_ERROR(FailAccessesOfDeadSupervisor(0));
    PDM_RETURN_IF_ERROR(SpawnSupervisor(opts_, inherit));
    for (int i = 0; i < 250 && !link.ok(); ++i) {
      ::usleep(20000);
      link = ConnectSeqpacket(opts_.supervisor_socket);
    }
  }
  if (!link.ok()) return link.status();
  SupMsg a;
  a.type = SupType::kAttach;
  a.arg = static_cast<uint64_t>(std::max<int64_t>(0, opts_.event_timeout_ms));
  PDM_RETURN_IF_ERROR(SendSup(link->get(), a));
  pollfd p{link->get(), POLLIN, 0};
  if (::poll(&p, 1, 5000) != 1) return DeadlineExceeded("event supervisor did not welcome us", ETIMEDOUT);
  PDM_ASSIGN_OR_RETURN(SupReceived w, RecvSup(link->get()));
  if (w.msg.type != SupType::kWelcome || !w.fd.valid())
    return InvalidArgument("event supervisor: expected a welcome with the group", EPROTO);
  PDM_ASSIGN_OR_RETURN(FanotifyGroup g, FanotifyGroup::Adopt(std::move(w.fd)));
  sup_pidfd_ = PeerPidfd(link->get());
  if (!sup_pidfd_.valid()) spdlog::warn("events: no pidfd of the event supervisor: {}", std::strerror(errno));
  // An older supervisor does not say; the kernel's default ceiling then.
  sup_fd_limit_ = w.msg.count > 0 && w.msg.count <= (1u << 30) ? static_cast<int>(w.msg.count) : 1 << 20;
  std::lock_guard<std::mutex> lk(group_mu_);
  group_ = std::make_unique<FanotifyGroup>(std::move(g));
  link_ = std::move(*link);
  ++link_gen_;
  if (w.msg.arg) spdlog::info("events: attached; the supervisor held {} waiting accesses", w.msg.arg);
  return Status::Ok();
}

Status EventSource::FailAccessesOfDeadSupervisor(int wait_ms) {
  if (!sup_pidfd_.valid() || !group_) return Status::Ok();
  pollfd p{sup_pidfd_.get(), POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, wait_ms);
  } while (n < 0 && errno == EINTR);
  if (n == 0) return Unavailable("the event supervisor still runs but does not serve us", EAGAIN);
  // Exited. Nothing else reads the group now (we hold its only other fd), so
  // every access waiting under a number is one the dead supervisor read.
  std::lock_guard<std::mutex> lk(group_mu_);
  uint32_t response = FAN_DENY_ERRNO(EIO);
  int failed = 0;
  for (int id = 0; id < sup_fd_limit_; ++id) {
    Status st = group_->Respond(id, response);
    if (!st.ok() && st.err() == EINVAL && response != FAN_DENY) {
      response = FAN_DENY;  // a kernel that takes no errno: EPERM, still never data
      st = group_->Respond(id, response);
    }
    if (st.ok()) ++failed;
    else if (st.err() != ENOENT) spdlog::warn("events: failing access {}: {}", id, st.ToString());
  }
  spdlog::warn("events: the event supervisor died; {} accesses it had read fail with EIO", failed);
  sup_pidfd_.reset();
  return Status::Ok();
}

void EventSource::Stop() {
  if (stopping_.exchange(true)) return;
  if (thread_.joinable()) thread_.join();
  // The supervisor keeps the group: what we did not answer waits for the
  // next agent (or fails with EIO after its event timeout). Never FAN_ALLOW.
  std::lock_guard<std::mutex> lk(group_mu_);
  link_.reset();
  group_.reset();
}

void EventSource::Rewatch(const std::string& handle_bytes) {
  std::lock_guard<std::mutex> lk(group_mu_);
  if (!group_) return;
  auto h = dm::Handle::Parse({reinterpret_cast<const uint8_t*>(handle_bytes.data()), handle_bytes.size()});
  if (!h.ok() || h->fsid() != fsid_) return;
  auto fd = dm::Open(*h, view_fd_.get(), O_RDONLY | O_CLOEXEC);
  if (!fd.ok()) return;  // not here (yet): nothing is ignored for it either
  if (::fanotify_mark(group_->fd(), FAN_MARK_REMOVE | FAN_MARK_IGNORE_SURV, FAN_PRE_ACCESS, fd->get(), nullptr) !=
          0 &&
      errno != ENOENT)
    spdlog::warn("events: cannot drop the ignore mark of {}: {}", h->ToHex(), std::strerror(errno));
}

void EventSource::Run() {
  while (!stopping_.load()) {
    pollfd p{link_.get(), POLLIN, 0};
    const int n = ::poll(&p, 1, 200);
    if (n == 0 || (n < 0 && errno == EINTR)) continue;
    auto m = n > 0 ? RecvSup(link_.get()) : Result<SupReceived>(PosixError("poll", "supervisor", errno));
    if (!m.ok() || m->msg.type != SupType::kEvent || !m->fd.valid()) {
      // The supervisor died (or talks nonsense). Events it had forwarded are
      // void: their ids may be reused by the next one, so we must never
      // answer them; once it has exited they fail with EIO (never holes).
      spdlog::error("events: lost the event supervisor ({}); restarting it",
                    m.ok() ? "unexpected message" : m.status().ToString());
      {
        std::lock_guard<std::mutex> lk(group_mu_);
        link_.reset();
        ++link_gen_;  // from now on no answer goes out for what came over it
      }
      // Killed: its socket closed just before its exit completes. Still
      // running after that: it dropped us and keeps its accesses.
      if (Status st = FailAccessesOfDeadSupervisor(2000); !st.ok())
        spdlog::warn("events: {}; attaching to it again", st.message());
      while (!stopping_.load()) {
        Status st = Attach();
        if (st.ok()) break;
        spdlog::error("events: cannot reattach: {}", st.ToString());
        ::usleep(500000);
      }
      continue;
    }
    auto pe = std::make_shared<Pending>();
    pe->ev.fd = std::move(m->fd);
    pe->ev.id = m->msg.id;
    pe->ev.mask = m->msg.mask;
    pe->ev.pid = m->msg.pid;
    if (m->msg.has_range) pe->ev.range = FileRange{m->msg.offset, m->msg.count};
    {
      std::lock_guard<std::mutex> lk(group_mu_);
      pe->link = link_gen_;
    }
    OnEvent(std::move(pe));
  }
}

void EventSource::Answer(const Pending& p, bool allow, int err) {
  std::lock_guard<std::mutex> lk(group_mu_);
  if (!group_ || p.link != link_gen_) return;  // stopped, or its id is void (see Run)
  Status st = allow ? group_->Allow(p.ev) : group_->Deny(p.ev, err);
  // The kernel takes only some errnos in a denial; fall back to EIO, which
  // it always takes, rather than leave the access hanging.
  if (!st.ok() && !allow && err != EIO && st.err() != ENOENT) st = group_->Deny(p.ev, EIO);
  // ENOENT: answered already (by us before a restart, or by the supervisor's
  // event timeout).
  if (!st.ok() && st.err() != ENOENT) spdlog::error("events: cannot answer an access: {}", st.ToString());
  SupMsg done;
  done.type = SupType::kDone;
  done.id = p.ev.id;
  if (!link_.valid()) return;
  if (Status ds = SendSup(link_.get(), done); !ds.ok())
    spdlog::warn("events: cannot tell the supervisor: {}", ds.ToString());
}

void EventSource::OnEvent(std::shared_ptr<Pending> p) {
  const FanotifyEvent* ev = &p->ev;
  if (ev->pid == ::getpid() || (opts_.is_dm_app && opts_.is_dm_app(ev->pid))) return Answer(*p, true, 0);
  auto regions = dm::GetRegions(ev->fd.get());
  if (!regions.ok()) {
    // Damaged region records: we cannot tell what is missing, so the access
    // fails rather than risk returning a hole as data.
    spdlog::error("events: managed regions of a file unreadable: {}", regions.status().ToString());
    return Answer(*p, false, EIO);
  }
  if (regions->empty()) {
    // Unmanaged: never ask again for this inode while it stays cached. The
    // mark goes on first and the regions are read again after: a
    // dm_set_region + Rewatch that ran in between would otherwise leave a
    // managed file ignored here.
    if (::fanotify_mark(group_->fd(), FAN_MARK_ADD | FAN_MARK_IGNORE_SURV | FAN_MARK_EVICTABLE, FAN_PRE_ACCESS,
                        ev->fd.get(), nullptr) != 0)
      spdlog::debug("events: ignore mark refused: {}", std::strerror(errno));
    regions = dm::GetRegions(ev->fd.get());
    if (!regions.ok()) return Answer(*p, false, EIO);
    if (regions->empty()) return Answer(*p, true, 0);
    ::fanotify_mark(group_->fd(), FAN_MARK_REMOVE | FAN_MARK_IGNORE_SURV, FAN_PRE_ACCESS, ev->fd.get(), nullptr);
  }
  const uint64_t off = ev->range ? ev->range->offset : 0;
  const uint64_t len = ev->range ? ev->range->count : 0;
  uint32_t flags = 0;
  for (const auto& r : *regions)
    if (dm::Overlaps(r, off, len)) flags |= r.flags;
  if (flags == 0) return Answer(*p, true, 0);
  const unsigned type = (flags & dm::kRegionRead)    ? DM_EVENT_READ
                        : (flags & dm::kRegionWrite) ? DM_EVENT_WRITE
                                                     : DM_EVENT_TRUNCATE;
  uint64_t enabled = node_->GetFsEvents(fsid_);
  if (auto fe = dm::GetEventList(ev->fd.get()); fe.ok()) enabled |= *fe;
  if (!(enabled & (uint64_t(1) << type))) return Answer(*p, true, 0);
  auto h = dm::FdToHandle(ev->fd.get());
  if (!h.ok()) return Answer(*p, false, EIO);
  RaiseSpec spec;
  spec.fsid = fsid_;
  spec.type = type;
  spec.sync = true;
  spec.payload = DataEventPayload(*h, off, len);
  spdlog::debug("events: pid {} touched a managed range [{}, +{}): raising event {}", ev->pid, off, len, type);
  node_->RaiseAsync(spec, [this, p, t0 = MonotonicNs()](Result<RaiseOutcome> r) {
    spdlog::debug("events: answer after {:.3f} s", double(MonotonicNs() - t0) / 1e9);
    if (!r.ok()) return Answer(*p, false, r.status().err() ? r.status().err() : EIO);
    if (!r->delivered) {
      spdlog::warn("events: access to a managed range and no session holds the disposition: EIO");
      return Answer(*p, false, EIO);
    }
    if (r->response == kRespContinue) return Answer(*p, true, 0);
    Answer(*p, false, r->err ? r->err : EIO);
  });
}

}  // namespace pdm::events
