#include "hsm/hdf5_archive.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <spdlog/spdlog.h>

namespace pdm::hsm {
namespace {

// ---- HDF5 plumbing (callers hold Hdf5LibraryMutex) -------------------------------

// Owns one HDF5 id; closes it with the matching H5*close. Move-only.
class H5Id {
 public:
  using Closer = herr_t (*)(hid_t);
  H5Id() = default;
  H5Id(hid_t id, Closer close) : id_(id), close_(close) {}
  H5Id(H5Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      close_ = o.close_;
    }
    return *this;
  }
  ~H5Id() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports the failure (H5Fclose flushes, so it can fail).
  herr_t Close() {
    herr_t r = 0;
    if (id_ >= 0) r = close_(id_);
    id_ = H5I_INVALID_HID;
    return r;
  }
  void reset() { Close(); }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

struct H5ErrorInfo {
  std::string outer;  // the API call's own message (top of the stack)
  std::string inner;  // the deepest one: usually the driver's, with errno
  int err = 0;
};

herr_t CollectError(unsigned n, const H5E_error2_t* e, void* data) {
  auto* info = static_cast<H5ErrorInfo*>(data);
  if (e->desc != nullptr) {
    std::string m = std::string(e->func_name ? e->func_name : "?") + ": " + e->desc;
    // The driver's message embeds a newline and a raw buffer address; keep
    // it to one line and a sane length.
    std::replace(m.begin(), m.end(), '\n', ' ');
    if (m.size() > 300) m.resize(300);
    if (n == 0) info->outer = m;
    info->inner = std::move(m);
    // The sec2 driver puts the failing call's errno in its message
    // ("file write failed: ..., errno = 28, ..."): the only place HDF5
    // keeps it.
    const char* p = std::strstr(e->desc, "errno = ");
    if (p != nullptr && info->err == 0) info->err = std::atoi(p + 8);
  }
  return 0;
}

// The one place an HDF5 failure becomes a Status: the error stack's messages,
// and its errno when the file driver recorded one (ENOSPC → archive full).
Status H5Failure(std::string_view call, const std::string& what) {
  H5ErrorInfo info;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, CollectError, &info);
  H5Eclear2(H5E_DEFAULT);
  std::string msg = what + ": " + (info.outer.empty() ? std::string("(no HDF5 error message)") : info.outer);
  if (!info.inner.empty() && info.inner != info.outer) msg += " ... " + info.inner;
  if (info.err != 0) return ArchiveIoError(call, msg, info.err);
  return Internal(std::string(call) + "(" + msg + ")", EIO);
}

// Once per process, under the library mutex: open the library and stop it
// printing error stacks to stderr (we turn them into Statuses).
void InitHdf5Locked() {
  static bool done = false;
  if (done) return;
  H5open();
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  done = true;
}

// File access: sec2 (no MPI communicator, no collectives), HDF5's own
// flock-based locking off (we flock the container ourselves, see the header).
Result<H5Id> FileAccess() {
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid()) return H5Failure("H5Pcreate", "file access list");
  if (H5Pset_fapl_sec2(fapl.get()) < 0) return H5Failure("H5Pset_fapl_sec2", "file access list");
  if (H5Pset_file_locking(fapl.get(), false, true) < 0) return H5Failure("H5Pset_file_locking", "file access list");
  return fapl;
}

Status WriteStringAttr(hid_t obj, const char* name, const std::string& value) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.valid() || H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)) < 0 ||
      H5Tset_strpad(type.get(), H5T_STR_NULLPAD) < 0)
    return H5Failure("H5Tset_size", name);
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return H5Failure("H5Acreate2", name);
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  if (H5Awrite(attr.get(), type.get(), buf.data()) < 0) return H5Failure("H5Awrite", name);
  return Status::Ok();
}

Status WriteU64Attr(hid_t obj, const char* name, uint64_t value) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return H5Failure("H5Acreate2", name);
  if (H5Awrite(attr.get(), H5T_NATIVE_UINT64, &value) < 0) return H5Failure("H5Awrite", name);
  return Status::Ok();
}

