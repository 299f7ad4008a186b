// Archive: the HSM's second tier, one interface over two back ends
// ("posix:DIR", "hdf5:DIR"; layouts in docs/hsm-archive.md).
//
// The interface is CHUNK-BASED because data moves in chunks: the coordinator
// splits a file into chunks of ObjectManifest::chunk_size bytes (64 MiB by
// default) and worker threads in different processes on different nodes,
// all sharing the archive directory, put and read chunks of one object at the
// same time. There are no MPI collectives anywhere here: any pdmd rank can
// die at any time, and the survivors must carry on.
//
// Life of an object (a file version under a stable key, MakeObjectKey):
//   1. workers, anywhere: PutChunk(key, i, i * chunk_size, bytes) → ChunkRef
//      (with the chunk's checksum), then Flush() at the end of their batch;
//   2. the coordinator: BuildManifest(key, size, chunk_size, refs) and
//      Commit(manifest). Commit is the one publication point: before it
//      returns OK the object does not exist (Stat → NotFound), after it the
//      object is complete and durable. A crash at any point before leaves at
//      most invisible garbage, which AbortObject drops;
//   3. recall, anywhere: Stat(key) → manifest; ReadChunk(m, i, buf) per chunk,
//      which verifies the chunk checksum and never returns wrong bytes;
//   4. Remove(key) when the copy is no longer wanted.
//
// Durability: a chunk put with Durability::kNow (the default) is durable when
// PutChunk returns. Batches of small files use kAtFlush, and their chunks are
// durable once Flush() (or a Commit in the same process) returns: one fsync
// for the batch instead of one per file. A worker hands ChunkRefs to anyone
// else only after they are durable.
//
// Errors keep the errno. A full archive (ENOSPC or EDQUOT from a write, fsync
// or rename) is ResourceExhausted with that errno, and nothing is published
// by the failing call. Damaged data or manifests are DataLoss(EIO); a missing
// object is NotFound(ENOENT); a bad key or manifest is InvalidArgument.
//
// Thread-safety: an Archive is thread-safe; use one per process. Several
// processes (on several nodes) may open the same directory at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/posix.h"
#include "common/status.h"
#include "hsm/checksum.h"

