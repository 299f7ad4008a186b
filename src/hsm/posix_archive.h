// The "posix:DIR" archive back end: one object per file version, readable
// with plain tools.
//
// Layout (docs/hsm-archive.md):
//   DIR/objects/<key>.data.part   chunks being written (pwrite at their
//                                 offsets, several writers into one file)
//   DIR/objects/<key>.data        the object's bytes, once committed
//   DIR/objects/<key>.json        the manifest (sizes, chunk checksums); its
//                                 presence is what makes the object exist
//   DIR/objects/<key>.json.tmp.*  a manifest being written
// `cat DIR/objects/<key>.data` is the file; `xxhsum -H2` of a chunk's byte
// range equals the manifest's chunk checksum.
//
// Commit order, per object: manifest to a temp name + fsync; rename .part →
// .data; fsync the directory; rename the manifest into place (no-replace);
// fsync the directory. A crash anywhere before the last rename leaves no
// manifest, so no object.
//
// Batches of more than kSyncfsThreshold files are made durable with one
// syncfs(2) on the archive instead of one fsync per file (the 10,000 small
// files case); syncfs reports write-back errors since Linux 5.8.
//
// ManifestStore and the fs helpers below are shared with the HDF5 back end,
// whose manifests are the same JSON files.
//
// Thread-safety: PosixArchive is thread-safe (pending-sync state under mu_).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/posix.h"
#include "hsm/archive.h"

namespace pdm::hsm {

inline constexpr size_t kSyncfsThreshold = 16;

// Makes a set of files and directories durable: fsync each, or one syncfs on
// the file system of root_fd when there are more than kSyncfsThreshold.
class SyncSet {
 public:
  void AddFd(int fd) { fds_.push_back(fd); }
  void AddFd(UniqueFd fd) { owned_.push_back(std::move(fd)); }  // closed by Sync or Clear
  void AddPath(const std::string& path) { paths_.push_back(path); }
  size_t size() const { return fds_.size() + owned_.size() + paths_.size(); }
  Status Sync(int root_fd, const std::string& root);
  void Clear() { fds_.clear(), owned_.clear(), paths_.clear(); }

 private:
  std::vector<int> fds_;  // not owned
  std::vector<UniqueFd> owned_;
  std::vector<std::string> paths_;
};

// mkdir -p of dir (absolute, below root). Appends the parents of directories
// it created to *new_parents (what must be fsynced for them to persist).
Status MakeDirs(const std::string& dir, std::vector<std::string>* new_parents);
// Opens path read-only (directories too) and fsyncs it.
Status FsyncPath(const std::string& path);
// "a/b/c.json" → "a/b".
std::string ParentDir(const std::string& path);

// Reads a chunk in 1 MiB slices, each hashed right after it is read, while
// it is still in the CPU cache: one pass over memory instead of two, which is
// what keeps verified reads near pread speed (writes hash the same way, in
// the chunk sink). Exactly out.size() bytes at off; EOF first → DataLoss.
Result<Checksum128> PreadHashed(int fd, std::span<uint8_t> out, uint64_t off, const std::string& what);
// The same, feeding *h (a chunk read in several calls).
Status PreadHashing(int fd, std::span<uint8_t> out, uint64_t off, const std::string& what, Hasher* h);

// "chunk <index> of '<key>'", for messages.
std::string ChunkName(const std::string& key, uint32_t index);

// The write half of both back ends' chunk sinks: writes the `length` bytes
// of fd from `base` in order, hashing each 1 MiB slice right before it is
// written, and starts the write-back every 8 MiB (sync_file_range: a hint;
// fsync reports errors). More than `length` bytes → InvalidArgument;
// ENOSPC/EDQUOT → ResourceExhausted. Does not own fd. `what` names the
// chunk in errors and the file in I/O errors.
class HashedRangeWriter {
 public:
  HashedRangeWriter(int fd, uint64_t base, uint64_t length, std::string what, std::string file)
      : fd_(fd), base_(base), length_(length), what_(std::move(what)), file_(std::move(file)) {}
  Status Write(std::span<const uint8_t> data);
  // OK once exactly `length` bytes were written, else InvalidArgument.
  Status CheckComplete() const;
  Checksum128 Digest() const { return hash_.Digest(); }

