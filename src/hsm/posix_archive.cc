#include "hsm/posix_archive.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <spdlog/spdlog.h>

namespace pdm::hsm {
namespace {

// pwrite all of data at off; short writes and EINTR retried.
Status PwriteAll(int fd, std::span<const uint8_t> data, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ArchiveIoError("pwrite", what, errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// pread exactly out.size() bytes at off; EOF before that → DataLoss.
Status PreadExact(int fd, std::span<uint8_t> out, uint64_t off, const std::string& what) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("pread", what, errno);
    }
    if (n == 0) return DataLoss(what + ": short object: " + std::to_string(done) + " of " +
                                std::to_string(out.size()) + " bytes at offset " + std::to_string(off));
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::atomic<uint64_t> g_tmp_counter{0};

}  // namespace

std::string ChunkName(const std::string& key, uint32_t index) {
  return "chunk " + std::to_string(index) + " of '" + key + "'";
}

namespace {

constexpr size_t kSlice = 1 << 20;

}  // namespace

Status PreadHashing(int fd, std::span<uint8_t> out, uint64_t off, const std::string& what, Hasher* h) {
  for (size_t done = 0; done < out.size();) {
    size_t len = std::min(kSlice, out.size() - done);
    PDM_RETURN_IF_ERROR(PreadExact(fd, out.subspan(done, len), off + done, what));
    h->Update(out.subspan(done, len));
    done += len;
  }
  return Status::Ok();
}

Result<Checksum128> PreadHashed(int fd, std::span<uint8_t> out, uint64_t off, const std::string& what) {
  Hasher h;
  PDM_RETURN_IF_ERROR(PreadHashing(fd, out, off, what, &h));
  return h.Digest();
}

Status HashedRangeWriter::Write(std::span<const uint8_t> data) {
  if (data.size() > length_ - done_) return InvalidArgument(what_ + ": more bytes than its length");
  // Hash each slice right before it is written, while it is in the cache.
  for (size_t k = 0; k < data.size();) {
    const size_t len = std::min(kSlice, data.size() - k);
    hash_.Update(data.subspan(k, len));
    PDM_RETURN_IF_ERROR(PwriteAll(fd_, data.subspan(k, len), base_ + done_, file_));
    done_ += len;
    k += len;
  }
  if (done_ - started_ >= kWritebackBytes) {
    (void)::sync_file_range(fd_, static_cast<off_t>(base_ + started_), static_cast<off_t>(done_ - started_),
                            SYNC_FILE_RANGE_WRITE);
    started_ = done_;
  }
  return Status::Ok();
}

Status HashedRangeWriter::CheckComplete() const {
  if (done_ == length_) return Status::Ok();
  return InvalidArgument(what_ + ": " + std::to_string(done_) + " of " + std::to_string(length_) + " bytes written");
}

// ---- fs helpers ----------------------------------------------------------------

std::string ParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status FsyncPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open", path, errno);
  if (::fsync(fd.get()) != 0) return ArchiveIoError("fsync", path, errno);
  return Status::Ok();
}

Status MakeDirs(const std::string& dir, std::vector<std::string>* new_parents) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::Ok();
    return FailedPrecondition(dir + ": exists and is not a directory", ENOTDIR);
  }
  if (errno != ENOENT) return PosixError("stat", dir, errno);
  std::string parent = ParentDir(dir);
  if (parent != dir) PDM_RETURN_IF_ERROR(MakeDirs(parent, new_parents));
  if (::mkdir(dir.c_str(), 0750) != 0) {
    if (errno == EEXIST) return Status::Ok();  // another writer made it first
    return ArchiveIoError("mkdir", dir, errno);
  }
  if (new_parents) new_parents->push_back(parent);
  return Status::Ok();
}