// H5Lexists on "/a/b/c" fails (not false) when "/a" is missing: test each
// prefix.
bool LinkExists(hid_t file, const std::string& path) {
  size_t pos = 0;
  while ((pos = path.find('/', pos + 1)) != std::string::npos) {
    if (H5Lexists(file, path.substr(0, pos).c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return H5Lexists(file, path.c_str(), H5P_DEFAULT) > 0;
}

herr_t CountDataset(hid_t /*obj*/, const char* /*name*/, const H5O_info_t* info, void* data) {
  if (info->type == H5O_TYPE_DATASET) ++*static_cast<uint64_t*>(data);
  return 0;
}

// A new chunk dataset at ds_path of file (its container's path in `where`),
// replacing an earlier put of the same chunk (a reassigned task). Contiguous
// and allocated at creation: the raw bytes have their file offset from the
// start (reads and streaming writes use it directly), and no fill value is
// ever written over them.
Result<H5Id> CreateDataset(hid_t file, const std::string& where, const std::string& ds_path, uint64_t length,
                           bool replace) {
  if (replace && H5Ldelete(file, ds_path.c_str(), H5P_DEFAULT) < 0)
    return H5Failure("H5Ldelete", where + ":" + ds_path);
  H5Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!lcpl.valid() || !dcpl.valid() || H5Pset_create_intermediate_group(lcpl.get(), 1) < 0 ||
      H5Pset_layout(dcpl.get(), H5D_CONTIGUOUS) < 0 || H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_EARLY) < 0 ||
      H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0)
    return H5Failure("H5Pcreate", "dataset properties");
  hsize_t dims[1] = {length};
  H5Id space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  H5Id ds(H5Dcreate2(file, ds_path.c_str(), H5T_STD_U8LE, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
          H5Dclose);
  if (!ds.valid()) return H5Failure("H5Dcreate2", where + ":" + ds_path);
  return ds;
}

std::string DatasetPath(const std::string& key, uint32_t index) {
  return "/objects/" + key + "/c" + std::to_string(index);
}

std::string DefaultWriter() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "host");
  std::string w;
  for (char* p = host; *p; ++p) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_';
    w += ok ? c : '_';
  }
  uint32_t rnd = 0;
  if (::getrandom(&rnd, sizeof rnd, 0) != sizeof rnd) rnd = static_cast<uint32_t>(MonotonicNs());
  char tail[48];
  std::snprintf(tail, sizeof tail, "-%d-%08" PRIx32, static_cast<int>(::getpid()), rnd);
  return w + tail;
}

bool WriterNameOk(const std::string& w) {
  if (w.empty() || w.size() > 128) return false;
  for (char c : w)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return false;
  return true;
}

}  // namespace

std::mutex& Hdf5LibraryMutex() {
  static std::mutex mu;
  return mu;
}

Result<Hdf5Location> ParseHdf5Location(std::string_view where) {
  size_t hash = where.find('#'), at = where.rfind('@');
  if (hash == std::string_view::npos || at == std::string_view::npos || at < hash)
    return DataLoss("hdf5 chunk location '" + std::string(where) + "' is malformed");
  Hdf5Location loc;
  loc.container = std::string(where.substr(0, hash));
  loc.dataset = std::string(where.substr(hash + 1, at - hash - 1));
  std::string off(where.substr(at + 1));
  if (off.empty() || off.size() > 20 || off.find_first_not_of("0123456789") != std::string::npos)
    return DataLoss("hdf5 chunk location '" + std::string(where) + "': bad offset");
  loc.file_offset = std::strtoull(off.c_str(), nullptr, 10);
  // Only containers of this archive: a manifest cannot send a read elsewhere.
  std::string_view c = loc.container;
  if (c.substr(0, 11) != "containers/" || c.find('/', 11) != std::string_view::npos || c.size() < 15 ||
      c.substr(c.size() - 3) != ".h5" || c.find("..") != std::string_view::npos)
    return DataLoss("hdf5 chunk location '" + std::string(where) + "': not a container of this archive");
  return loc;
}

// ---- the open container ------------------------------------------------------------

