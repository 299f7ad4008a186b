#include "events/namespace_source.h"

#include <dirent.h>
#include <dmapi.h>
#include <fcntl.h>
#include <linux/fanotify.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/fanotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "common/le.h"
#include "dm/attrs.h"
#include "dm/handle.h"

namespace pdm::events {

namespace {

constexpr uint64_t Bit(unsigned e) { return uint64_t(1) << e; }

// The events the filesystem mark raises, and those of the mount mark.
constexpr uint64_t kNamespaceEvents = Bit(DM_EVENT_POSTCREATE) | Bit(DM_EVENT_POSTREMOVE) |
                                      Bit(DM_EVENT_POSTRENAME) | Bit(DM_EVENT_POSTLINK) |
                                      Bit(DM_EVENT_POSTSYMLINK) | Bit(DM_EVENT_ATTRIBUTE) | Bit(DM_EVENT_DESTROY);
constexpr uint64_t kFileEvents = kNamespaceEvents | Bit(DM_EVENT_CLOSE);
constexpr uint64_t kMountEvents = Bit(DM_EVENT_MOUNT) | Bit(DM_EVENT_PREUNMOUNT) | Bit(DM_EVENT_UNMOUNT);

constexpr uint64_t kFsMarkMask = FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ATTRIB | FAN_DELETE_SELF | FAN_ONDIR;
constexpr uint64_t kMountMarkMask = FAN_CLOSE_WRITE;

// One read(2) of the group takes this much: a namespace event is ~90 bytes,
// so a burst of several hundred comes in one read. A link's FAN_ATTRIB and
// FAN_CREATE, or an unlink's FAN_ATTRIB and FAN_DELETE, then usually share a
// batch, which keeps POSTREMOVE ahead of its DESTROY.
constexpr size_t kReadBytes = 64 * 1024;
// Recent link-count changes remembered to tell a link(2) from a creation;
// the two events are adjacent in the queue, so a short memory suffices.
constexpr size_t kLinkMarks = 256;
// Objects whose DESTROY went out at nlink 0; their FAN_DELETE_SELF (at the
// last close) is then not a second DESTROY.
constexpr size_t kDestroyedMemory = 4096;

// A kernel file id from an event: struct file_handle and its f_handle
// bytes, as reported, plus the entry name of directory records.
struct Fid {
  std::string key;
  std::string name;
  bool valid() const { return !key.empty(); }
};

struct Parsed {
  uint64_t mask = 0;
  int pid = 0;
  Fid obj;      // the object the event is about (child, or the directory itself)
  Fid dir;      // directory + entry name (FAN_EVENT_INFO_TYPE_DFID_NAME)
  Fid old_dir;  // FAN_RENAME: where the entry was
  Fid new_dir;  // FAN_RENAME: where it is now
};

// Reads one fid info record (fanotify_event_info_fid: header, fsid, then a
// struct file_handle, then for the *_NAME types a NUL-terminated name).
bool ParseFid(const uint8_t* rec, size_t len, bool named, Fid* out) {
  constexpr size_t kFixed = sizeof(fanotify_event_info_header) + sizeof(__kernel_fsid_t);
  if (len < kFixed + sizeof(file_handle)) return false;
  file_handle fh;
  std::memcpy(&fh, rec + kFixed, sizeof fh);
  const size_t fh_total = sizeof(file_handle) + fh.handle_bytes;
  if (fh.handle_bytes == 0 || fh.handle_bytes > MAX_HANDLE_SZ || kFixed + fh_total > len) return false;
  out->key.assign(reinterpret_cast<const char*>(rec + kFixed), fh_total);
  if (named) {
    const char* name = reinterpret_cast<const char*>(rec + kFixed + fh_total);
    out->name.assign(name, strnlen(name, len - kFixed - fh_total));
  }
  return true;
}

bool ParseEvent(const uint8_t* p, const fanotify_event_metadata& meta, Parsed* ev) {
  ev->mask = meta.mask;
  ev->pid = meta.pid;
  size_t off = meta.metadata_len;
  Fid self;
  while (off + sizeof(fanotify_event_info_header) <= meta.event_len) {
    fanotify_event_info_header hdr;
    std::memcpy(&hdr, p + off, sizeof hdr);
    if (hdr.len < sizeof hdr || off + hdr.len > meta.event_len) return false;
    const uint8_t* rec = p + off;
    bool ok = true;
    switch (hdr.info_type) {
      case FAN_EVENT_INFO_TYPE_FID: ok = ParseFid(rec, hdr.len, false, &ev->obj); break;
      case FAN_EVENT_INFO_TYPE_DFID_NAME: ok = ParseFid(rec, hdr.len, true, &ev->dir); break;
      case FAN_EVENT_INFO_TYPE_DFID: ok = ParseFid(rec, hdr.len, false, &ev->dir); break;
      case FAN_EVENT_INFO_TYPE_OLD_DFID_NAME: ok = ParseFid(rec, hdr.len, true, &ev->old_dir); break;
      case FAN_EVENT_INFO_TYPE_NEW_DFID_NAME: ok = ParseFid(rec, hdr.len, true, &ev->new_dir); break;
      default: break;  // records we do not use are skipped by length
    }
    if (!ok) return false;
    off += hdr.len;
  }
  // An event on a directory itself is reported as (the directory, "."),
  // with or without the FID record.
  if (!ev->obj.valid() && ev->dir.valid() && ev->dir.name == ".") ev->obj = ev->dir;
  return true;
}

// dm_vardata_t members are byte offsets from the start of the event's
// structure; every piece starts 8-aligned, as dm_get_mountinfo lays them.
class Payload {
 public:
  explicit Payload(size_t fixed) : out_(fixed, 0) {}
  void Put(dm_vardata_t& vd, std::span<const uint8_t> b) {
    vd.vd_offset = static_cast<int32_t>(out_.size());
    vd.vd_length = static_cast<uint32_t>(b.size());
    out_.insert(out_.end(), b.begin(), b.end());
    out_.resize((out_.size() + 7) & ~size_t(7), 0);
  }
  // Names carry their terminating NUL, as XFS's do; empty stays empty.
  void PutName(dm_vardata_t& vd, std::string_view s) {
    std::vector<uint8_t> b(s.begin(), s.end());
    if (!b.empty()) b.push_back(0);
    Put(vd, b);
  }
  template <typename T>
  std::vector<uint8_t> Finish(const T& fixed) {
    std::memcpy(out_.data(), &fixed, sizeof fixed);
    return std::move(out_);
  }

