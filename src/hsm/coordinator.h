// Coordinator: the HSM's session node (claims 1-3, 17-18 of the HSM seed).
// It holds the HSM session — dispositions for READ, WRITE, TRUNCATE and
// DESTROY on the managed file system, and the user events that tools send
// (hsm/protocol.h) — splits every data movement into Tasks and posts them to
// the worker sessions of the live ranks, its own included: big files as
// chunks that several workers move at once, small files in batches. A task
// whose worker's node dies is posted again to another one.
//
// Per file (blueprint section 5), archive: chunks out → every chunk durable
// → manifest committed (the archive's checksums are those computed from the
// file's bytes as they were read) → state "archived" written and synced; a
// later write shows up as CLOSE (written and closed) and marks it dirty. Release: only
// an archived, clean, unchanged file: READ|WRITE|TRUNCATE region first (a
// read from now on recalls), then the punch, then state "released". Recall
// (a request, or READ / WRITE / TRUNCATE on a file with a READ region):
// chunks in, each checksum verified → regions cleared → state resident. A checksum mismatch or a missing object marks the file lost,
// fails the access with EIO and leaves it a stub.
//
// Each file is handled under the DM right EXCL of the request's token, so
// two recalls of one file (two readers) run one after the other and the
// second finds the data there.
//
// The journal (hsm/journal.h) records every move; a coordinator that
// assumes the session after a crash finishes or rolls back what it finds
// (Recover).
//
// Thread-safety: Start then Run on one thread; handlers run on their own
// threads; the members they share are guarded by mu_.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hsm/archive.h"
#include "hsm/journal.h"
#include "hsm/protocol.h"
#include "hsm/state.h"

namespace pdm::hsm {

class Coordinator {
 public:
  struct Options {
    std::string view;          // this node's mount of the managed file system
    std::string journal_dir;   // shared by every node (in the archive)
    uint64_t chunk_size = kDefaultChunkSize;
    uint64_t batch_bytes = 64ull << 20;  // small files per put task, by bytes
    size_t batch_files = 64;             // ... and by count
    bool remove_on_destroy = true;       // DESTROY of an archived file drops its copy
    // Liveness of ranks, from the node agent's cluster view.
    std::function<bool(int rank)> alive;
    std::function<std::vector<int>()> ranks;
  };
  Coordinator(Options opts, Archive* archive);
  ~Coordinator();

  // oldsid 0: a new HSM session; else assume it (the previous coordinator's
  // node died): its pending events come back with their tokens.
  Status Start(uint64_t oldsid);
  // The event loop; returns when the session ends.
  void Run();
  uint64_t sid() const { return sid_; }

 private:
  struct Worked {
    std::string handle;
    Status status;
  };
  void OnEvent(std::vector<uint8_t> msg);
  void OnRequest(uint64_t token, const Request& req);
  void OnDataEvent(uint64_t token, unsigned type, const std::string& handle);
  void OnClose(const std::string& handle);
  void OnDestroy(const std::string& attrcopy);
  void Respond(uint64_t token, const Status& st);

  // One file each; the caller holds EXCL on it for `token`.
  Status Archive(uint64_t token, const std::string& h, bool then_release);
  Status ArchiveBatch(uint64_t token, const std::vector<std::string>& handles, bool then_release,
                      std::vector<Status>* out);
  // Releases items (each one file of handles, with its state as read under
  // token): per file its checks, region and sync, then the punches batched,
  // then the state. move: the migrate move the release belongs to, or 0 for
  // a release on its own (it gets its own move). Every item's file leaves
  // BeginMove's count; (*out)[i] for each handle (OK where nothing failed).
  struct ReleaseItem {
    size_t i = 0;
    FileState state;
    uint64_t move = 0;
    bool state_unsynced = false;  // a migrate's new state, made durable by the release's sync
  };
  void ReleaseMany(uint64_t token, const std::vector<std::string>& handles, std::vector<ReleaseItem> items,
                   std::vector<Status>* out);
  Status Recall(uint64_t token, const std::string& h);
  Status Remove(uint64_t token, const std::string& h);
  Status Recover();
  // Cancellation: Begin/EndMove bracket a file's archive or release;
  // Cancelled() is checked before each step that cannot be taken back.
  void BeginMove(const std::string& h);
  void EndMove(const std::string& h);
  bool Cancelled(const std::string& h);

  // Posts one task and waits for its result, re-posting it while the chosen
  // worker's node is dead.
  Result<TaskResult> RunTask(Task t, bool restore);
  Result<uint64_t> PickWorker(bool restore, int* rank);
  Status RefreshWorkers();

  const Options opts_;
  hsm::Archive* const archive_;
  uint64_t sid_ = 0;
  std::string fsh_;  // the file system's handle
  std::unique_ptr<Journal> journal_;

  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_task_ = 1;  // random high half per incarnation
  std::map<uint64_t, TaskResult> results_;
  struct WorkerSessions {
    uint64_t restore = 0, archive = 0;
  };
  std::map<int, WorkerSessions> workers_;  // by rank
  size_t rr_ = 0;                          // round robin
  // Files with an archive or release in flight, and those asked to stop.
  std::map<std::string, int> moving_;
  std::map<std::string, bool> cancelled_;
};

}  // namespace pdm::hsm