struct Hdf5Archive::Container {
  std::string rel;   // "containers/<writer>-<seq>.h5"
  std::string path;  // absolute
  UniqueFd fd;       // flock(LOCK_EX) while open; fsync through it
  H5Id file;
  uint64_t bytes = 0;       // chunk bytes written
  bool dirty = false;       // kAtFlush writes not yet durable
  bool dir_synced = false;  // the container's directory entry is durable
  Status broken;            // a failed write: no more writes; Flush reports it
  uint64_t seq = 0;         // the <seq> of its name
  int writers = 0;          // streaming sinks with a dataset here (not sealed under them)
  // Datasets a sink is still writing, with the sink's "dropped" flag: a
  // Remove/AbortObject or a re-put of the chunk sets it, and that sink's
  // Finish fails instead of reporting a chunk that is gone.
  std::map<std::string, bool*> streaming;
  bool sealing = false;     // a seal waits for the writers: no new datasets
  std::set<std::string> datasets;                           // written here
  std::map<std::string, std::vector<std::string>> by_key;  // key → its datasets here
};

void Hdf5Archive::DropStreamingLocked(Container& c, const std::string& ds_path) {
  if (auto it = c.streaming.find(ds_path); it != c.streaming.end()) {
    *it->second = true;
    c.streaming.erase(it);
  }
}

Result<std::unique_ptr<Archive>> Hdf5Archive::Create(const std::string& dir_in, uint32_t archive_id,
                                                     const ArchiveOptions& opts_in) {
  std::error_code ec;
  std::string dir = std::filesystem::absolute(dir_in, ec).lexically_normal().string();
  if (ec || dir.empty()) return InvalidArgument("archive dir '" + dir_in + "'");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  ArchiveOptions opts = opts_in;
  if (opts.writer.empty()) opts.writer = DefaultWriter();
  if (!WriterNameOk(opts.writer)) return InvalidArgument("archive writer name '" + opts.writer + "'");
  if (opts.container_max_bytes == 0) return InvalidArgument("container_max_bytes 0");
  std::vector<std::string> parents;
  PDM_RETURN_IF_ERROR(MakeDirs(dir + "/containers", &parents));
  PDM_RETURN_IF_ERROR(MakeDirs(dir + "/manifests", &parents));
  for (const auto& p : parents) PDM_RETURN_IF_ERROR(FsyncPath(p));
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return PosixError("open", dir, errno);
  {
    std::lock_guard lk(Hdf5LibraryMutex());
    InitHdf5Locked();
  }
  return std::unique_ptr<Archive>(new Hdf5Archive(dir, archive_id, std::move(opts), std::move(root)));
}

Hdf5Archive::Hdf5Archive(std::string dir, uint32_t id, ArchiveOptions opts, UniqueFd root_fd)
    : Archive(dir, id), opts_(std::move(opts)), root_fd_(std::move(root_fd)), store_(dir + "/manifests") {}

Hdf5Archive::~Hdf5Archive() {
  std::unique_lock lk(Hdf5LibraryMutex());
  Status st = SealLocked(lk);
  if (!st.ok()) spdlog::error("hdf5 archive {}: seal at close: {}", dir(), st.ToString());
}

std::string Hdf5Archive::OpenContainer() {
  std::lock_guard lk(Hdf5LibraryMutex());
  return open_ ? open_->rel : std::string();
}

