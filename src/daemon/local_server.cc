#include "daemon/local_server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "wire/codec.h"

namespace pdm {

namespace {

using Fbb = flatbuffers::FlatBufferBuilder;

Status SendFrame(int fd, const Fbb& fbb) {
  uint32_t len = fbb.GetSize();
  uint8_t hdr[4];
  std::memcpy(hdr, &len, 4);
  PDM_RETURN_IF_ERROR(WriteAll(fd, {hdr, 4}, "local client"));
  return WriteAll(fd, {fbb.GetBufferPointer(), fbb.GetSize()}, "local client");
}

// The reply under construction: fields filled by the op, then finished.
struct ReplyFields {
  int err = 0;
  std::string message;
  uint64_t sid = 0;
  int response = 0;
  uint64_t events_mask = 0;
  std::vector<SessionView> sessions;
  std::vector<QueuedEvent> events;
  std::vector<std::pair<uint64_t, uint64_t>> disps;
  bool with_cluster = false;
  bool delivered = false;
  int abort_errno = 0;
  int right = 0;
  uint64_t needed = 0;
  uint64_t token = 0;
  ClusterView cluster;
};

void SetError(ReplyFields& r, const Status& st) {
  r.err = st.err() ? st.err() : EIO;
  r.message = st.message();
}

void Finish(Fbb& fbb, const ReplyFields& f, int rank, int sm) {
  auto msg = fbb.CreateString(f.message);
  std::vector<flatbuffers::Offset<local::SessionInfo>> ss;
  for (const auto& s : f.sessions)
    ss.push_back(local::CreateSessionInfo(fbb, s.rec.sid, s.rec.owner, s.owner_alive, fbb.CreateString(s.rec.info),
                                          fbb.CreateString(s.rec.group)));
  std::vector<flatbuffers::Offset<local::EventInfo>> es;
  for (const auto& e : f.events)
    es.push_back(local::CreateEventInfo(fbb, e.token, e.sid, static_cast<uint8_t>(e.type), e.sync, e.raiser, e.fsid,
                                        e.notice, fbb.CreateVector(e.payload), e.sequence));
  std::vector<flatbuffers::Offset<local::DispInfo>> ds;
  for (const auto& [fsid, ev] : f.disps) ds.push_back(local::CreateDispInfo(fbb, fsid, ev));
  std::vector<flatbuffers::Offset<local::NodeInfo>> ns;
  if (f.with_cluster)
    for (size_t i = 0; i < f.cluster.nodes.size(); ++i) {
      const NodeStatic& n = f.cluster.nodes[i];
      ns.push_back(local::CreateNodeInfo(fbb, n.rank, n.pid, f.cluster.alive[i], fbb.CreateString(n.view),
                                         fbb.CreateString(n.socket)));
    }
  auto reply = local::CreateReply(fbb, wire::kLocalVersion, f.err, msg, f.sid, rank, sm, f.response, f.events_mask,
                                  fbb.CreateVector(ss), fbb.CreateVector(es), fbb.CreateVector(ds),
                                  fbb.CreateVector(ns), f.abort_errno, f.delivered, f.right, f.needed,
                                  f.token);
  fbb.Finish(reply);
}

}  // namespace

LocalServer::LocalServer(Node* node, std::string path) : node_(node), path_(std::move(path)) {}

LocalServer::~LocalServer() { Stop(); }

bool LocalServer::IsClientPid(int pid) {
  std::lock_guard<std::mutex> lk(mu_);
  return client_pids_.count(pid) != 0;
}

Status LocalServer::Start() {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(sa.sun_path)) return InvalidArgument("socket path too long: " + path_, ENAMETOOLONG);
  std::strcpy(sa.sun_path, path_.c_str());
  ::unlink(path_.c_str());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return PosixError("socket", path_, errno);
  // Created 0600 from the start: no window in which others may connect.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  ::umask(old);
  if (rc != 0) return PosixError("bind", path_, errno);
  if (::chmod(path_.c_str(), 0600) != 0) return PosixError("chmod", path_, errno);
  if (::listen(fd.get(), 256) != 0) return PosixError("listen", path_, errno);
  listen_fd_ = std::move(fd);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return Status::Ok();
}

void LocalServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_.valid()) ::shutdown(listen_fd_.get(), SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::unique_lock<std::mutex> lk(mu_);
    for (int fd : client_fds_) ::shutdown(fd, SHUT_RDWR);
    idle_.wait(lk, [this] { return active_ == 0; });
  }
  listen_fd_.reset();
  ::unlink(path_.c_str());
}