Status SyncSet::Sync(int root_fd, const std::string& root) {
  if (size() > kSyncfsThreshold) {
    // One journal commit for the whole batch instead of one per file.
    if (::syncfs(root_fd) != 0) return ArchiveIoError("syncfs", root, errno);
    Clear();
    return Status::Ok();
  }
  for (int fd : fds_)
    if (::fsync(fd) != 0) return ArchiveIoError("fsync", root + " (batch file)", errno);
  for (const UniqueFd& fd : owned_)
    if (::fsync(fd.get()) != 0) return ArchiveIoError("fsync", root + " (batch file)", errno);
  std::sort(paths_.begin(), paths_.end());
  paths_.erase(std::unique(paths_.begin(), paths_.end()), paths_.end());
  for (const auto& p : paths_) PDM_RETURN_IF_ERROR(FsyncPath(p));
  Clear();
  return Status::Ok();
}

// ---- ManifestStore ----------------------------------------------------------------

Result<ObjectManifest> ManifestStore::Read(const std::string& key) const {
  std::string path = PathOf(key);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound("archive object '" + key + "' not found");
    return PosixError("open", path, errno);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read", path, errno);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  auto m = DecodeManifest(text);
  if (!m.ok()) return DataLoss(path + ": " + m.status().message());
  if (m->key != key) return DataLoss(path + ": manifest names key '" + m->key + "'");
  Status valid = ValidateManifest(*m);
  if (!valid.ok()) return DataLoss(path + ": " + valid.message());
  return m;
}

Result<std::string> ManifestStore::Stage(const ObjectManifest& m, SyncSet* later) const {
  std::string final_path = PathOf(m.key);
  std::string tmp = final_path + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(g_tmp_counter.fetch_add(1));
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640));
  if (!fd.valid()) return ArchiveIoError("open", tmp, errno);
  std::string text = EncodeManifest(m);
  Status st = PwriteAll(fd.get(), {reinterpret_cast<const uint8_t*>(text.data()), text.size()}, 0, tmp);
  if (st.ok() && !later && ::fsync(fd.get()) != 0) st = ArchiveIoError("fsync", tmp, errno);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (later) later->AddFd(std::move(fd));
  return tmp;
}

Status ManifestStore::Publish(const std::string& staged, const ObjectManifest& m) const {
  std::string final_path = PathOf(m.key);
  // No-replace, so two coordinators (an old one that is not quite dead and
  // its successor) cannot overwrite each other's published object.
  if (::renameat2(AT_FDCWD, staged.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) == 0)
    return Status::Ok();
  int err = errno;
  if (err == EINVAL) {
    // File system without RENAME_NOREPLACE: link(2) also refuses to replace.
    if (::link(staged.c_str(), final_path.c_str()) == 0) {
      ::unlink(staged.c_str());
      return Status::Ok();
    }
    err = errno;
  }
  if (err != EEXIST) {
    ::unlink(staged.c_str());
    return ArchiveIoError("rename", final_path, err);
  }
  ::unlink(staged.c_str());
  auto existing = Read(m.key);
  if (existing.ok() && *existing == m) return Status::Ok();
  return AlreadyExists("archive object '" + m.key + "' is already committed with another manifest");
}

Status ManifestStore::Unpublish(const std::string& key) const {
  std::string path = PathOf(key);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return NotFound("archive object '" + key + "' not found");
    return PosixError("unlink", path, errno);
  }
  return FsyncPath(ParentDir(path));
}

Result<std::vector<std::string>> ManifestStore::List() const {
  namespace fs = std::filesystem;
  std::vector<std::string> keys;
  std::error_code ec;
  if (!fs::exists(root_, ec)) return keys;
  fs::recursive_directory_iterator it(root_, ec), end;
  if (ec) return PosixError("opendir", root_, ec.value());
  for (; it != end; it.increment(ec)) {
    if (ec) return PosixError("readdir", root_, ec.value());
    const std::string p = it->path().string();
    if (p.size() <= 5 || p.compare(p.size() - 5, 5, ".json") != 0) continue;
    if (!it->is_regular_file(ec)) continue;
    std::string key = p.substr(root_.size() + 1, p.size() - root_.size() - 1 - 5);
    if (ValidateKey(key).ok()) keys.push_back(std::move(key));
  }
  std::sort(keys.begin(), keys.end());
  return keys;
}