 private:
  std::vector<uint8_t> out_;
};

std::span<const uint8_t> BytesOf(const std::optional<dm::Handle>& h) {
  return h ? h->bytes() : std::span<const uint8_t>();
}

std::vector<uint8_t> NamespPayload(mode_t mode, const std::optional<dm::Handle>& h1,
                                   const std::optional<dm::Handle>& h2, std::string_view name1,
                                   std::string_view name2, int retcode) {
  Payload p(sizeof(dm_namesp_event_t));
  dm_namesp_event_t ne{};
  ne.ne_mode = mode;
  p.Put(ne.ne_handle1, BytesOf(h1));
  p.Put(ne.ne_handle2, BytesOf(h2));
  p.PutName(ne.ne_name1, name1);
  p.PutName(ne.ne_name2, name2);
  ne.ne_retcode = retcode;
  return p.Finish(ne);
}

std::vector<uint8_t> DestroyPayload(const dm::Handle& h, const std::optional<dm::AttrName>& rod,
                                    std::span<const uint8_t> copy) {
  Payload p(sizeof(dm_destroy_event_t));
  dm_destroy_event_t ds{};
  p.Put(ds.ds_handle, h.bytes());
  if (rod) {
    auto raw = rod->ToBytes();
    std::memcpy(ds.ds_attrname.an_chars, raw.data(), raw.size());
  }
  p.Put(ds.ds_attrcopy, copy);
  return p.Finish(ds);
}

// The kernel handle in a Fid, in storage open_by_handle_at may use.
struct KernelHandle {
  alignas(file_handle) uint8_t storage[sizeof(file_handle) + MAX_HANDLE_SZ];
  explicit KernelHandle(const Fid& f) { std::memcpy(storage, f.key.data(), std::min(f.key.size(), sizeof storage)); }
  file_handle* get() { return reinterpret_cast<file_handle*>(storage); }
};

// The DM handle of a fid without touching the object, for the generic
// Linux handle types whose f_handle starts with the inode number and
// generation (include/linux/exportfs.h): the same bytes dm::FdToHandle makes,
// since FS_IOC_GETVERSION reports that generation. The object may be gone.
std::optional<dm::Handle> DecodeGenericFid(uint64_t fsid, const Fid& f) {
  KernelHandle kh(f);
  const file_handle* fh = kh.get();
  uint64_t ino = 0;
  uint32_t gen = 0;
  const uint8_t* fb = fh->f_handle;
  switch (fh->handle_type) {
    case 1:  // FILEID_INO32_GEN
    case 2:  // FILEID_INO32_GEN_PARENT
      if (fh->handle_bytes < 8) return std::nullopt;
      ino = GetLe(fb, 4);
      gen = static_cast<uint32_t>(GetLe(fb + 4, 4));
      break;
    case 0x81:  // FILEID_INO64_GEN
    case 0x82:  // FILEID_INO64_GEN_PARENT
      if (fh->handle_bytes < 12) return std::nullopt;
      ino = GetLe(fb, 8);
      gen = static_cast<uint32_t>(GetLe(fb + 8, 4));
      break;
    default:
      return std::nullopt;
  }
  std::vector<uint8_t> b;
  PutLe(b, dm::kHandleMagic, 4);
  b.push_back(dm::kHandleVersion);
  b.push_back(static_cast<uint8_t>(dm::HandleType::kFile));
  PutLe(b, fsid, 8);
  PutLe(b, ino, 8);
  PutLe(b, gen, 4);
  PutLe(b, static_cast<uint32_t>(fh->handle_type), 4);
  b.insert(b.end(), fb, fb + fh->handle_bytes);
  auto h = dm::Handle::Parse(b);
  if (!h.ok()) return std::nullopt;
  return *h;
}

// A real (non-O_PATH) fd on a regular file or directory from an O_PATH fd:
// fgetxattr refuses O_PATH fds. Other types are never opened (a device's
// open may have side effects, a FIFO's blocks).
UniqueFd Reopen(int opath_fd, const struct stat& st) {
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return UniqueFd();
  const std::string proc = "/proc/self/fd/" + std::to_string(opath_fd);
  UniqueFd fd(::open(proc.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_NOATIME | O_CLOEXEC));
  if (!fd.valid() && errno == EPERM) fd.reset(::open(proc.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  return fd;
}

}  // namespace

uint64_t NodeSink::Dispositions(uint64_t fsid) {
  uint64_t mask = 0;
  for (const SessionView& s : node_->AllSessions()) {
    auto d = node_->GetAllDisp(s.rec.sid);
    if (!d.ok()) continue;  // destroyed meanwhile
    for (const auto& [fs, events] : *d)
      if (fs == fsid) mask |= events;
  }
  return mask;
}

uint64_t NamespaceSource::GeneratedEvents() { return kFileEvents | kMountEvents; }

// A file held open so that its return-on-destroy attribute outlives its
// last link.
struct HeldFile {
  UniqueFd fd;
  dm::Handle handle;
  bool doomed = false;  // nlink reached 0: DESTROY at the end of the batch
};

struct NamespaceSource::State {
  std::unordered_map<std::string, HeldFile> held;  // by fid key
  std::vector<std::string> doomed;                 // keys of held files marked doomed in this batch
  std::unordered_set<std::string> destroyed;
  std::deque<std::string> destroyed_order;
  std::deque<std::string> link_marks;
  bool warned_full = false;
  std::vector<uint64_t> buf = std::vector<uint64_t>(kReadBytes / sizeof(uint64_t));
};

namespace {

// What one read of the group shares: the dispositions and the file system's
// event list as of the read, and per-batch caches.
struct Batch {
  uint64_t disp = 0;
  uint64_t fs_events = 0;
  std::unordered_map<int, bool> exempt;
  std::unordered_map<std::string, uint64_t> lists;
  std::unordered_set<std::string> hold_checked;  // update_hold looked at these already
  std::optional<std::optional<dm::AttrName>> rod;
  // DESTROYs of objects not held, raised after the batch: the kernel queues
  // an unlinked inode's FAN_DELETE_SELF ahead of the FAN_DELETE in its
  // directory, and POSTREMOVE should come first.
  std::vector<dm::Handle> destroys;
};

}  // namespace

NamespaceSource::NamespaceSource(Options opts, Node* node)
    : opts_(std::move(opts)), own_sink_(std::make_unique<NodeSink>(node)), sink_(own_sink_.get()) {}

NamespaceSource::NamespaceSource(Options opts, EventSink* sink) : opts_(std::move(opts)), sink_(sink) {}

NamespaceSource::~NamespaceSource() { Stop(); }

Status NamespaceSource::Start() {
  if (started_) return FailedPrecondition("namespace events: already started");
  UniqueFd view(::open(opts_.view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!view.valid()) return PosixError("open", opts_.view, errno);
  PDM_ASSIGN_OR_RETURN(uint64_t fsid, dm::FsidOfFd(view.get()));
  // Notification class: nothing waits for us. DFID_NAME_TARGET: directory
  // fid + name and the child's fid on every dirent event.
  UniqueFd group(::fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET,
                                 O_RDONLY | O_LARGEFILE | O_CLOEXEC));
  if (!group.valid()) return PosixError("fanotify_init", "namespace group", errno);
  if (::fanotify_mark(group.get(), FAN_MARK_ADD | FAN_MARK_MOUNT, kMountMarkMask, AT_FDCWD, opts_.view.c_str()) != 0)
    return PosixError("fanotify_mark", opts_.view + " (mount, close-write)", errno);
  if (opts_.raise_namespace &&
      ::fanotify_mark(group.get(), FAN_MARK_ADD | FAN_MARK_FILESYSTEM, kFsMarkMask, AT_FDCWD, opts_.view.c_str()) !=
          0)
    return PosixError("fanotify_mark", opts_.view + " (filesystem, namespace)", errno);
  view_fd_ = std::move(view);
  fsid_ = fsid;
  group_ = std::move(group);
  state_ = std::make_unique<State>();
  thread_ = std::thread([this] { Run(); });
  started_ = true;
  RaiseMount();
  return Status::Ok();
}

void NamespaceSource::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  RaiseUnmount(DM_EVENT_PREUNMOUNT);
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  state_->held.clear();  // the kernel may now free what we kept alive
  held_count_ = 0;
  group_.reset();
  RaiseUnmount(DM_EVENT_UNMOUNT);
}

void NamespaceSource::RaiseMount() {
  if (!(sink_->Dispositions(0) & Bit(DM_EVENT_MOUNT))) return;  // nobody asked: build nothing
  auto root = dm::FdToHandle(view_fd_.get());
  if (!root.ok()) {
    spdlog::warn("namespace events: no handle for the root of {}: {}", opts_.view, root.status().ToString());
    return;
  }
  const dm::Handle fs = dm::MakeFsHandle(fsid_);
  Payload p(sizeof(dm_mount_event_t));
  dm_mount_event_t me{};
  struct statvfs sv{};
  if (::fstatvfs(view_fd_.get(), &sv) == 0 && (sv.f_flag & ST_RDONLY)) me.me_mode = DM_MOUNT_RDONLY;
  p.Put(me.me_handle1, fs.bytes());
  p.Put(me.me_roothandle, root->bytes());
  p.PutName(me.me_name1, opts_.view);
  RaiseSpec spec;
  spec.fsid = 0;  // the global handle's disposition
  spec.type = DM_EVENT_MOUNT;
  // Synchronous, as XDSM has it, so a session may answer (CONTINUE or
  // DONTCARE) as it would for any mount; the agent is attached already and
  // does not wait: the answer is only logged.
  spec.sync = true;
  spec.payload = p.Finish(me);
  const std::string view = opts_.view;
  sink_->Raise(spec, [view](Result<RaiseOutcome> r) {
    if (!r.ok())
      spdlog::debug("namespace events: MOUNT of {}: {}", view, r.status().ToString());
    else if (r->delivered && r->response == kRespAbort)
      spdlog::warn("namespace events: the session aborted the MOUNT of {} (errno {}); staying attached", view,
                   r->err);
  });
}

void NamespaceSource::RaiseUnmount(unsigned type) {
  if (!(sink_->FsEvents(fsid_) & Bit(type)) || !(sink_->Dispositions(fsid_) & Bit(type))) return;
  const dm::Handle fs = dm::MakeFsHandle(fsid_);
  std::optional<dm::Handle> root;
  if (type == DM_EVENT_PREUNMOUNT) {
    if (auto r = dm::FdToHandle(view_fd_.get()); r.ok()) root = *r;
  }
  RaiseSpec spec;
  spec.fsid = fsid_;
  spec.type = type;
  spec.sync = type == DM_EVENT_PREUNMOUNT;
  spec.payload = NamespPayload(0, fs, root, "", "", 0);
  if (!spec.sync) {
    sink_->Raise(spec, [](Result<RaiseOutcome>) {});
    return;
  }
  // PREUNMOUNT lets the session finish with the file system before this
  // node lets go of it; a session that does not answer in time does not
  // keep the agent from stopping.
  struct Wait {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  };
  auto w = std::make_shared<Wait>();
  sink_->Raise(spec, [w](Result<RaiseOutcome>) {
    std::lock_guard<std::mutex> lk(w->m);
    w->done = true;
    w->cv.notify_all();
  });
  std::unique_lock<std::mutex> lk(w->m);
  if (!w->cv.wait_for(lk, opts_.preunmount_timeout, [&] { return w->done; }))
    spdlog::warn("namespace events: PREUNMOUNT of {} not answered within {} ms; detaching", opts_.view,
                 opts_.preunmount_timeout.count());
}

// The reader: everything below runs on its thread only.
void NamespaceSource::Run() {
  // The agent's main thread sigwaits for the stop signals; this thread
  // must never be the one they are delivered to.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  State& s = *state_;
  const int gfd = group_.get();
  const pid_t self = ::getpid();

  auto open_fid = [&](const Fid& f, int flags) {
    KernelHandle kh(f);
    return UniqueFd(::open_by_handle_at(view_fd_.get(), kh.get(), flags | O_CLOEXEC));
  };
  auto handle_of = [&](const Fid& f) -> std::optional<dm::Handle> {
    if (!f.valid()) return std::nullopt;
    if (auto h = DecodeGenericFid(fsid_, f)) return h;
    UniqueFd fd = open_fid(f, O_PATH);
    if (!fd.valid()) return std::nullopt;
    auto h = dm::FdToHandle(fd.get());
    if (!h.ok()) return std::nullopt;
    return *h;
  };
  auto mode_of = [&](const Fid& f) -> mode_t {
    if (!f.valid()) return 0;
    UniqueFd fd = open_fid(f, O_PATH);
    struct stat st;
    return fd.valid() && ::fstat(fd.get(), &st) == 0 ? st.st_mode : 0;
  };
  // The object's own event list (trusted.pdm.events); 0 when it has none or
  // cannot be read (gone, not a file or directory).
  auto list_of = [&](const Fid& f, Batch& b) -> uint64_t {
    if (!f.valid()) return 0;
    auto it = b.lists.find(f.key);
    if (it != b.lists.end()) return it->second;
    uint64_t mask = 0;
    UniqueFd p = open_fid(f, O_PATH);
    struct stat st;
    if (p.valid() && ::fstat(p.get(), &st) == 0) {
      UniqueFd fd = Reopen(p.get(), st);
      if (fd.valid())
        if (auto m = dm::GetEventList(fd.get()); m.ok()) mask = *m;
    }
    b.lists.emplace(f.key, mask);
    return mask;
  };
  auto enabled = [&](unsigned type, Batch& b, std::initializer_list<const Fid*> objs) {
    if (b.fs_events & Bit(type)) return true;
    for (const Fid* f : objs)
      if (list_of(*f, b) & Bit(type)) return true;
    return false;
  };
  auto exempt = [&](int pid, Batch& b) {
    if (pid == self) return true;
    auto it = b.exempt.find(pid);
    if (it != b.exempt.end()) return it->second;
    const bool v = std::find(opts_.other_agent_pids.begin(), opts_.other_agent_pids.end(), pid) !=
                       opts_.other_agent_pids.end() ||
                   (opts_.is_dm_app && opts_.is_dm_app(pid)) || IsUnixClientOf(pid, opts_.other_dmapi_sockets);
    b.exempt.emplace(pid, v);
    return v;
  };
  auto rod_of = [&](Batch& b) -> const std::optional<dm::AttrName>& {
    if (!b.rod) {
      auto r = dm::GetReturnOnDestroy(view_fd_.get());
      b.rod = r.ok() ? *r : std::nullopt;
    }
    return *b.rod;
  };
  auto raise = [&](unsigned type, std::vector<uint8_t> payload) {
    RaiseSpec spec;
    spec.fsid = fsid_;
    spec.type = type;
    spec.sync = false;
    spec.payload = std::move(payload);
    sink_->Raise(spec, [type](Result<RaiseOutcome> r) {
      if (!r.ok()) spdlog::debug("namespace events: event {} not raised: {}", type, r.status().ToString());
    });
  };
  auto mark_doomed = [&](const std::string& key, HeldFile& h) {
    if (!h.doomed) s.doomed.push_back(key);
    h.doomed = true;
  };
  auto check_doomed = [&](const std::string& key, HeldFile& h) {
    struct stat st;
    if (::fstat(h.fd.get(), &st) == 0 && st.st_nlink == 0) mark_doomed(key, h);
  };
  // Starts or stops holding a file after a change of its attributes. Once
  // per file and batch: it reads the attributes as they are now, so a second
  // look would see the same (a DM application's state updates come in bursts).
  auto update_hold = [&](const Fid& f, Batch& b) {
    if (!f.valid() || !b.hold_checked.insert(f.key).second) return;
    auto it = s.held.find(f.key);
    UniqueFd opened;  // a file not held yet
    if (it == s.held.end()) {
      UniqueFd p = open_fid(f, O_PATH);
      struct stat st;
      if (!p.valid() || ::fstat(p.get(), &st) != 0) return;
      opened = Reopen(p.get(), st);
      if (!opened.valid()) return;
    }
    const int fd = it != s.held.end() ? it->second.fd.get() : opened.get();
    bool want = false;
    if (const auto& rod = rod_of(b)) {
      size_t needed = 0;
      uint8_t probe[1];
      Status g = dm::GetDmAttr(fd, *rod, probe, &needed);
      want = g.ok() || g.err() == E2BIG;
    }
    if (!want)
      if (auto m = dm::GetEventList(fd); m.ok()) want = (*m & Bit(DM_EVENT_DESTROY)) != 0;
    if (!want) {
      if (it != s.held.end()) s.held.erase(it);
      return;
    }
    if (it != s.held.end()) return;
    if (s.held.size() >= opts_.max_held_files) {
      if (!s.warned_full)
        spdlog::warn("namespace events: {} files held for DESTROY already; more get an empty attribute copy",
                     s.held.size());
      s.warned_full = true;
      return;
    }
    auto h = dm::FdToHandle(opened.get());
    if (!h.ok()) return;
    s.held.emplace(f.key, HeldFile{std::move(opened), *h, false});
  };
  auto remember_destroyed = [&](const std::string& key) {
    if (!s.destroyed.insert(key).second) return;
    s.destroyed_order.push_back(key);
    if (s.destroyed_order.size() > kDestroyedMemory) {
      s.destroyed.erase(s.destroyed_order.front());
      s.destroyed_order.pop_front();
    }
  };
  auto flush_doomed = [&](Batch& b) {
    for (const dm::Handle& h : b.destroys) raise(DM_EVENT_DESTROY, DestroyPayload(h, rod_of(b), {}));
    // Only the files marked in this batch: the held set can be large.
    std::vector<std::string> doomed;
    doomed.swap(s.doomed);
    for (const std::string& key : doomed) {
      auto it = s.held.find(key);
      if (it == s.held.end() || !it->second.doomed) continue;  // let go of meanwhile
      HeldFile& h = it->second;
      uint64_t own = 0;
      if (auto m = dm::GetEventList(h.fd.get()); m.ok()) own = *m;
      if ((b.disp & Bit(DM_EVENT_DESTROY)) && ((b.fs_events | own) & Bit(DM_EVENT_DESTROY))) {
        const auto& rod = rod_of(b);
        std::vector<uint8_t> copy;
        if (rod) {
          auto v = dm::GetDmAttr(h.fd.get(), *rod);
          if (v.ok()) copy = std::move(*v);
        }
        raise(DM_EVENT_DESTROY, DestroyPayload(h.handle, rod, copy));
      }
      remember_destroyed(it->first);
      s.held.erase(it);  // closes the fd: the inode may go now
    }
  };
  auto link_marked = [&](const std::string& key) {
    auto it = std::find(s.link_marks.begin(), s.link_marks.end(), key);
    if (it == s.link_marks.end()) return false;
    s.link_marks.erase(it);
    return true;
  };

  auto on_create = [&](const Parsed& ev, Batch& b) {
    constexpr uint64_t kCreates = Bit(DM_EVENT_POSTCREATE) | Bit(DM_EVENT_POSTLINK) | Bit(DM_EVENT_POSTSYMLINK);
    const bool linked = ev.obj.valid() && link_marked(ev.obj.key);
    if (!(b.disp & kCreates) || exempt(ev.pid, b)) return;
    UniqueFd child = ev.obj.valid() ? open_fid(ev.obj, O_PATH) : UniqueFd();
    struct stat st{};
    const bool have = child.valid() && ::fstat(child.get(), &st) == 0;
    unsigned type = DM_EVENT_POSTCREATE;
    if (have && S_ISLNK(st.st_mode))
      type = DM_EVENT_POSTSYMLINK;
    else if (linked)
      type = DM_EVENT_POSTLINK;
    if (!(b.disp & Bit(type)) || !enabled(type, b, {&ev.dir})) return;
    auto parent = handle_of(ev.dir);
    if (!parent) return;  // the directory is gone already: nothing to name
    std::string target;
    if (type == DM_EVENT_POSTSYMLINK) {
      char buf[4096];
      ssize_t n = ::readlinkat(child.get(), "", buf, sizeof buf);
      if (n > 0) target.assign(buf, static_cast<size_t>(n));
    }
    const mode_t mode = have ? st.st_mode : ((ev.mask & FAN_ONDIR) ? S_IFDIR : 0);
    raise(type, NamespPayload(mode, parent, handle_of(ev.obj), ev.dir.name, target, 0));
  };
  auto on_attrib = [&](const Parsed& ev, Batch& b) {
    if (!ev.dir.valid()) {
      // No directory record: the link count changed (link, unlink, or a
      // rename over this file), which is not an attribute change for DMAPI.
      if (!ev.obj.valid()) return;
      s.link_marks.push_back(ev.obj.key);
      if (s.link_marks.size() > kLinkMarks) s.link_marks.pop_front();
      if (auto it = s.held.find(ev.obj.key); it != s.held.end()) check_doomed(it->first, it->second);
      return;
    }
    // Whoever changed it (DM applications set the attribute), the hold set
    // follows, but only while someone wants DESTROY.
    if (b.disp & Bit(DM_EVENT_DESTROY)) update_hold(ev.obj, b);
    if (!(b.disp & Bit(DM_EVENT_ATTRIBUTE)) || exempt(ev.pid, b)) return;
    if (!enabled(DM_EVENT_ATTRIBUTE, b, {&ev.obj})) return;
    auto h = handle_of(ev.obj);
    if (!h) return;
    raise(DM_EVENT_ATTRIBUTE, NamespPayload(mode_of(ev.obj), h, std::nullopt, "", "", 0));
  };
  auto on_close = [&](const Parsed& ev, Batch& b) {
    if (!(b.disp & Bit(DM_EVENT_CLOSE)) || exempt(ev.pid, b)) return;
    if (!enabled(DM_EVENT_CLOSE, b, {&ev.obj})) return;
    auto h = handle_of(ev.obj);
    if (!h) return;
    raise(DM_EVENT_CLOSE, NamespPayload(0, h, std::nullopt, "", "", 0));
  };
  auto on_rename = [&](const Parsed& ev, Batch& b) {
    if (!(b.disp & Bit(DM_EVENT_POSTRENAME)) || exempt(ev.pid, b)) return;
    if (!enabled(DM_EVENT_POSTRENAME, b, {&ev.old_dir, &ev.new_dir})) return;
    auto from = handle_of(ev.old_dir), to = handle_of(ev.new_dir);
    if (!from || !to) return;
    raise(DM_EVENT_POSTRENAME, NamespPayload(mode_of(ev.obj), from, to, ev.old_dir.name, ev.new_dir.name, 0));
  };
  auto on_delete = [&](const Parsed& ev, Batch& b) {
    if (!(b.disp & Bit(DM_EVENT_POSTREMOVE)) || exempt(ev.pid, b)) return;
    if (!enabled(DM_EVENT_POSTREMOVE, b, {&ev.dir})) return;
    auto parent = handle_of(ev.dir);
    if (!parent) return;
    // The removed object's mode: from our own fd if we hold it, else from
    // the inode if other links keep it; a vanished one is at least a
    // directory or not.
    mode_t mode = 0;
    struct stat st;
    if (auto it = s.held.find(ev.obj.key); ev.obj.valid() && it != s.held.end() && ::fstat(it->second.fd.get(), &st) == 0)
      mode = st.st_mode;
    else
      mode = mode_of(ev.obj);
    if (mode == 0 && (ev.mask & FAN_ONDIR)) mode = S_IFDIR;
    raise(DM_EVENT_POSTREMOVE, NamespPayload(mode, parent, std::nullopt, ev.dir.name, "", 0));
  };
  auto on_delete_self = [&](const Parsed& ev, Batch& b) {
    if (!ev.obj.valid()) return;
    if (auto it = s.held.find(ev.obj.key); it != s.held.end()) {
      mark_doomed(it->first, it->second);
      return;
    }
    if (s.destroyed.erase(ev.obj.key) != 0) return;  // raised at nlink 0 already
    if (!(b.disp & Bit(DM_EVENT_DESTROY)) || !(b.fs_events & Bit(DM_EVENT_DESTROY))) return;
    auto h = DecodeGenericFid(fsid_, ev.obj);
    if (!h) {
      spdlog::debug("namespace events: DESTROY of an object whose handle type cannot be decoded, skipped");
      return;
    }
    b.destroys.push_back(*h);
  };

  while (!stopping_.load()) {
    pollfd pfd{gfd, POLLIN, 0};
    const int pr = ::poll(&pfd, 1, 200);
    if (pr <= 0) continue;  // timeout (look at stopping_) or EINTR
    // One syscall queues several events (an unlink: the inode's FAN_ATTRIB,
    // then FAN_DELETE). Waking on the first, let the rest land so that they
    // share a batch: the batch end is where DESTROY goes out, after them.
    ::usleep(2000);
    auto* buf = reinterpret_cast<uint8_t*>(s.buf.data());
    const ssize_t n = ::read(gfd, buf, kReadBytes);
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        spdlog::error("namespace events: reading the group failed: {}", std::strerror(errno));
        ::usleep(100000);
      }
      continue;
    }
    // Looked up after the read: an event in this batch happened before this
    // point, so a disposition set before the event is seen here.
    Batch b;
    b.disp = sink_->Dispositions(fsid_);
    b.fs_events = sink_->FsEvents(fsid_);
    const bool anyone = (b.disp & kFileEvents) != 0 || !s.held.empty();
    size_t off = 0;
    const size_t total = static_cast<size_t>(n);
    while (anyone && total - off >= sizeof(fanotify_event_metadata)) {
      fanotify_event_metadata meta;
      std::memcpy(&meta, buf + off, sizeof meta);
      if (meta.event_len < sizeof meta || meta.event_len > total - off || meta.metadata_len < sizeof meta ||
          meta.vers != FANOTIFY_METADATA_VERSION) {
        spdlog::error("namespace events: malformed event from the kernel; batch dropped");
        break;
      }
      if (meta.fd >= 0) ::close(meta.fd);  // fid groups report FAN_NOFD; never leak one
      if (meta.mask & FAN_Q_OVERFLOW) {
        spdlog::warn("namespace events: the kernel queue overflowed; namespace events were lost");
        for (auto& [key, h] : s.held) check_doomed(key, h);
      } else {
        Parsed ev;
        if (ParseEvent(buf + off, meta, &ev)) {
          if (ev.mask & FAN_CREATE) on_create(ev, b);
          if (ev.mask & FAN_ATTRIB) on_attrib(ev, b);
          if (ev.mask & FAN_CLOSE_WRITE) on_close(ev, b);
          if (ev.mask & FAN_RENAME) on_rename(ev, b);
          if (ev.mask & FAN_DELETE) on_delete(ev, b);
          if (ev.mask & FAN_DELETE_SELF) on_delete_self(ev, b);
        }
      }
      off += meta.event_len;
    }
    flush_doomed(b);
    held_count_ = s.held.size();
  }
}