void LocalServer::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 500) <= 0) continue;
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_.load()) {
      ::close(fd);
      break;
    }
    client_fds_.push_back(fd);
    ++active_;
    // Detached: a finished connection leaves nothing behind; Stop() waits
    // for active_ to drop to zero instead of joining.
    std::thread([this, fd] { Serve(fd); }).detach();
  }
}

void LocalServer::Serve(int fd) {
  auto finish = [this, fd](const ReplyFields& f) {
    Fbb fbb(512);
    Finish(fbb, f, node_->rank(), node_->session_manager());
    return SendFrame(fd, fbb);
  };
  // Get-events and synchronous raises are answered by whichever thread has
  // the answer (see Node::GetEventsAsync); this thread only waits until the
  // reply is on the wire before it reads the next request.
  struct Answered {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    void Set() {
      std::lock_guard<std::mutex> l(m);
      done = true;
      cv.notify_all();
    }
  };
  // Answers may be written by the transport's thread (see Answered below):
  // a client that stops reading must not stall it for long.
  timeval send_timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
  ucred cred{};
  socklen_t len = sizeof(cred);
  bool allowed = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == 0;
  if (allowed) {
    std::lock_guard<std::mutex> lk(mu_);
    client_pids_.insert(cred.pid);
  }
  if (!allowed) {
    spdlog::warn("local API: refused pid {} uid {}: DMAPI is root only", cred.pid, cred.uid);
    ReplyFields f;
    f.err = EPERM;
    f.message = "DMAPI calls need root (uid 0); caller has uid " + std::to_string(cred.uid);
    (void)finish(f);
  }
  std::vector<uint8_t> buf;
  while (allowed && !stopping_.load()) {
    uint8_t hdr[4];
    if (!ReadExact(fd, {hdr, 4}, "local client").ok()) break;
    uint32_t n;
    std::memcpy(&n, hdr, 4);
    if (n > wire::kMaxLocalFrame) {
      spdlog::error("local API: frame of {} bytes rejected", n);
      ReplyFields f;
      f.err = EBADMSG;
      f.message = "frame too large";
      (void)finish(f);
      break;
    }
    buf.resize(n);
    if (!ReadExact(fd, buf, "local client").ok()) break;
    auto decoded = wire::DecodeRequest(buf);
    ReplyFields f;
    bool replied = false;
    if (!decoded.ok()) {
      spdlog::error("local API: rejected a request: {}", decoded.status().ToString());
      SetError(f, decoded.status());
      (void)finish(f);
      break;
    }
    const local::Request& r = **decoded;
    std::string info = r.info() ? r.info()->str() : "";
    std::string group = r.group() ? r.group()->str() : "";
    switch (r.op()) {
      case local::Op::Hello:
        break;
      case local::Op::CreateSession: {
        auto res = node_->CreateSession(r.oldsid(), info, group);
        if (res.ok()) f.sid = *res; else SetError(f, res.status());
        break;
      }
      case local::Op::DestroySession:
        if (Status st = node_->DestroySession(r.sid()); !st.ok()) SetError(f, st);
        break;
      case local::Op::ModifySession:
        if (Status st = node_->ModifySession(r.sid(), info); !st.ok()) SetError(f, st);
        break;
      case local::Op::QuerySession: {
        auto res = node_->QuerySession(r.sid());
        if (res.ok()) f.sessions.push_back(*res); else SetError(f, res.status());
        break;
      }
      case local::Op::GetAllSessions:
        f.sessions = node_->AllSessions();
        break;
      case local::Op::SetDisp:
        if (Status st = node_->SetDisp(r.sid(), r.fsid(), r.events()); !st.ok()) SetError(f, st);
        break;
      case local::Op::GetAllDisp: {
        auto res = node_->GetAllDisp(r.sid());
        if (res.ok()) f.disps = *res; else SetError(f, res.status());
        break;
      }
      case local::Op::SetFsEvents:
        if (Status st = node_->SetFsEvents(r.sid(), r.fsid(), r.events()); !st.ok()) SetError(f, st);
        break;
      case local::Op::GetFsEvents:
        f.events_mask = node_->GetFsEvents(r.fsid());
        break;
      case local::Op::GetEvents: {
        auto answered = std::make_shared<Answered>();
        const uint64_t waiter = node_->GetEventsAsync(
            r.sid(), r.max_msgs(), r.wait(), r.max_bytes(), r.overhead(),
            [finish, answered](Result<std::vector<QueuedEvent>> res, size_t needed) {
              ReplyFields a;
              if (res.ok()) a.events = std::move(*res); else SetError(a, res.status());
              a.needed = needed;
              (void)finish(a);
              answered->Set();
            });
        // Parked: wake every 200 ms to see whether the client is still
        // there. A DM application killed in dm_get_events must not leave a
        // waiter behind that swallows the session's next event.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(r.timeout_ms());
        std::unique_lock<std::mutex> l(answered->m);
        while (waiter != 0 && !answered->done) {
          answered->cv.wait_for(l, std::chrono::milliseconds(200), [&] { return answered->done; });
          if (answered->done) break;
          pollfd p{fd, POLLRDHUP, 0};
          const bool gone = ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
          const bool late = r.timeout_ms() != 0 && std::chrono::steady_clock::now() >= deadline;
          if (gone || late) {
            l.unlock();
            node_->CancelGetEvents(waiter, gone ? Aborted("client went away", EINTR)
                                                : Unavailable("no events within the timeout", EAGAIN));
            l.lock();
            break;
          }
        }
        answered->cv.wait(l, [&] { return answered->done; });
        replied = true;
        break;
      }
      case local::Op::Respond:
        if (Status st = node_->Respond(r.sid(), r.token(), r.response(), r.err()); !st.ok()) SetError(f, st);
        break;
      case local::Op::Raise: {
        RaiseSpec spec;
        spec.fsid = r.fsid();
        spec.type = r.type();
        spec.sync = r.sync();
        spec.target_sid = r.target_sid();
        if (r.payload()) spec.payload.assign(r.payload()->begin(), r.payload()->end());
        auto answered = std::make_shared<Answered>();
        node_->RaiseAsync(spec, [finish, answered](Result<RaiseOutcome> res) {
          ReplyFields a;
          if (!res.ok()) {
            SetError(a, res.status());
          } else {
            a.delivered = res->delivered;
            a.response = res->response;
            a.sid = res->sid;
            a.abort_errno = res->err;
          }
          (void)finish(a);
          answered->Set();
        });
        std::unique_lock<std::mutex> l(answered->m);
        answered->cv.wait(l, [&] { return answered->done; });
        replied = true;
        break;
      }
      case local::Op::ClusterInfo:
        f.with_cluster = true;
        f.cluster = node_->Cluster();
        f.events_mask = node_->generated_events();
        break;
      case local::Op::Pending: {
        auto res = node_->Outstanding(r.sid());
        if (res.ok()) f.events = std::move(*res); else SetError(f, res.status());
        break;
      }
      case local::Op::RequestRight:
      case local::Op::ReleaseRight:
      case local::Op::QueryRight:
      case local::Op::UpgradeRight:
      case local::Op::DowngradeRight: {
        const std::string object = r.object() ? std::string(r.object()->begin(), r.object()->end()) : "";
        Status st;
        if (r.op() == local::Op::RequestRight) st = node_->RequestRight(r.sid(), r.token(), object, r.right(), r.wait());
        if (r.op() == local::Op::ReleaseRight) st = node_->ReleaseRight(r.sid(), r.token(), object);
        if (r.op() == local::Op::UpgradeRight) st = node_->UpgradeRight(r.sid(), r.token(), object);
        if (r.op() == local::Op::DowngradeRight) st = node_->DowngradeRight(r.sid(), r.token(), object);
        if (r.op() == local::Op::QueryRight) {
          auto q = node_->QueryRight(r.sid(), r.token(), object);
          if (q.ok()) f.right = *q; else st = q.status();
        }
        if (!st.ok()) SetError(f, st);
        break;
      }
      case local::Op::CreateUserEvent: {
        std::vector<uint8_t> payload;
        if (r.payload()) payload.assign(r.payload()->begin(), r.payload()->end());
        auto res = node_->CreateUserEvent(r.sid(), std::move(payload));
        if (res.ok()) f.token = *res; else SetError(f, res.status());
        break;
      }
      case local::Op::MoveEvent:
        if (Status st = node_->MoveEvent(r.sid(), r.token(), r.target_sid()); !st.ok()) SetError(f, st);
        break;
      case local::Op::Rewatch: {
        const std::string object = r.object() ? std::string(r.object()->begin(), r.object()->end()) : "";
        if (Status st = node_->Rewatch(r.sid(), object); !st.ok()) SetError(f, st);
        break;
      }
      case local::Op::PendingToken:
        if (Status st = node_->Pending(r.sid(), r.token()); !st.ok()) SetError(f, st);
        break;
      case local::Op::FindEvent: {
        auto res = node_->FindEvent(r.sid(), r.token(), !r.no_payload());
        if (res.ok()) f.events.push_back(std::move(*res)); else SetError(f, res.status());
        break;
      }
    }
    if (!replied && !finish(f).ok()) break;
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (allowed) client_pids_.erase(client_pids_.find(cred.pid));
  client_fds_.remove(fd);
  ::close(fd);
  if (--active_ == 0) idle_.notify_all();
}

}  // namespace pdm
