// Service: the HSM inside one pdmd rank (pdmd --archive SPEC). Every rank
// runs a Worker; the lowest live rank runs the Coordinator, and when the
// coordinator's node dies the lowest live rank assumes its session
// (dm_create_session with the old id), which brings the pending events back
// with their tokens, and replays the journal (claim 18).
//
// Everything it does to files and sessions goes through libdmapi to this
// node's agent (DMAPI_SOCKET); only rank liveness is read from the Node.
//
// Thread-safety: Start once; it owns its threads for the life of the agent.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "cluster/node.h"
#include "hsm/archive.h"
#include "hsm/coordinator.h"
#include "hsm/worker.h"

namespace pdm::hsm {

class Service {
 public:
  struct Options {
    std::string archive;  // "posix:DIR" | "hdf5:DIR"
    uint32_t archive_id = 1;
    std::string view;     // this node's view of the managed file system
    std::string socket;   // this node's DMAPI socket
    int archive_threads = 4;
    int restore_threads = 2;
    uint64_t chunk_size = kDefaultChunkSize;
    bool remove_on_destroy = true;
  };
  Service(Options opts, Node* node);
  ~Service();
  Status Start();

 private:
  void Watch();  // elects and, on failure, replaces the coordinator
  Status BecomeCoordinator(uint64_t oldsid);

  const Options opts_;
  Node* const node_;
  std::unique_ptr<Archive> archive_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<Coordinator> coordinator_;
  std::thread watch_, run_;
};

}  // namespace pdm::hsm
