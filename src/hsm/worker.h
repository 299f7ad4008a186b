// Worker: the HSM's data movers on one rank (blueprint section 2, claims
// 1-6 and 11 of the HSM seed). Threads take Tasks from two DMAPI sessions of
// this rank — a restore queue and an archive queue, each with its own
// threads, so a recall never waits behind archiving — and run them with the
// coordinator's session id and token carried in the task: a task whose
// token is not outstanding on a coordinator session is refused and logged.
// The three moves: out (kPut: dm_read_invis → archive chunk), in (kGet:
// verified archive chunk → dm_write_invis), punch (kPunch: dm_punch_hole).
// Each result goes back to the coordinator as an asynchronous user event.
//
// Thread-safety: Start/Stop from one thread.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hsm/archive.h"
#include "hsm/protocol.h"

namespace pdm::hsm {

class Worker {
 public:
  struct Options {
    int rank = 0;
    int archive_threads = 4;
    int restore_threads = 2;
  };
  Worker(Options opts, Archive* archive);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Creates the two sessions and starts the threads (the caller has set
  // DMAPI_SOCKET to this node's agent).
  Status Start();

 private:
  void Loop(uint64_t sid);
  TaskResult Execute(const Task& t);
  Status CheckCapability(const Task& t);
  // One item of a kPut: the file's bytes streamed into an archive chunk
  // through *buf (one dm_read_invis at a time).
  Result<ChunkRef> Put(uint64_t sid, uint64_t token, const TaskItem& it, Durability d, std::vector<uint8_t>* buf);
  Result<ObjectManifest> Manifest(const std::string& key);

  const Options opts_;
  Archive* const archive_;
  std::vector<uint64_t> sessions_;  // restore, archive
  std::vector<std::thread> threads_;
  std::mutex mu_;                            // manifests_
  std::map<std::string, ObjectManifest> manifests_;  // recall: read once per object
};

}  // namespace pdm::hsm