Status Hdf5Archive::OpenNewContainerLocked() {
  auto c = std::make_unique<Container>();
  // Our fd and lock first, so the file is never visible unlocked. O_EXCL,
  // and the next number if taken: an explicit writer name may be reused by a
  // restarted process, whose earlier containers hold committed objects.
  for (int tries = 0;; ++tries) {
    char seq[32];
    c->seq = next_seq_++;
    std::snprintf(seq, sizeof seq, "%06" PRIu64, c->seq);
    c->rel = "containers/" + opts_.writer + "-" + seq + ".h5";
    c->path = dir() + "/" + c->rel;
    c->fd = UniqueFd(::open(c->path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640));
    if (c->fd.valid()) break;
    if (errno != EEXIST || tries >= 100000) return ArchiveIoError("open", c->path, errno);
  }
  if (::flock(c->fd.get(), LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ::unlink(c->path.c_str());
    return PosixError("flock", c->path, e);
  }
  PDM_ASSIGN_OR_RETURN(H5Id fapl, FileAccess());
  c->file = H5Id(H5Fcreate(c->path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!c->file.valid()) {
    Status st = H5Failure("H5Fcreate", c->path);
    ::unlink(c->path.c_str());
    return st;
  }
  open_ = std::move(c);
  return Status::Ok();
}

Status Hdf5Archive::SyncOpenLocked() {
  Container& c = *open_;
  if (!c.broken.ok()) return c.broken;
  if (H5Fflush(c.file.get(), H5F_SCOPE_LOCAL) < 0) {
    c.broken = H5Failure("H5Fflush", c.path);
    return c.broken;
  }
  if (::fsync(c.fd.get()) != 0) {
    c.broken = ArchiveIoError("fsync", c.path, errno);
    return c.broken;
  }
  if (!c.dir_synced) {
    PDM_RETURN_IF_ERROR(FsyncPath(dir() + "/containers"));
    c.dir_synced = true;
  }
  c.dirty = false;
  return Status::Ok();
}

Status Hdf5Archive::SealLocked(std::unique_lock<std::mutex>& lk) {
  if (!open_) return Status::Ok();
  if (open_->sealing) {  // another thread is sealing it: wait for that
    cv_.wait(lk, [&] { return !open_ || !open_->sealing; });
    return Status::Ok();
  }
  // Streaming sinks write raw bytes into their datasets outside the lock;
  // the container closes (and is fsynced) only after the last one is done.
  open_->sealing = true;
  cv_.wait(lk, [&] { return open_->writers == 0; });
  std::unique_ptr<Container> c = std::move(open_);
  cv_.notify_all();
  Status st = c->broken;
  if (c->file.Close() < 0 && st.ok()) st = H5Failure("H5Fclose", c->path);
  if (st.ok() && ::fsync(c->fd.get()) != 0) st = ArchiveIoError("fsync", c->path, errno);
  if (st.ok() && !c->dir_synced) st = FsyncPath(dir() + "/containers");
  // Closing our fd drops the flock: the container is sealed.
  c->fd.reset();
  if (!st.ok() && c->dirty) {
    // Remembered for the Flush of every thread that put into it (see
    // NoteUnflushed), not only for whoever happened to seal it.
    failed_seals_[c->seq] = st;
    if (failed_seals_.size() > 1024) failed_seals_.erase(failed_seals_.begin());
  }
  if (!st.ok()) spdlog::warn("hdf5 archive: container {} sealed with error: {}", c->rel, st.ToString());
  // A broken container's error matters to Flush only if writes were still
  // waiting to become durable; kNow writes already got their error.
  return c->dirty ? st : Status::Ok();
}

Status Hdf5Archive::ContainerForLocked(std::unique_lock<std::mutex>& lk, uint64_t bytes) {
  cv_.wait(lk, [&] { return !open_ || !open_->sealing; });
  if (open_ && !open_->broken.ok()) PDM_RETURN_IF_ERROR(SealLocked(lk));
  // Full: seal it (after the sinks still writing into it are done; the
  // caller holds none).
  if (open_ && open_->bytes > 0 && open_->bytes + bytes > opts_.container_max_bytes)
    PDM_RETURN_IF_ERROR(SealLocked(lk));
  if (!open_) PDM_RETURN_IF_ERROR(OpenNewContainerLocked());
  return Status::Ok();
}

Result<ChunkRef> Hdf5Archive::PutChunk(const std::string& key, uint32_t index, uint64_t offset,
                                       std::span<const uint8_t> data, Durability durability) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  if (data.empty()) return InvalidArgument("PutChunk('" + key + "'): empty chunk");
  if (::access(store_.PathOf(key).c_str(), F_OK) == 0)
    return AlreadyExists("archive object '" + key + "' is already committed");
  // Hash outside the library lock: it is the expensive part that needs no HDF5.
  Checksum128 sum = Xxh3_128(data);
  const std::string ds_path = DatasetPath(key, index);

  std::unique_lock lk(Hdf5LibraryMutex());
  PDM_RETURN_IF_ERROR(ContainerForLocked(lk, data.size()));
  Container& c = *open_;
  hid_t file = c.file.get();

  auto fail = [&](Status st) {
    c.broken = st;
    return st;
  };
  DropStreamingLocked(c, ds_path);
  auto created = CreateDataset(file, c.path, ds_path, data.size(), c.datasets.count(ds_path) > 0);
  if (!created.ok()) return fail(created.status());
  H5Id ds = std::move(*created);
  c.datasets.insert(ds_path);
  c.by_key[key].push_back(ds_path);
  // A dataset that failed half way must not stay listed as if it held the
  // chunk: unlink it (best effort; the container is broken anyway).
  auto fail_unlink = [&](Status st) {
    ds.reset();
    H5Ldelete(file, ds_path.c_str(), H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    c.datasets.erase(ds_path);
    return fail(st);
  };
  if (H5Dwrite(ds.get(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0)
    return fail_unlink(H5Failure("H5Dwrite", c.path + ":" + ds_path));
  for (Status st : {WriteStringAttr(ds.get(), "xxh3_128", sum.Hex()), WriteU64Attr(ds.get(), "offset", offset),
                    WriteStringAttr(ds.get(), "key", key)})
    if (!st.ok()) return fail_unlink(st);
  haddr_t addr = H5Dget_offset(ds.get());
  if (addr == HADDR_UNDEF) return fail(Internal(c.path + ":" + ds_path + ": raw data has no file offset"));
  if (ds.Close() < 0) return fail(H5Failure("H5Dclose", c.path + ":" + ds_path));
  c.bytes += data.size();
  if (durability == Durability::kNow) {
    PDM_RETURN_IF_ERROR(SyncOpenLocked());
  } else {
    c.dirty = true;
    NoteUnflushed(c.seq);
  }
  return ChunkRef{index, offset, data.size(), c.rel + "#" + ds_path + "@" + std::to_string(addr), sum};
}

// A chunk streamed into its dataset's raw bytes. The container stays open
// (SealLocked waits) until the sink is finished or dropped.
class Hdf5Archive::Sink final : public ChunkSink {
 public:
  Sink(Hdf5Archive* a, Container* c, H5Id ds, std::string key, std::string ds_path, uint32_t index,
       uint64_t offset, uint64_t length, uint64_t addr)
      : archive_(a),
        c_(c),
        ds_(std::move(ds)),
        key_(std::move(key)),
        ds_path_(std::move(ds_path)),
        index_(index),
        offset_(offset),
        length_(length),
        addr_(addr),
        out_(c->fd.get(), addr, length, ChunkName(key_, index), c->path + ":" + ds_path_) {}

  ~Sink() override {
    if (finished_) return;
    std::lock_guard lk(Hdf5LibraryMutex());
    ds_.reset();
    if (!dropped_) {
      // Given up half way: the dataset must not look like a stored chunk.
      // (A dropped one is unlinked already, and its path may be another's.)
      c_->streaming.erase(ds_path_);
      H5Ldelete(c_->file.get(), ds_path_.c_str(), H5P_DEFAULT);
      H5Eclear2(H5E_DEFAULT);
      c_->datasets.erase(ds_path_);
      auto& mine = c_->by_key[key_];
      mine.erase(std::remove(mine.begin(), mine.end(), ds_path_), mine.end());
      if (mine.empty()) c_->by_key.erase(key_);
    }
    --c_->writers;
    archive_->cv_.notify_all();
  }

  Status Write(std::span<const uint8_t> data) override { return out_.Write(data); }

  Result<ChunkRef> Finish(Durability durability) override {
    PDM_RETURN_IF_ERROR(out_.CheckComplete());
    const Checksum128 sum = out_.Digest();
    std::lock_guard lk(Hdf5LibraryMutex());
    if (dropped_) return Aborted(ChunkName(key_, index_) + " was dropped while it was written", ECANCELED);
    PDM_RETURN_IF_ERROR(c_->broken);
    auto fail = [&](Status st) {
      c_->broken = st;
      return st;
    };
    if (Status st = WriteStringAttr(ds_.get(), "xxh3_128", sum.Hex()); !st.ok()) return fail(st);
    if (ds_.Close() < 0) return fail(H5Failure("H5Dclose", c_->path + ":" + ds_path_));
    // While we count as a writer the container is open_ (a seal waits).
    if (durability == Durability::kNow) {
      PDM_RETURN_IF_ERROR(archive_->SyncOpenLocked());
    } else {
      c_->dirty = true;
      archive_->NoteUnflushed(c_->seq);
    }
    c_->streaming.erase(ds_path_);
    ChunkRef ref{index_, offset_, length_, c_->rel + "#" + ds_path_ + "@" + std::to_string(addr_), sum};
    // Done with the container: from here a seal need not wait for us.
    finished_ = true;
    --c_->writers;
    archive_->cv_.notify_all();
    return ref;
  }

 private:
  Hdf5Archive* const archive_;
  Container* const c_;
  H5Id ds_;  // open until Finish (its checksum attribute comes last)
  const std::string key_;
  const std::string ds_path_;
  const uint32_t index_;
  const uint64_t offset_;
  const uint64_t length_;
  const uint64_t addr_;     // file offset of the raw bytes
  HashedRangeWriter out_;  // the raw bytes, through the container's fd
  bool finished_ = false;
 public:
  bool dropped_ = false;  // GUARDED_BY(Hdf5LibraryMutex()); see Container::streaming
};

Result<std::unique_ptr<ChunkSink>> Hdf5Archive::OpenChunk(const std::string& key, uint32_t index, uint64_t offset,
                                                          uint64_t length) {
  if (length < kStreamBytes) return Archive::OpenChunk(key, index, offset, length);
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  if (offset > UINT64_MAX - length) return InvalidArgument("OpenChunk('" + key + "'): offset overflows");
  if (::access(store_.PathOf(key).c_str(), F_OK) == 0)
    return AlreadyExists("archive object '" + key + "' is already committed");
  const std::string ds_path = DatasetPath(key, index);

  std::unique_lock lk(Hdf5LibraryMutex());
  PDM_RETURN_IF_ERROR(ContainerForLocked(lk, length));
  Container& c = *open_;
  auto fail = [&](Status st) {
    c.broken = st;
    return st;
  };
  DropStreamingLocked(c, ds_path);
  auto ds = CreateDataset(c.file.get(), c.path, ds_path, length, c.datasets.count(ds_path) > 0);
  if (!ds.ok()) return fail(ds.status());
  for (Status st : {WriteU64Attr(ds->get(), "offset", offset), WriteStringAttr(ds->get(), "key", key)})
    if (!st.ok()) return fail(st);
  const haddr_t addr = H5Dget_offset(ds->get());
  if (addr == HADDR_UNDEF) return fail(Internal(c.path + ":" + ds_path + ": raw data has no file offset"));
  c.datasets.insert(ds_path);
  c.by_key[key].push_back(ds_path);
  c.bytes += length;  // counted now: the size limit sees chunks still streaming
  ++c.writers;
  auto sink = std::make_unique<Sink>(this, &c, std::move(*ds), key, ds_path, index, offset, length,
                                     static_cast<uint64_t>(addr));
  c.streaming[ds_path] = &sink->dropped_;
  return std::unique_ptr<ChunkSink>(std::move(sink));
}

namespace {
// Per thread: the containers (archive, seq) it put kAtFlush chunks into
// since its last Flush.
thread_local std::vector<std::pair<const void*, uint64_t>> t_unflushed;
}  // namespace

void Hdf5Archive::NoteUnflushed(uint64_t seq) const {
  if (t_unflushed.empty() || t_unflushed.back() != std::make_pair(static_cast<const void*>(this), seq))
    t_unflushed.emplace_back(this, seq);
}

Status Hdf5Archive::Flush() {
  std::unique_lock lk(Hdf5LibraryMutex());
  Status st = SealLocked(lk);
  // A container this thread wrote into may have been sealed by another
  // thread (the size limit, its Flush): its failure is ours too.
  for (auto it = t_unflushed.begin(); it != t_unflushed.end();) {
    if (it->first != this) {
      ++it;
      continue;
    }
    if (auto f = failed_seals_.find(it->second); f != failed_seals_.end() && st.ok()) st = f->second;
    it = t_unflushed.erase(it);
  }
  return st;
}

Status Hdf5Archive::Commit(std::span<const ObjectManifest> batch, size_t* committed) {
  if (committed) *committed = 0;
  {
    // Chunks this process put with kAtFlush become durable; the container
    // stays open for the rest of the writer's batch.
    std::lock_guard lk(Hdf5LibraryMutex());
    if (open_ && open_->dirty) PDM_RETURN_IF_ERROR(SyncOpenLocked());
  }
  struct Item {
    const ObjectManifest* m;
    std::string staged;
  };
  std::vector<Item> items;
  SyncSet staged_sync;
  auto drop_staged = [&] {
    for (auto& it : items)
      if (!it.staged.empty()) ::unlink(it.staged.c_str());
  };
  Status st;
  for (const auto& m : batch) {
    st = ValidateManifest(m);
    if (!st.ok()) break;
    auto existing = store_.Read(m.key);
    if (existing.ok()) {
      if (!(*existing == m))
        st = AlreadyExists("archive object '" + m.key + "' is already committed with another manifest");
      if (!st.ok()) break;
      items.push_back({&m, {}});
      continue;
    }
    // Every chunk where its ref says: our own container name, its dataset,
    // and a container file long enough to hold the raw bytes. (The bytes
    // themselves are checked by the checksum on every read.)
    for (const auto& ch : m.chunks) {
      auto loc = ParseHdf5Location(ch.where);
      if (!loc.ok() || loc->dataset != DatasetPath(m.key, ch.index)) {
        st = InvalidArgument("manifest of '" + m.key + "': chunk " + std::to_string(ch.index) +
                             " location '" + ch.where + "' is not in this hdf5 archive");
        break;
      }
      struct stat sb;
      std::string path = dir() + "/" + loc->container;
      if (::stat(path.c_str(), &sb) != 0 || uint64_t(sb.st_size) < loc->file_offset + ch.length) {
        st = FailedPrecondition("commit '" + m.key + "': chunk " + std::to_string(ch.index) + " not in " +
                                loc->container);
        break;
      }
    }
    if (!st.ok()) break;
    std::vector<std::string> parents;
    st = MakeDirs(ParentDir(store_.PathOf(m.key)), &parents);
    for (const auto& p : parents)
      if (st.ok()) st = FsyncPath(p);
    if (!st.ok()) break;
    auto staged = store_.Stage(m, &staged_sync);
    if (!staged.ok()) {
      st = staged.status();
      break;
    }
    items.push_back({&m, std::move(*staged)});
  }
  // Every staged manifest durable before any is published.
  if (st.ok()) st = staged_sync.Sync(root_fd_.get(), dir());
  if (!st.ok()) {
    drop_staged();
    return st;
  }
  SyncSet dirs;
  size_t done = 0;
  for (auto& it : items) {
    if (!it.staged.empty()) {
      st = store_.Publish(it.staged, *it.m);
      it.staged.clear();
      if (!st.ok()) break;
      dirs.AddPath(ParentDir(store_.PathOf(it.m->key)));
    }
    ++done;
  }
  Status synced = dirs.Sync(root_fd_.get(), dir());
  if (st.ok() && !synced.ok()) {
    done = 0;
    st = synced;
  }
  drop_staged();
  if (committed) *committed = done;
  return st;
}

Result<ObjectManifest> Hdf5Archive::Stat(const std::string& key) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  PDM_ASSIGN_OR_RETURN(ObjectManifest m, store_.Read(key));
  for (const auto& c : m.chunks) {
    auto loc = ParseHdf5Location(c.where);
    if (!loc.ok()) return loc.status();
  }
  return m;
}

Result<Archive::ChunkFile> Hdf5Archive::LocateChunk(const ObjectManifest& m, uint32_t index) {
  const ChunkRef& c = m.chunks[index];
  PDM_ASSIGN_OR_RETURN(Hdf5Location loc, ParseHdf5Location(c.where));
  if (loc.dataset != DatasetPath(m.key, index))
    return DataLoss("manifest of '" + m.key + "': chunk " + std::to_string(index) + " names dataset " + loc.dataset);
  std::string path = dir() + "/" + loc.container;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return DataLoss("archive object '" + m.key + "': container " + loc.container + " missing");
    return PosixError("open", path, errno);
  }
  return ChunkFile{std::move(fd), loc.file_offset, std::move(path)};
}

Status Hdf5Archive::DropDatasets(const std::string& key, const std::vector<Hdf5Location>& locs) {
  std::map<std::string, std::vector<std::string>> by_container;
  for (const auto& l : locs) by_container[l.container].push_back(l.dataset);
  Status first;
  for (auto& [rel, datasets] : by_container) {
    std::sort(datasets.begin(), datasets.end());
    datasets.erase(std::unique(datasets.begin(), datasets.end()), datasets.end());
    std::lock_guard lk(Hdf5LibraryMutex());
    if (open_ && open_->rel == rel) {
      // Our own open container: unlink the datasets; the file stays.
      for (const auto& d : datasets) {
        DropStreamingLocked(*open_, d);
        if (open_->datasets.erase(d) && H5Ldelete(open_->file.get(), d.c_str(), H5P_DEFAULT) < 0) {
          Status st = H5Failure("H5Ldelete", open_->path + ":" + d);
          if (first.ok()) first = st;
        }
      }
      open_->by_key.erase(key);
      continue;
    }
    std::string path = dir() + "/" + rel;
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno != ENOENT && first.ok()) first = PosixError("open", path, errno);
      continue;
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      // Its writer still has it open; the datasets stay until a later
      // Remove/AbortObject finds it sealed.
      spdlog::info("hdf5 archive: {} still open by its writer; datasets of '{}' kept", rel, key);
      continue;
    }
    auto fapl = FileAccess();
    if (!fapl.ok()) return fapl.status();
    H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl->get()), H5Fclose);
    if (!file.valid()) {
      Status st = H5Failure("H5Fopen", path);
      if (first.ok()) first = st;
      continue;
    }
    for (const auto& d : datasets) {
      if (LinkExists(file.get(), d) && H5Ldelete(file.get(), d.c_str(), H5P_DEFAULT) < 0) {
        Status st = H5Failure("H5Ldelete", path + ":" + d);
        if (first.ok()) first = st;
      }
    }
    uint64_t left = 0;
    if (H5Ovisit2(file.get(), H5_INDEX_NAME, H5_ITER_NATIVE, CountDataset, &left, H5O_INFO_BASIC) < 0) {
      Status st = H5Failure("H5Ovisit", path);
      if (first.ok()) first = st;
      continue;
    }
    if (file.Close() < 0) {
      Status st = H5Failure("H5Fclose", path);
      if (first.ok()) first = st;
      continue;
    }
    if (left == 0) {
      // Its last object is gone: the whole container goes. Nobody writes to
      // a sealed container again, so the count cannot grow behind us.
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        if (first.ok()) first = PosixError("unlink", path, errno);
        continue;
      }
      Status st = FsyncPath(dir() + "/containers");
      if (!st.ok() && first.ok()) first = st;
    }
  }
  return first;
}

