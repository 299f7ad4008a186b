#include "dmapi/context.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "common/posix.h"

namespace pdm::dmapi {

Result<LocalClient*> Client() {
  thread_local std::unique_ptr<LocalClient> client;
  if (!client) {
    auto c = LocalClient::Connect("");
    if (!c.ok()) {
      // No agent: the DMAPI service is not there (XFS returns ENOSYS-like
      // errors; we say EIO with the reason). Non-root stays EPERM.
      if (c.status().err() == EPERM) return c.status();
      return Internal("cannot reach the pdm node agent at " + LocalClient::DefaultSocketPath() + ": " +
                          c.status().message(),
                      EIO);
    }
    client = std::move(*c);
  }
  return client.get();
}

int Fail(const Status& st) {
  errno = st.err() != 0 ? st.err() : EIO;
  return -1;
}

Result<dm::Handle> ParseHandle(const void* hanp, size_t hlen) {
  if (hanp == nullptr) return InvalidArgument("NULL handle", EFAULT);
  if (hanp == DM_GLOBAL_HANP) return InvalidArgument("the global handle is not valid here", EBADF);
  auto h = dm::Handle::Parse({static_cast<const uint8_t*>(hanp), hlen});
  if (!h.ok()) return InvalidArgument(h.status().message(), EBADF);
  return h;
}

namespace {

// File-level calls (invisible I/O above all) must not pay a round trip to
// the agent and an open_by_handle_at per call: a session id confirmed valid
// and an object opened by handle are remembered for kCacheTtlNs. The cost:
// a session destroyed by another process stays usable here for at most that
// long (this process's own dm_destroy_session forgets it at once).
constexpr int64_t kCacheTtlNs = 1'000'000'000;
constexpr size_t kMaxCachedFds = 64;

std::mutex cache_mu;
std::map<dm_sessid_t, int64_t> valid_sessions;  // GUARDED_BY(cache_mu): sid -> when confirmed
struct CachedFd {
  UniqueFd fd;
  int64_t opened_ns;
};
std::map<std::pair<std::string, int>, CachedFd> open_fds;  // GUARDED_BY(cache_mu)
bool reaper_running = false;                                 // GUARDED_BY(cache_mu)

void DropExpiredLocked(int64_t now) {
  std::erase_if(open_fds, [&](const auto& kv) { return now - kv.second.opened_ns >= kCacheTtlNs; });
}

// A cached fd pins its file: a deleted file's blocks are not freed and its
// file system cannot be unmounted while we hold it. So entries go when they
// expire even if this process makes no more calls: a detached thread, one
// per process, started with the first cached fd, sweeps every TTL.
void StartReaperLocked() {
  if (reaper_running) return;
  static const bool at_fork = [] {
    // A forked child has no reaper thread (and need not keep the parent's
    // fds): it starts afresh.
    // The cache lock is held across fork, so the child's copy of the map
    // is never caught half-modified.
    ::pthread_atfork([] { cache_mu.lock(); }, [] { cache_mu.unlock(); },
                     [] {
                       open_fds.clear();
                       reaper_running = false;
                       cache_mu.unlock();
                     });
    return true;
  }();
  (void)at_fork;
  reaper_running = true;
  std::thread([] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(kCacheTtlNs));
      std::lock_guard<std::mutex> lk(cache_mu);
      DropExpiredLocked(MonotonicNs());
    }
  }).detach();
}

}  // namespace

void ForgetSession(dm_sessid_t sid) {
  std::lock_guard<std::mutex> lk(cache_mu);
  valid_sessions.erase(sid);
}

Status CheckSession(dm_sessid_t sid) {
  if (sid == DM_NO_SESSION) return InvalidArgument("DM_NO_SESSION");
  const int64_t now = MonotonicNs();
  {
    std::lock_guard<std::mutex> lk(cache_mu);
    auto it = valid_sessions.find(sid);
    if (it != valid_sessions.end() && now - it->second < kCacheTtlNs) return Status::Ok();
  }
  PDM_ASSIGN_OR_RETURN(LocalClient * c, Client());
  auto s = c->QuerySession(sid);
  if (!s.ok()) return s.status();
  std::lock_guard<std::mutex> lk(cache_mu);
  valid_sessions[sid] = now;
  return Status::Ok();
}