// ---- PosixArchive -----------------------------------------------------------------

Result<std::unique_ptr<Archive>> PosixArchive::Create(const std::string& dir_in, uint32_t archive_id) {
  std::error_code ec;
  std::string dir = std::filesystem::absolute(dir_in, ec).lexically_normal().string();
  if (ec || dir.empty()) return InvalidArgument("archive dir '" + dir_in + "'");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::vector<std::string> parents;
  PDM_RETURN_IF_ERROR(MakeDirs(dir + "/objects", &parents));
  for (const auto& p : parents) PDM_RETURN_IF_ERROR(FsyncPath(p));
  UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return PosixError("open", dir, errno);
  return std::unique_ptr<Archive>(new PosixArchive(dir, archive_id, std::move(root)));
}

PosixArchive::PosixArchive(std::string dir, uint32_t id, UniqueFd root_fd)
    : Archive(dir, id), root_fd_(std::move(root_fd)), store_(dir + "/objects") {}

PosixArchive::~PosixArchive() {
  std::lock_guard lk(mu_);
  Status st = FlushLocked();
  if (!st.ok()) spdlog::error("posix archive {}: flush at close: {}", dir(), st.ToString());
}

class PosixArchive::Sink final : public ChunkSink {
 public:
  Sink(PosixArchive* a, std::string key, uint32_t index, uint64_t offset, uint64_t length, std::string part,
       UniqueFd fd, std::vector<std::string> new_parents)
      : archive_(a),
        key_(std::move(key)),
        index_(index),
        offset_(offset),
        length_(length),
        part_(std::move(part)),
        fd_(std::move(fd)),
        new_parents_(std::move(new_parents)),
        out_(fd_.get(), offset_, length_, ChunkName(key_, index_), part_) {}

  Status Write(std::span<const uint8_t> data) override { return out_.Write(data); }

  Result<ChunkRef> Finish(Durability durability) override {
    PDM_RETURN_IF_ERROR(out_.CheckComplete());
    ChunkRef ref{index_, offset_, length_, archive_->DataRel(key_), out_.Digest()};
    if (durability == Durability::kNow) {
      if (::fsync(fd_.get()) != 0) return ArchiveIoError("fsync", part_, errno);
      // The .part's directory entry is made durable by Commit (it renames and
      // fsyncs the directory); new directories must be durable now, or a
      // crash could lose the fsynced file with them.
      for (const auto& p : new_parents_) PDM_RETURN_IF_ERROR(FsyncPath(p));
      return ref;
    }
    std::lock_guard lk(archive_->mu_);
    for (auto& p : new_parents_) archive_->pending_dirs_.push_back(std::move(p));
    archive_->pending_dirs_.push_back(ParentDir(part_));
    archive_->pending_files_.insert_or_assign(part_, std::move(fd_));
    if (archive_->pending_files_.size() >= kMaxPending) PDM_RETURN_IF_ERROR(archive_->FlushLocked());
    return ref;
  }

 private:
  PosixArchive* const archive_;
  const std::string key_;
  const uint32_t index_;
  const uint64_t offset_;
  const uint64_t length_;
  const std::string part_;
  UniqueFd fd_;
  std::vector<std::string> new_parents_;  // fsynced at Finish (kNow) or Flush
  HashedRangeWriter out_;                 // writes through fd_
};