Status Hdf5Archive::Remove(const std::string& key) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  auto m = store_.Read(key);
  if (!m.ok() && m.status().code() == Code::kNotFound) {
    PDM_RETURN_IF_ERROR(AbortObject(key, {}));
    return m.status();
  }
  std::vector<Hdf5Location> locs;
  if (m.ok()) {
    for (const auto& c : m->chunks) {
      auto loc = ParseHdf5Location(c.where);
      if (loc.ok()) locs.push_back(*loc);
    }
  }
  // A damaged manifest is removed too: the object is unusable either way.
  PDM_RETURN_IF_ERROR(store_.Unpublish(key));
  Status st = DropDatasets(key, locs);
  if (!st.ok()) spdlog::warn("hdf5 archive: '{}' removed, but freeing its data failed: {}", key, st.ToString());
  return Status::Ok();
}

Status Hdf5Archive::AbortObject(const std::string& key, std::span<const ChunkRef> known) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  if (::access(store_.PathOf(key).c_str(), F_OK) == 0)
    return FailedPrecondition("AbortObject('" + key + "'): the object is committed");
  std::vector<Hdf5Location> locs;
  {
    std::lock_guard lk(Hdf5LibraryMutex());
    if (open_) {
      auto it = open_->by_key.find(key);
      if (it != open_->by_key.end())
        for (const auto& d : it->second) locs.push_back({open_->rel, d, 0});
    }
  }
  for (const auto& c : known) {
    auto loc = ParseHdf5Location(c.where);
    if (loc.ok() && loc->dataset.rfind("/objects/" + key + "/", 0) == 0) locs.push_back(*loc);
  }
  return DropDatasets(key, locs);
}

Result<std::vector<std::string>> Hdf5Archive::ListKeys() { return store_.List(); }

}  // namespace pdm::hsm