 private:
  static constexpr uint64_t kWritebackBytes = 8ull << 20;
  const int fd_;
  const uint64_t base_;
  const uint64_t length_;
  const std::string what_;
  const std::string file_;
  Hasher hash_;
  uint64_t done_ = 0;     // bytes written
  uint64_t started_ = 0;  // bytes whose write-back was started
};

// Manifests as JSON files: <root>/<key>.json.
class ManifestStore {
 public:
  explicit ManifestStore(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }
  std::string PathOf(const std::string& key) const { return root_ + "/" + key + ".json"; }

  // NotFound(ENOENT) when absent; DataLoss(EIO) when it does not decode,
  // fails ValidateManifest, or names another key.
  Result<ObjectManifest> Read(const std::string& key) const;
  // Writes m to a unique temp name next to its final name and fsyncs it, or
  // with `later` hands its fd to that set (one sync for a batch; the caller
  // syncs it before any Publish); returns the temp path. ENOSPC →
  // ResourceExhausted, temp removed.
  Result<std::string> Stage(const ObjectManifest& m, SyncSet* later = nullptr) const;
  // Renames the staged temp into place without replacing an existing
  // manifest: an identical one already there is OK (temp removed), another →
  // AlreadyExists. The caller fsyncs the directory.
  Status Publish(const std::string& staged, const ObjectManifest& m) const;
  // Unlinks the manifest and fsyncs its directory. Absent → NotFound.
  Status Unpublish(const std::string& key) const;
  // Every committed key, sorted.
  Result<std::vector<std::string>> List() const;

 private:
  std::string root_;
};

class PosixArchive final : public Archive {
 public:
  static Result<std::unique_ptr<Archive>> Create(const std::string& dir, uint32_t archive_id);
  ~PosixArchive() override;

  std::string_view kind() const override { return "posix"; }
  Result<ChunkRef> PutChunk(const std::string& key, uint32_t index, uint64_t offset,
                            std::span<const uint8_t> data, Durability durability) override;
  // Writes through to the .part file (HashedRangeWriter), so the fsync at
  // Finish has little left to do.
  Result<std::unique_ptr<ChunkSink>> OpenChunk(const std::string& key, uint32_t index, uint64_t offset,
                                               uint64_t length) override;
  Status Flush() override;
  Status Commit(std::span<const ObjectManifest> batch, size_t* committed) override;
  using Archive::Commit;
  Result<ObjectManifest> Stat(const std::string& key) override;
  Status Remove(const std::string& key) override;
  Status AbortObject(const std::string& key, std::span<const ChunkRef> known) override;
  Result<std::vector<std::string>> ListKeys() override;

 private:
  Result<ChunkFile> LocateChunk(const ObjectManifest& m, uint32_t index) override;
  class Sink;

  PosixArchive(std::string dir, uint32_t id, UniqueFd root_fd);
  std::string DataRel(const std::string& key) const { return "objects/" + key + ".data"; }
  std::string DataPath(const std::string& key) const { return dir() + "/" + DataRel(key); }
  Status CommitOne(const ObjectManifest& m);

  UniqueFd root_fd_;  // for syncfs
  ManifestStore store_;

  // Writes with Durability::kAtFlush not yet durable: open .part files by
  // path (one fd per object) and new directories' parents. Bounded: at
  // kMaxPending files PutChunk flushes first.
  static constexpr size_t kMaxPending = 256;
  std::mutex mu_;
  std::map<std::string, UniqueFd> pending_files_;  // GUARDED_BY(mu_)
  std::vector<std::string> pending_dirs_;          // GUARDED_BY(mu_)
  Status FlushLocked();
};

}  // namespace pdm::hsm
