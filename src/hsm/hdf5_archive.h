// The "hdf5:DIR" archive back end: HDF5 containers that aggregate many small
// files (and the chunks of big ones), built on the parallel HDF5 library.
//
// Layout (docs/hsm-archive.md):
//   DIR/containers/<writer>-<seq>.h5   one container per writer batch: this
//       process writes into its own open container until Flush() (the batch
//       boundary) or container_max_bytes seals it; the next write starts
//       <seq + 1>. Inside: one dataset per chunk,
//       /objects/<key>/c<index>   1-D uint8, contiguous, with attributes
//           xxh3_128 (the chunk checksum, 32 hex chars), offset (u64, the
//           chunk's offset in the object), key (string).
//       A small file is one object of one chunk, so it is one dataset. All of
//       it is readable with `h5ls -r` and `h5dump -d /objects/<key>/c0`.
//   DIR/manifests/<key>.json            the manifest, a POSIX JSON file exactly
//       as in the posix back end; publishing it (temp, fsync, no-replace
//       rename, directory fsync) is the atomic Commit. A chunk's `where` is
//       "containers/<file>.h5#/objects/<key>/c<i>@<byte offset of the raw
//       data in the file>".
//
// Why manifests outside the containers: Commit runs in the coordinator while
// the chunks sit in containers that other processes on other nodes may still
// have open for writing, and HDF5 files cannot be opened by two writers. A
// JSON rename needs no HDF5 at all and is atomic.
//
// Why reads bypass HDF5: datasets are contiguous and allocated early, so their
// raw bytes sit at a fixed file offset (H5Dget_offset) that never moves.
// ReadChunk preads them and checks the checksum: no HDF5 lock, recalls run in
// parallel, and an open container can be read safely. The checksum, not the
// offset, is what guarantees the bytes.
//
// HDF5 is not thread-safe (the Debian build is not --enable-threadsafe): every
// HDF5 call in the process, here or elsewhere in pdm, runs under the one
// mutex Hdf5LibraryMutex(). Containers are opened with the default sec2 file
// driver (no MPI communicator, so no collective calls a dead rank could
// block) and with HDF5's own file locking off; instead an open container is
// flock(LOCK_EX)'ed by its writer, and a process that wants to delete
// datasets in a container (Remove, AbortObject) takes LOCK_EX|LOCK_NB and
// skips containers still being written.
//
// Thread-safety: Hdf5Archive is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/posix.h"
#include "hsm/archive.h"
#include "hsm/posix_archive.h"

namespace pdm::hsm {

// The process-wide lock around every HDF5 library call.
std::mutex& Hdf5LibraryMutex();

// A chunk location "containers/x.h5#/objects/k/c0@4096", parsed.
struct Hdf5Location {
  std::string container;  // relative to the archive dir: "containers/x.h5"
  std::string dataset;    // "/objects/<key>/c<i>"
  uint64_t file_offset = 0;
};
Result<Hdf5Location> ParseHdf5Location(std::string_view where);

class Hdf5Archive final : public Archive {
 public:
  static Result<std::unique_ptr<Archive>> Create(const std::string& dir, uint32_t archive_id,
                                                 const ArchiveOptions& opts);
  ~Hdf5Archive() override;  // seals the open container

  std::string_view kind() const override { return "hdf5"; }
  Result<ChunkRef> PutChunk(const std::string& key, uint32_t index, uint64_t offset,
                            std::span<const uint8_t> data, Durability durability) override;
  // Chunks of kStreamBytes or more stream: the dataset is created (and
  // allocated) first, under the library lock; the raw bytes then go to its
  // file offset with plain pwrite, outside the lock, so several threads
  // write one container at once; Finish adds the checksum attribute. Smaller
  // chunks are buffered and put whole (one lock, one H5Dwrite).
  Result<std::unique_ptr<ChunkSink>> OpenChunk(const std::string& key, uint32_t index, uint64_t offset,
                                               uint64_t length) override;
  Status Flush() override;
  Status Commit(std::span<const ObjectManifest> batch, size_t* committed) override;
  using Archive::Commit;
  Result<ObjectManifest> Stat(const std::string& key) override;
  Status Remove(const std::string& key) override;
  Status AbortObject(const std::string& key, std::span<const ChunkRef> known) override;
  Result<std::vector<std::string>> ListKeys() override;

  // The container this process is writing ("" if none), relative to dir().
  std::string OpenContainer();

 private:
  Result<ChunkFile> LocateChunk(const ObjectManifest& m, uint32_t index) override;
  struct Container;  // one open container (HDF5 ids + our fd + lock)
  Hdf5Archive(std::string dir, uint32_t id, ArchiveOptions opts, UniqueFd root_fd);

  class Sink;
  static constexpr uint64_t kStreamBytes = 1ull << 20;

  // All under Hdf5LibraryMutex() (lk holds it; waits release it).
  // The open container for a chunk of `bytes`: waits out a seal in
  // progress, seals a full or broken one, opens a new one.
  Status ContainerForLocked(std::unique_lock<std::mutex>& lk, uint64_t bytes);
  Status OpenNewContainerLocked();
  // Waits for the open container's sinks, then closes and fsyncs it.
  Status SealLocked(std::unique_lock<std::mutex>& lk);
  Status SyncOpenLocked();
  // A sink still writing ds_path of c: its chunk is being unlinked or
  // replaced, so its Finish must fail.
  static void DropStreamingLocked(Container& c, const std::string& ds_path);
  // This thread put a kAtFlush chunk into container seq (see Flush).
  void NoteUnflushed(uint64_t seq) const;
  Status DropDatasets(const std::string& key, const std::vector<Hdf5Location>& locs);

  const ArchiveOptions opts_;
  UniqueFd root_fd_;
  ManifestStore store_;
  // GUARDED_BY(Hdf5LibraryMutex())
  std::unique_ptr<Container> open_;
  uint64_t next_seq_ = 0;
  std::condition_variable cv_;  // open_->writers and open_->sealing changed
  // Containers whose seal failed while they held kAtFlush chunks, by seq:
  // every thread that put into one gets the error from its next Flush.
  std::map<uint64_t, Status> failed_seals_;
};

}  // namespace pdm::hsm