Result<std::unique_ptr<ChunkSink>> PosixArchive::OpenChunk(const std::string& key, uint32_t index, uint64_t offset,
                                                           uint64_t length) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  if (length == 0) return InvalidArgument("OpenChunk('" + key + "'): empty chunk");
  if (offset > UINT64_MAX - length) return InvalidArgument("OpenChunk('" + key + "'): offset overflows");
  if (::access(store_.PathOf(key).c_str(), F_OK) == 0)
    return AlreadyExists("archive object '" + key + "' is already committed");

  std::string part = DataPath(key) + ".part";
  std::vector<std::string> new_parents;
  PDM_RETURN_IF_ERROR(MakeDirs(ParentDir(part), &new_parents));
  // No O_TRUNC: other workers are writing other chunks of this file.
  UniqueFd fd(::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
  if (!fd.valid()) return ArchiveIoError("open", part, errno);
  return std::unique_ptr<ChunkSink>(
      new Sink(this, key, index, offset, length, std::move(part), std::move(fd), std::move(new_parents)));
}

Result<ChunkRef> PosixArchive::PutChunk(const std::string& key, uint32_t index, uint64_t offset,
                                        std::span<const uint8_t> data, Durability durability) {
  if (data.empty()) return InvalidArgument("PutChunk('" + key + "'): empty chunk");
  PDM_ASSIGN_OR_RETURN(std::unique_ptr<ChunkSink> sink, OpenChunk(key, index, offset, data.size()));
  PDM_RETURN_IF_ERROR(sink->Write(data));
  return sink->Finish(durability);
}

Status PosixArchive::FlushLocked() {
  if (pending_files_.empty() && pending_dirs_.empty()) return Status::Ok();
  SyncSet set;
  for (auto& [path, fd] : pending_files_) set.AddFd(fd.get());
  for (const auto& d : pending_dirs_) set.AddPath(d);
  Status st = set.Sync(root_fd_.get(), dir());
  // Dropped either way: a write-back error is reported once, and the caller
  // must treat the whole batch as failed.
  pending_files_.clear();
  pending_dirs_.clear();
  return st;
}

Status PosixArchive::Flush() {
  std::lock_guard lk(mu_);
  return FlushLocked();
}

Status PosixArchive::Commit(std::span<const ObjectManifest> batch, size_t* committed) {
  size_t done = 0;
  if (committed) *committed = 0;
  PDM_RETURN_IF_ERROR(Flush());
  // Phase 1 (nothing visible yet): check every manifest, stage its JSON.
  struct Item {
    const ObjectManifest* m;
    std::string staged;
    bool already = false;
  };
  std::vector<Item> items;
  SyncSet staged_sync;
  auto drop_staged = [&] {
    for (auto& it : items)
      if (!it.staged.empty()) ::unlink(it.staged.c_str());
  };
  Status st;
  for (const auto& m : batch) {
    Status valid = ValidateManifest(m);
    if (!valid.ok()) {
      st = valid;
      break;
    }
    Item item{&m, {}, false};
    auto existing = store_.Read(m.key);
    if (existing.ok()) {
      if (!(*existing == m)) {
        st = AlreadyExists("archive object '" + m.key + "' is already committed with another manifest");
        break;
      }
      item.already = true;
      items.push_back(std::move(item));
      continue;
    }
    for (const auto& c : m.chunks)
      if (c.where != DataRel(m.key)) {
        st = InvalidArgument("manifest of '" + m.key + "': chunk " + std::to_string(c.index) +
                             " is not in this posix archive (" + c.where + ")");
        break;
      }
    if (!st.ok()) break;
    // The data must be there: in the .part, or already renamed by a commit
    // that crashed before publishing the manifest.
    std::string data = DataPath(m.key);
    struct stat sb;
    bool have = ::stat((data + ".part").c_str(), &sb) == 0 || ::stat(data.c_str(), &sb) == 0;
    if (m.size > 0 && (!have || uint64_t(sb.st_size) < m.size)) {
      st = FailedPrecondition("commit '" + m.key + "': object data missing or shorter than " +
                              std::to_string(m.size) + " bytes");
      break;
    }
    if (m.size == 0 && !have) {
      std::vector<std::string> parents;
      st = MakeDirs(ParentDir(data), &parents);
      if (!st.ok()) break;
      UniqueFd fd(::open((data + ".part").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640));
      if (!fd.valid()) {
        st = ArchiveIoError("open", data + ".part", errno);
        break;
      }
      for (const auto& p : parents) {
        st = FsyncPath(p);
        if (!st.ok()) break;
      }
      if (!st.ok()) break;
    }
    auto staged = store_.Stage(m, &staged_sync);
    if (!staged.ok()) {
      st = staged.status();
      break;
    }
    item.staged = std::move(*staged);
    items.push_back(std::move(item));
  }
  // Every staged manifest durable before any is published.
  if (st.ok()) st = staged_sync.Sync(root_fd_.get(), dir());
  if (!st.ok()) {
    // Nothing of this batch is published yet (*committed = 0); the caller
    // fixes or drops the bad object and commits the rest again.
    drop_staged();
    return st;
  }
  // Phase 2: data files to their final names, then their directories durable.
  SyncSet dirs;
  for (auto& it : items) {
    if (it.already) continue;
    std::string data = DataPath(it.m->key);
    if (::rename((data + ".part").c_str(), data.c_str()) != 0 && errno != ENOENT) {
      st = ArchiveIoError("rename", data, errno);
      break;
    }
    dirs.AddPath(ParentDir(data));
  }
  if (st.ok()) st = dirs.Sync(root_fd_.get(), dir());
  if (!st.ok()) {
    drop_staged();
    return st;
  }
  // Phase 3: the manifests, the publication points, in batch order.
  for (auto& it : items) {
    if (!it.already) {
      st = store_.Publish(it.staged, *it.m);
      it.staged.clear();
      if (!st.ok()) break;
      dirs.AddPath(ParentDir(store_.PathOf(it.m->key)));
    }
    ++done;
  }
  Status synced = dirs.Sync(root_fd_.get(), dir());
  if (st.ok() && !synced.ok()) {
    // Renamed but maybe not durable: report failure for the whole batch, as
    // a crash could still undo any of them.
    done = 0;
    st = synced;
  }
  drop_staged();
  if (committed) *committed = done;
  return st;
}

