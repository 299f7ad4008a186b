#include "dmapi/context.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

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

struct CachedFd {
  UniqueFd fd;
  int64_t opened_ns;
};
// Tokens of this process's own sessions (created or assumed here): a DM
// application that answers its events itself makes dozens of file calls per
// event under its token, and each would ask the session node. A confirmed
// token is remembered for kCacheTtlNs unless this process answers or moves
// it first (that forgets it at once); another process answering a token of
// a session it did not create is the only way the memory can be stale, and
// only for that long. Tokens of other processes' sessions (a worker handed
// a token) are asked about every time.
constexpr size_t kMaxCachedTokens = 4096;

struct Cache {
  std::mutex mu;
  std::map<dm_sessid_t, int64_t> sessions;                  // GUARDED_BY(mu): sid -> when confirmed
  std::set<dm_sessid_t> own;                                // GUARDED_BY(mu): created or assumed here
  struct TokenSeen {
    int64_t at_ns;  // confirmed (or answered) then
    bool answered;  // by this process: never remembered as valid again
  };
  std::map<std::pair<dm_sessid_t, dm_token_t>, TokenSeen> tokens;  // GUARDED_BY(mu): own sessions' tokens
  std::map<std::pair<std::string, int>, CachedFd> fds;      // GUARDED_BY(mu)
  bool reaper_running = false;                              // GUARDED_BY(mu)
};
// Never destroyed: the reaper thread may still sweep it while static
// destructors run at exit.
Cache& C() {
  static Cache* c = new Cache;
  return *c;
}

// Takes the expired entries out; the caller closes them after unlocking (a
// slow close must not stall every OpenHandle, or a fork).
std::vector<CachedFd> TakeExpiredLocked(int64_t now) {
  std::vector<CachedFd> out;
  for (auto it = C().fds.begin(); it != C().fds.end();) {
    if (now - it->second.opened_ns >= kCacheTtlNs) {
      out.push_back(std::move(it->second));
      it = C().fds.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

void* ReaperMain(void*) {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(kCacheTtlNs));
    std::vector<CachedFd> expired;
    {
      std::lock_guard<std::mutex> lk(C().mu);
      expired = TakeExpiredLocked(MonotonicNs());
    }
  }
  return nullptr;
}

// The cache lock is held across fork, so the child's copy is never caught
// half-modified; the child has no reaper, owns no session, and need not keep
// the parent's fds: it starts afresh.
void RegisterAtForkOnce() {
  static const bool at_fork = [] {
    ::pthread_atfork([] { C().mu.lock(); }, [] { C().mu.unlock(); },
                     [] {
                       C().fds.clear();
                       C().sessions.clear();
                       C().own.clear();
                       C().tokens.clear();
                       C().reaper_running = false;
                       C().mu.unlock();
                     });
    return true;
  }();
  (void)at_fork;
}

// A cached fd pins its file: a deleted file's blocks are not freed and its
// file system cannot be unmounted while we hold it. So entries go when they
// expire even if this process makes no more calls: a detached thread, one
// per process, started with the first cached fd, sweeps every TTL. It runs
// with every signal blocked, so the application's signals never land on it.
// If it cannot be started, entries still expire at the next call.
void StartReaperLocked() {
  if (C().reaper_running) return;
  RegisterAtForkOnce();
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, ReaperMain, nullptr) == 0) C().reaper_running = true;
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace

void ForgetSession(dm_sessid_t sid) {
  std::lock_guard<std::mutex> lk(C().mu);
  C().sessions.erase(sid);
  C().own.erase(sid);
  auto& t = C().tokens;
  t.erase(t.lower_bound({sid, 0}), t.lower_bound({sid + 1, 0}));
}

void OwnSession(dm_sessid_t sid) {
  RegisterAtForkOnce();  // a child must not inherit what this process remembers
  std::lock_guard<std::mutex> lk(C().mu);
  C().own.insert(sid);
}

void ForgetToken(dm_sessid_t sid, dm_token_t token) {
  // A mark, not an erase: a check that asked the agent just before the
  // answer must not put the token back (tokens are never reused). The mark
  // only has to outlive such a check's entry, which expires after the TTL.
  // Only own sessions' tokens are ever remembered, so only they need one.
  const int64_t now = MonotonicNs();
  std::lock_guard<std::mutex> lk(C().mu);
  if (!C().own.count(sid)) return;
  auto& tokens = C().tokens;
  if (tokens.size() >= kMaxCachedTokens) {
    std::erase_if(tokens, [&](const auto& kv) { return now - kv.second.at_ns >= kCacheTtlNs; });
    // Still full of young entries: forgetting a confirmation is always
    // safe; the marks (at most a second's answers) stay.
    if (tokens.size() >= kMaxCachedTokens) std::erase_if(tokens, [](const auto& kv) { return !kv.second.answered; });
  }
  tokens[{sid, token}] = {now, true};
}

Status CheckSession(dm_sessid_t sid) {
  if (sid == DM_NO_SESSION) return InvalidArgument("DM_NO_SESSION");
  const int64_t now = MonotonicNs();
  {
    std::lock_guard<std::mutex> lk(C().mu);
    auto it = C().sessions.find(sid);
    if (it != C().sessions.end() && now - it->second < kCacheTtlNs) return Status::Ok();
  }
  PDM_ASSIGN_OR_RETURN(LocalClient * c, Client());
  auto s = c->QuerySession(sid);
  if (!s.ok()) return s.status();
  std::lock_guard<std::mutex> lk(C().mu);
  C().sessions[sid] = now;
  return Status::Ok();
}