namespace pdm::hsm {

inline constexpr uint64_t kDefaultChunkSize = 64ull << 20;
inline constexpr size_t kMaxKeySize = 512;

// ---- keys ---------------------------------------------------------------------

// The stable key of version ver of the file (fsid, ino, igen):
// "<fsid as 16 hex>/<ino>.<igen>/v<ver>". Keys are also paths inside the
// archive (docs/hsm-archive.md), so one file's versions share a directory.
std::string MakeObjectKey(uint64_t fsid, uint64_t ino, uint32_t igen, uint64_t ver);
// A valid key: 1..kMaxKeySize bytes of [A-Za-z0-9._-] in '/'-separated
// components, none empty, "." or "..", none ending in ".part", ".data",
// ".json" or ".tmp" (names the back ends use). Otherwise InvalidArgument.
Status ValidateKey(std::string_view key);

// ---- chunks and manifests ---------------------------------------------------------

// One chunk of an object as stored. Chunk i covers the object's bytes
// [i * chunk_size, min(size, (i + 1) * chunk_size)).
struct ChunkRef {
  uint32_t index = 0;
  uint64_t offset = 0;  // in the object, = index * chunk_size
  uint64_t length = 0;
  // Where the back end stored it, relative to the archive directory
  // (posix: "objects/<key>.data"; hdf5: "<container>#<dataset>@<file offset>").
  std::string where;
  Checksum128 sum;  // XXH3-128 of the chunk's bytes
  friend bool operator==(const ChunkRef&, const ChunkRef&) = default;
};

struct ObjectManifest {
  std::string key;
  uint64_t size = 0;        // object (file) size in bytes
  uint64_t chunk_size = 0;  // > 0
  std::vector<ChunkRef> chunks;  // sorted by index, exactly ChunkCount(size, chunk_size)
  Checksum128 sum;               // ObjectChecksum over chunks[i].sum
  // Free text kept with the object for the admin (e.g. the file's path and
  // handle at archive time); not interpreted. At most 4096 bytes of
  // printable ASCII (BuildManifest replaces other bytes with '?').
  std::string origin;
  friend bool operator==(const ObjectManifest&, const ObjectManifest&) = default;
};

// Number of chunks of an object of size bytes (0 for an empty object).
uint32_t ChunkCount(uint64_t size, uint64_t chunk_size);

// Sorts chunks by index, checks that they tile [0, size) exactly (no gap,
// overlap or duplicate; offsets and lengths as above), computes sum, and
// returns the manifest. Anything missing or extra → InvalidArgument naming
// the first bad chunk.
Result<ObjectManifest> BuildManifest(std::string key, uint64_t size, uint64_t chunk_size,
                                     std::vector<ChunkRef> chunks, std::string origin = {});
// The checks of BuildManifest plus sum == ObjectChecksum(chunks). Returns
// InvalidArgument; Stat reports the same failure on a stored manifest as
// DataLoss.
Status ValidateManifest(const ObjectManifest& m);

// JSON forms (what the manifests files hold; also handy for the wire and the
// journal). Decode failures → DataLoss(EIO).
nlohmann::json ToJson(const ChunkRef& c);
Result<ChunkRef> ChunkRefFromJson(const nlohmann::json& j);
std::string EncodeManifest(const ObjectManifest& m);
Result<ObjectManifest> DecodeManifest(std::string_view text);

// ---- the archive ------------------------------------------------------------------

enum class Durability {
  kNow,      // durable when the call returns (fsync per call)
  kAtFlush,  // durable once Flush() or a Commit in this process returns
};

struct ArchiveOptions {
  // Names this process's writes (HDF5 container names). Empty = a default of
  // "<hostname>-<pid>-<random>", unique across nodes and restarts. Only
  // [A-Za-z0-9._-].
  std::string writer;
  // HDF5: the open container is sealed and a new one started once it holds
  // this many bytes of chunk data. Default 1 GiB.
  uint64_t container_max_bytes = 1ull << 30;
};

// One chunk streamed into the archive as its bytes arrive: a worker reads
// the file in slices and hands each on, so no process holds a whole chunk in
// memory and the archive's write-back runs while the rest is still being
// read (reading everything, then writing everything, costs the sum of the
// two; streaming costs about the larger).
//
// Write the chunk's bytes in order, exactly the length given to OpenChunk,
// then Finish. A sink dropped without Finish leaves invisible garbage, like
// a crash (AbortObject drops it). A sink belongs to one thread.
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  // Appends the chunk's next bytes. More than the chunk's length →
  // InvalidArgument; a full archive → ResourceExhausted.
  virtual Status Write(std::span<const uint8_t> data) = 0;
  // After exactly the chunk's length (else InvalidArgument): makes the
  // chunk durable per `durability` (as PutChunk does) and returns where it
  // went with the checksum of the bytes written.
  virtual Result<ChunkRef> Finish(Durability durability) = 0;
};

class Archive {
 public:
  // spec: "posix:DIR" or "hdf5:DIR". DIR is created if missing (with its
  // parents). archive_id is the number the HSM records in file states (> 0).
  // Unknown scheme or empty DIR → InvalidArgument.
  static Result<std::unique_ptr<Archive>> Open(std::string_view spec, uint32_t archive_id,
                                               const ArchiveOptions& opts = {});

  virtual ~Archive() = default;
  Archive(const Archive&) = delete;
  Archive& operator=(const Archive&) = delete;

  uint32_t id() const { return id_; }
  // "posix" or "hdf5".
  virtual std::string_view kind() const = 0;
  // The archive directory (absolute).
  const std::string& dir() const { return dir_; }

  // Stores chunk `index` (object bytes [offset, offset + data.size())) of the
  // uncommitted object key and returns where it went with its checksum.
  // Empty data → InvalidArgument (an empty object has no chunks; commit its
  // manifest directly). Putting the same chunk again (a reassigned task)
  // overwrites or supersedes it; the manifest decides which copy counts.
  // Putting into a key that is already committed → AlreadyExists.
  virtual Result<ChunkRef> PutChunk(const std::string& key, uint32_t index, uint64_t offset,
                                    std::span<const uint8_t> data,
                                    Durability durability = Durability::kNow) = 0;

  // The streaming form of PutChunk: chunk `index` of key, object bytes
  // [offset, offset + length), arriving through the sink (length > 0). Same
  // errors as PutChunk, some at OpenChunk and some at Write or Finish. The
  // default buffers the chunk and calls PutChunk at Finish; the POSIX back
  // end writes through.
  virtual Result<std::unique_ptr<ChunkSink>> OpenChunk(const std::string& key, uint32_t index, uint64_t offset,
                                                       uint64_t length);