Result<ObjectManifest> PosixArchive::Stat(const std::string& key) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  return store_.Read(key);
}

Result<Archive::ChunkFile> PosixArchive::LocateChunk(const ObjectManifest& m, uint32_t index) {
  PDM_RETURN_IF_ERROR(ValidateKey(m.key));
  const ChunkRef& c = m.chunks[index];
  // Only the object's own data file: a manifest cannot point us elsewhere.
  if (c.where != DataRel(m.key)) return DataLoss("manifest of '" + m.key + "': bad chunk location " + c.where);
  std::string path = DataPath(m.key);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return DataLoss("archive object '" + m.key + "': data file missing");
    return PosixError("open", path, errno);
  }
  return ChunkFile{std::move(fd), c.offset, std::move(path)};
}

Status PosixArchive::Remove(const std::string& key) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  Status st = store_.Unpublish(key);
  if (st.code() == Code::kNotFound) {
    PDM_RETURN_IF_ERROR(AbortObject(key, {}));
    return st;
  }
  PDM_RETURN_IF_ERROR(st);
  std::string data = DataPath(key);
  if (::unlink(data.c_str()) != 0 && errno != ENOENT) return PosixError("unlink", data, errno);
  ::unlink((data + ".part").c_str());
  return Status::Ok();
}

Status PosixArchive::AbortObject(const std::string& key, std::span<const ChunkRef> /*known*/) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  if (::access(store_.PathOf(key).c_str(), F_OK) == 0)
    return FailedPrecondition("AbortObject('" + key + "'): the object is committed");
  std::string data = DataPath(key);
  {
    std::lock_guard lk(mu_);
    pending_files_.erase(data + ".part");
  }
  for (const std::string& p : {data + ".part", data})
    if (::unlink(p.c_str()) != 0 && errno != ENOENT && errno != ENOTDIR) return PosixError("unlink", p, errno);
  return Status::Ok();
}

Result<std::vector<std::string>> PosixArchive::ListKeys() { return store_.List(); }

}  // namespace pdm::hsm