Status CheckSessionToken(dm_sessid_t sid, dm_token_t token) {
  if (token == DM_NO_TOKEN) return CheckSession(sid);
  if (token == DM_INVALID_TOKEN) return InvalidArgument("DM_INVALID_TOKEN");
  const int64_t now = MonotonicNs();
  {
    std::lock_guard<std::mutex> lk(C().mu);
    auto it = C().tokens.find({sid, token});
    if (it != C().tokens.end() && !it->second.answered && now - it->second.at_ns < kCacheTtlNs) return Status::Ok();
  }
  PDM_ASSIGN_OR_RETURN(LocalClient * c, Client());
  auto e = c->FindEvent(sid, token, /*with_payload=*/false);
  if (!e.ok()) return e.status();
  std::lock_guard<std::mutex> lk(C().mu);
  if (!C().own.count(sid)) return Status::Ok();
  auto& tokens = C().tokens;
  if (tokens.size() >= kMaxCachedTokens)
    std::erase_if(tokens, [&](const auto& kv) { return now - kv.second.at_ns >= kCacheTtlNs; });
  if (tokens.size() >= kMaxCachedTokens) return Status::Ok();  // all young: just not remembered
  auto [it, fresh] = tokens.try_emplace({sid, token}, Cache::TokenSeen{now, false});
  if (!fresh && !it->second.answered) it->second.at_ns = now;
  return Status::Ok();
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

namespace {

// The mount DM calls open objects through: a detached clone of this node's
// view (open_tree with OPEN_TREE_CLONE). It is the same file system and the
// same files, but no fanotify mount mark covers it, so invisible I/O, punches
// and attribute calls raise no access events (XDSM: DM calls generate none).
// Through the view itself each of them was an event that the event source
// had to answer for the DM application: a round trip through pdm-eventd and
// the agent per 256 KiB of a recall and per punched file.
//
// One per file system, kept for the life of the process (a forked child
// shares it, which is harmless). It keeps the file system's superblock alive
// while the process runs, as any open file would: an unmount of the view
// succeeds, but the device stays busy until DM applications exit (stop them
// first, as for any HSM). Returns -1 where the kernel refuses a clone, or a
// clone will not open handles (open_by_handle_at can demand an attached
// mount without CAP_DAC_READ_SEARCH): the caller then opens the view per
// call, and the event source lets DM applications through, only slower.
Result<int> DmMountOf(uint64_t fsid) {
  static std::mutex mu;
  static std::map<uint64_t, int>* mounts = new std::map<uint64_t, int>;  // never closed: see above
  {
    std::lock_guard<std::mutex> lk(mu);
    if (auto it = mounts->find(fsid); it != mounts->end()) return it->second;
  }
  PDM_ASSIGN_OR_RETURN(std::string view, ViewOf(fsid));
  // open_tree gives an O_PATH descriptor, which open_by_handle_at does not
  // take (EBADF): the clone's root is opened through it.
  UniqueFd root;
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, view.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)));
  if (tree.valid()) root = UniqueFd(::openat(tree.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root.valid()) {
    // Probe once: the view's root, by handle, through the clone.
    auto probe = dm::PathToHandle(view);
    if (!probe.ok() || !dm::Open(*probe, root.get(), O_RDONLY | O_DIRECTORY).ok()) root.reset();
  }
  const int fd = root.valid() ? root.release() : -1;
  std::lock_guard<std::mutex> lk(mu);
  auto [it, fresh] = mounts->emplace(fsid, fd);
  if (!fresh && fd >= 0) ::close(fd);  // another thread made one first
  return it->second;
}

}  // namespace

Result<UniqueFd> OpenHandle(const dm::Handle& h, int flags) {
  const std::span<const uint8_t> b = h.bytes();
  std::pair<std::string, int> key{std::string(b.begin(), b.end()), flags};
  const int64_t now = MonotonicNs();
  {
    std::lock_guard<std::mutex> lk(C().mu);
    auto it = C().fds.find(key);
    if (it != C().fds.end() && now - it->second.opened_ns < kCacheTtlNs) {
      UniqueFd dup(::fcntl(it->second.fd.get(), F_DUPFD_CLOEXEC, 0));
      if (dup.valid()) return dup;
    }
  }
  PDM_ASSIGN_OR_RETURN(int clone, DmMountOf(h.fsid()));
  UniqueFd view_fd;  // without a clone: the view, opened for this call only
  if (clone < 0) {
    PDM_ASSIGN_OR_RETURN(std::string view, ViewOf(h.fsid()));
    view_fd = UniqueFd(::open(view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!view_fd.valid()) return PosixError("open", view, errno);
  }
  PDM_ASSIGN_OR_RETURN(UniqueFd fd, dm::Open(h, clone >= 0 ? clone : view_fd.get(), flags));
  UniqueFd keep(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (keep.valid()) {
    std::vector<CachedFd> expired;  // closed after the lock is released
    std::lock_guard<std::mutex> lk(C().mu);
    expired = TakeExpiredLocked(now);
    if (C().fds.size() >= kMaxCachedFds) {
      expired.push_back(std::move(C().fds.begin()->second));
      C().fds.erase(C().fds.begin());
    }
    C().fds[key] = CachedFd{std::move(keep), now};
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