bool IsUnixClientOf(int pid, const std::vector<std::string>& paths) {
  if (paths.empty() || pid <= 0) return false;
  // The socket inodes of pid's fds.
  std::unordered_set<uint32_t> mine;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char link[64];
    const ssize_t n = ::readlinkat(::dirfd(d), e->d_name, link, sizeof link - 1);
    if (n <= 0) continue;
    link[n] = 0;
    unsigned long ino = 0;
    if (std::sscanf(link, "socket:[%lu]", &ino) == 1) mine.insert(static_cast<uint32_t>(ino));
  }
  ::closedir(d);
  if (mine.empty()) return false;

  // Every Unix socket of the network namespace, with its peer and name. A
  // server's accepted socket carries the listening socket's name, so a
  // client's peer names the socket it connected to.
  UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) return false;
  struct {
    nlmsghdr h;
    unix_diag_req r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER;
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (::sendto(nl.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return false;

  std::unordered_map<uint32_t, uint32_t> peer_of;
  std::unordered_set<uint32_t> named;
  alignas(nlmsghdr) static thread_local uint8_t buf[32768];
  for (bool done = false; !done;) {
    int n = static_cast<int>(::recv(nl.get(), buf, sizeof buf, 0));
    if (n <= 0) break;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) {
        done = true;
        break;
      }
      auto* m = static_cast<unix_diag_msg*>(NLMSG_DATA(h));
      int len = static_cast<int>(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
      for (auto* a = reinterpret_cast<rtattr*>(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
        if (a->rta_type == UNIX_DIAG_NAME) {
          std::string_view name(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a));
          while (!name.empty() && name.back() == '\0') name.remove_suffix(1);
          if (std::find(paths.begin(), paths.end(), name) != paths.end()) named.insert(m->udiag_ino);
        } else if (a->rta_type == UNIX_DIAG_PEER && mine.count(m->udiag_ino) && RTA_PAYLOAD(a) >= 4) {
          uint32_t peer;
          std::memcpy(&peer, RTA_DATA(a), sizeof peer);
          peer_of[m->udiag_ino] = peer;
        }
      }
    }
  }
  for (const auto& [sock, peer] : peer_of)
    if (named.count(peer)) return true;
  return false;
}

}  // namespace pdm::events
