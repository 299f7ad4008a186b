// Journal: the HSM coordinator's durable record of in-flight moves, so that a
// new coordinator (the HSM session assumed on another node after a crash)
// finishes or rolls back every move (blueprint section 5: no file is ever
// released without a verified, durable archive copy).
//
// One append-only file per coordinator, <dir>/<name>.journal, in the state
// directory that all nodes share; <dir>/<name>.lock is flock'ed exclusively by
// the process that has the journal open, so two live coordinators never append
// to one journal (a dead one's lock goes with its process). name is the
// coordinator's stable identity, e.g. "hsm-<session id hex>", which survives
// dm_create_session(oldsid) on another node.
//
// Records: [u32 magic "PDMJ"][u32 payload length][u64 XXH3-64 of payload]
// [payload: compact JSON], little-endian; format in docs/hsm-archive.md. Each
// call that appends returns once its record is durable (fdatasync; threads
// appending at the same time share one fdatasync: group commit). On Open, a
// torn tail (a last record cut short, or zero fill from a crash mid-append) is
// truncated away; damage followed by more data is DataLoss(EIO), because
// dropping a record in the middle could forget a move. When the file grows
// past JournalOptions::compact_bytes it is rewritten with only the in-flight
// moves (temp file, fsync, rename, directory fsync).
//
// Thread-safety: a Journal is thread-safe (workers' completions are recorded
// from many threads).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/posix.h"
#include "common/status.h"
#include "hsm/archive.h"
#include "hsm/checksum.h"

namespace pdm::hsm {

enum class MoveOp : uint8_t {
  kArchive = 1,  // copy out, file stays resident
  kRelease = 2,  // punch the hole of an archived file
  kMigrate = 3,  // archive + release
  kRecall = 4,   // copy in
  kRemove = 5,   // drop the archive copy
};
std::string_view MoveOpName(MoveOp op);

// An in-flight move as the journal knows it.
struct Move {
  uint64_t id = 0;  // unique within the journal, increasing, never reused
  MoveOp op = MoveOp::kArchive;
  std::vector<uint8_t> handle;  // DM handle bytes of the file
  std::string key;              // archive object key
  uint64_t version = 0;         // data version being moved
  std::vector<ChunkRef> chunks;  // chunk-done records, sorted by index (last one per index wins)
  bool archived = false;  // the object is committed, with checksum sum
  Checksum128 sum;
  bool released = false;  // the hole is punched (migrate/release)
  int64_t begin_ns = 0;   // CLOCK_REALTIME at begin, for the admin
  friend bool operator==(const Move&, const Move&) = default;
};

// How long a call that appends waits for its record.
enum class JournalWait {
  kDurable,  // until it is durable (fdatasync, shared by concurrent callers)
  kWritten,  // until it is written: any later durable record, or the next
             // fdatasync, carries it too (a fdatasync covers every byte
             // written before it). For records that recovery can do without:
             // losing one in a crash means every later record is lost too,
             // and recovery reaches the same end from the earlier ones.
};

struct JournalOptions {
  // Compact once the file is larger than this. Default 4 MiB.
  uint64_t compact_bytes = 4ull << 20;
  // fdatasync every record (group commit). Turning it off is for tests and
  // benchmarks only: a crash may then lose recent records.
  bool sync = true;
};

class Journal {
 public:
  // Opens or creates <dir>/<name>.journal (dir must exist), takes the lock
  // (held by a live process → Unavailable(EWOULDBLOCK)), replays it,
  // truncates a torn tail, and compacts if large. name: [A-Za-z0-9._-]+.
  static Result<std::unique_ptr<Journal>> Open(const std::string& dir, std::string_view name,
                                               const JournalOptions& opts = {});
  // Reads a journal without locking or repairing it (tools, tests): the
  // in-flight moves, sorted by id. A torn tail is ignored; other damage →
  // DataLoss(EIO).
  static Result<std::vector<Move>> Replay(const std::string& path);
  // Names of the journals in dir (without ".journal"), sorted.
  static Result<std::vector<std::string>> List(const std::string& dir);

  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Moves begun and not yet ended or aborted, sorted by id. Right after Open
  // these are what a crashed predecessor left to finish or roll back.
  std::vector<Move> InFlight() const;
  // The in-flight move id. NotFound if it ended (or never began).
  Result<Move> Get(uint64_t id) const;

  // Each call below appends one record and returns once it is durable (or,
  // with JournalWait::kWritten, once it is written). An id that is not in
  // flight → NotFound(ENOENT), nothing appended.
  Result<uint64_t> Begin(MoveOp op, std::span<const uint8_t> handle, std::string_view key,
                         uint64_t version);
  Status ChunkDone(uint64_t id, const ChunkRef& chunk);
  // The object is committed in the archive with object checksum sum.
  Status Archived(uint64_t id, const Checksum128& sum);
  Status Released(uint64_t id, JournalWait wait = JournalWait::kDurable);
  // The move finished (End) or was rolled back (Abort); it leaves InFlight.
  Status End(uint64_t id, JournalWait wait = JournalWait::kDurable);
  Status Abort(uint64_t id, std::string_view reason, JournalWait wait = JournalWait::kDurable);

  // Rewrites the file with only the in-flight moves. Runs by itself past
  // compact_bytes; callable any time.
  Status Compact();

  // Current file size in bytes.
  uint64_t SizeBytes() const;
  const std::string& path() const { return path_; }

 private:
  Journal(std::string dir, std::string name, JournalOptions opts);
  // Writes one record at the end (undone on a failed write); then apply()
  // updates the in-memory moves; then waits until the record is durable.
  // Writes go on while another thread is in fdatasync: that is what lets
  // one fdatasync cover several threads' records.
  template <typename Apply>
  Status AppendLocked(std::unique_lock<std::mutex>& lk, const std::string& payload, Apply apply,
                      JournalWait wait = JournalWait::kDurable);
  Status SyncLocked(std::unique_lock<std::mutex>& lk, uint64_t upto);
  Status CompactLocked(std::unique_lock<std::mutex>& lk);
  Status MaybeCompactLocked(std::unique_lock<std::mutex>& lk);

  const std::string dir_, name_, path_;
  const JournalOptions opts_;
  UniqueFd lock_fd_;  // flock'ed for the journal's lifetime; never renamed

  mutable std::mutex mu_;
  std::condition_variable synced_cv_;
  UniqueFd fd_;                       // GUARDED_BY(mu_)
  uint64_t size_ = 0;                 // GUARDED_BY(mu_): file size (next write offset)
  // Logical byte counters over the journal's life (not file offsets, which
  // compaction resets): every record appended, and the prefix known durable.
  uint64_t written_ = 0;              // GUARDED_BY(mu_)
  uint64_t durable_ = 0;              // GUARDED_BY(mu_)
  uint64_t compacted_size_ = 0;       // GUARDED_BY(mu_): size right after the last compaction
  bool syncing_ = false;              // GUARDED_BY(mu_): a thread is in fdatasync
  Status sync_error_;                 // GUARDED_BY(mu_): sticky: a failed fdatasync poisons the journal
  uint64_t next_id_ = 1;              // GUARDED_BY(mu_)
  std::map<uint64_t, Move> moves_;    // GUARDED_BY(mu_): in flight
};

}  // namespace pdm::hsm