  // Ends this process's current batch: every chunk it put so far is durable,
  // and the HDF5 back end closes (seals) its open container, which h5ls /
  // h5dump can then read; the next PutChunk starts a new container. Cheap
  // when nothing is pending.
  virtual Status Flush() = 0;

  // Publishes each object of batch atomically, in order: data renamed or
  // checked in place, manifest written to a temporary name, fsynced, renamed,
  // directory fsynced. Validates each manifest first (InvalidArgument) and
  // checks that its chunks are stored where the refs say (FailedPrecondition
  // otherwise). An object already committed with an identical manifest is
  // left as is (OK: a new coordinator finishing a move); with a different one
  // → AlreadyExists. On failure, batch[0 .. *committed) are published and the
  // rest are not; *committed (if given) is set in every case.
  virtual Status Commit(std::span<const ObjectManifest> batch, size_t* committed = nullptr) = 0;
  Status Commit(const ObjectManifest& m) { return Commit(std::span<const ObjectManifest>(&m, 1)); }

  // The committed object's manifest. Not committed → NotFound(ENOENT);
  // unreadable or inconsistent manifest → DataLoss(EIO).
  virtual Result<ObjectManifest> Stat(const std::string& key) = 0;

  // Reads chunk `index` of m into out (out.size() must equal the chunk's
  // length, else InvalidArgument) and verifies its checksum. Missing, short
  // or mismatching data → DataLoss(EIO): never wrong bytes. Does not take the
  // HDF5 library lock (plain pread), so recalls run in parallel.
  Status ReadChunk(const ObjectManifest& m, uint32_t index, std::span<uint8_t> out);

  // Reads chunk `index` of m through buf (any size > 0), one slice at a
  // time, and hands each to fn(offset in the object, bytes) as it arrives,
  // so a recall writes the file while the archive is still being read. The
  // checksum is verified at the end: when StreamChunk fails (ReadChunk's
  // errors, or fn's), every byte fn was given must be treated as garbage —
  // the recall punches it out again. An error from fn stops the read.
  using SliceFn = std::function<Status(uint64_t offset, std::span<const uint8_t> bytes)>;
  Status StreamChunk(const ObjectManifest& m, uint32_t index, std::span<uint8_t> buf, const SliceFn& fn);

  // Reads every chunk of m and verifies it (ReadChunk's errors). Buffer of one
  // chunk at a time.
  Status VerifyObject(const ObjectManifest& m);

  // Unpublishes the committed object (its manifest goes first, atomically)
  // and frees its data (HDF5: its datasets; a container is deleted with its
  // last object; data in a container that a writer still has open stays until
  // AbortObject/Remove runs again after the seal). Not committed →
  // NotFound(ENOENT), after dropping any uncommitted chunks like AbortObject.
  virtual Status Remove(const std::string& key) = 0;

  // Drops the uncommitted chunks of key: those this process put, plus those
  // named in known (e.g. ChunkRefs recorded in the journal by a dead
  // coordinator's workers). A committed object is left alone
  // (FailedPrecondition). Nothing to drop is OK.
  virtual Status AbortObject(const std::string& key, std::span<const ChunkRef> known = {}) = 0;

  // Keys of all committed objects, sorted.
  virtual Result<std::vector<std::string>> ListKeys() = 0;

  // Bytes available to us in the archive's file system (statvfs f_bavail).
  Result<uint64_t> FreeBytes();

 protected:
  Archive(std::string dir, uint32_t id) : dir_(std::move(dir)), id_(id) {}

  // Where chunk `index` of m is stored: an open file and the byte offset of
  // the chunk in it. Both back ends keep a chunk as one contiguous byte range
  // of a plain file, which is why reads need no HDF5 call. Checks that m may
  // point there (DataLoss otherwise); a missing file → DataLoss.
  struct ChunkFile {
    UniqueFd fd;
    uint64_t offset = 0;
    std::string path;
  };
  virtual Result<ChunkFile> LocateChunk(const ObjectManifest& m, uint32_t index) = 0;

 private:
  std::string dir_;
  uint32_t id_;
};

// The Status for a failed POSIX call on the archive: ENOSPC and EDQUOT become
// ResourceExhausted ("archive full") with the errno kept; others as
// PosixError.
Status ArchiveIoError(std::string_view call, std::string_view what, int err);

}  // namespace pdm::hsm