Status CheckSessionToken(dm_sessid_t sid, dm_token_t token) {
  if (token == DM_NO_TOKEN) return CheckSession(sid);
  if (token == DM_INVALID_TOKEN) return InvalidArgument("DM_INVALID_TOKEN");
  PDM_ASSIGN_OR_RETURN(LocalClient * c, Client());
  auto e = c->FindEvent(sid, token);
  return e.ok() ? Status::Ok() : e.status();
}

Result<std::string> ViewOf(uint64_t fsid) {
  // Cached per process: views do not move while the cluster runs.
  static std::mutex mu;
  static std::map<uint64_t, std::string> cache;
  {
    std::lock_guard<std::mutex> lk(mu);
    if (auto it = cache.find(fsid); it != cache.end()) return it->second;
  }
  PDM_ASSIGN_OR_RETURN(LocalClient * c, Client());
  PDM_ASSIGN_OR_RETURN(ClusterView v, c->Cluster());
  if (v.rank < 0 || static_cast<size_t>(v.rank) >= v.nodes.size()) return Internal("agent without a view");
  const std::string view = v.nodes[static_cast<size_t>(v.rank)].view;
  UniqueFd fd(::open(view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open", view, errno);
  auto id = dm::FsidOfFd(fd.get());
  if (!id.ok()) return id.status();
  if (*id != fsid) return InvalidArgument("handle of a file system this node does not manage", EBADF);
  std::lock_guard<std::mutex> lk(mu);
  cache[fsid] = view;
  return view;
}

Result<FsArg> FsHandleArg(dm_sessid_t sid, const void* hanp, size_t hlen, dm_token_t token) {
  PDM_RETURN_IF_ERROR(CheckSessionToken(sid, token));
  PDM_ASSIGN_OR_RETURN(dm::Handle h, ParseHandle(hanp, hlen));
  if (h.type() != dm::HandleType::kFs) return InvalidArgument("not a file system handle");
  PDM_ASSIGN_OR_RETURN(std::string view, ViewOf(h.fsid()));
  return FsArg{std::move(h), std::move(view)};
}

Result<UniqueFd> OpenHandle(const dm::Handle& h, int flags) {
  const std::span<const uint8_t> b = h.bytes();
  std::pair<std::string, int> key{std::string(b.begin(), b.end()), flags};
  const int64_t now = MonotonicNs();
  {
    std::lock_guard<std::mutex> lk(cache_mu);
    auto it = open_fds.find(key);
    if (it != open_fds.end() && now - it->second.opened_ns < kCacheTtlNs) {
      UniqueFd dup(::fcntl(it->second.fd.get(), F_DUPFD_CLOEXEC, 0));
      if (dup.valid()) return dup;
    }
  }
  PDM_ASSIGN_OR_RETURN(std::string view, ViewOf(h.fsid()));
  UniqueFd mount(::open(view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!mount.valid()) return PosixError("open", view, errno);
  PDM_ASSIGN_OR_RETURN(UniqueFd fd, dm::Open(h, mount.get(), flags));
  UniqueFd keep(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (keep.valid()) {
    std::lock_guard<std::mutex> lk(cache_mu);
    DropExpiredLocked(now);
    if (open_fds.size() >= kMaxCachedFds) open_fds.erase(open_fds.begin());
    open_fds[key] = CachedFd{std::move(keep), now};
    StartReaperLocked();
  }
  return fd;
}

int CopyOut(std::span<const uint8_t> src, size_t buflen, void* bufp, size_t* rlenp) {
  if (rlenp == nullptr) return Fail(EFAULT);
  *rlenp = src.size();
  if (buflen < src.size()) return Fail(E2BIG);
  if (!src.empty()) {
    if (bufp == nullptr) return Fail(EFAULT);
    std::memcpy(bufp, src.data(), src.size());
  }
  return 0;
}

int ReturnHandle(const dm::Handle& h, void** hanpp, size_t* hlenp) {
  if (hanpp == nullptr || hlenp == nullptr) return Fail(EFAULT);
  const auto& b = h.bytes();
  void* p = std::malloc(b.size());
  if (p == nullptr) return Fail(ENOMEM);
  std::memcpy(p, b.data(), b.size());
  *hanpp = p;
  *hlenp = b.size();
  return 0;
}

}  // namespace pdm::dmapi
