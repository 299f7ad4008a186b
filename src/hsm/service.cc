#include "hsm/service.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pdm::hsm {

Service::Service(Options opts, Node* node) : opts_(std::move(opts)), node_(node) {}

Service::~Service() {
  // The threads block in DMAPI calls for the agent's life; pdmd leaves with
  // _exit after the node has stopped (which fails those calls).
  if (watch_.joinable()) watch_.detach();
  if (run_.joinable()) run_.detach();
}

Status Service::Start() {
  ::setenv("DMAPI_SOCKET", opts_.socket.c_str(), 1);
  ArchiveOptions ao;
  ao.writer = "r" + std::to_string(node_->rank()) + "-" + std::to_string(::getpid());
  PDM_ASSIGN_OR_RETURN(archive_, Archive::Open(opts_.archive, opts_.archive_id, ao));
  worker_ = std::make_unique<Worker>(Worker::Options{node_->rank(), opts_.archive_threads, opts_.restore_threads},
                                     archive_.get());
  PDM_RETURN_IF_ERROR(worker_->Start());
  if (node_->rank() == 0) PDM_RETURN_IF_ERROR(BecomeCoordinator(0));
  watch_ = std::thread([this] { Watch(); });
  return Status::Ok();
}

Status Service::BecomeCoordinator(uint64_t oldsid) {
  Coordinator::Options co;
  co.view = opts_.view;
  co.journal_dir = archive_->dir() + "/journal";
  ::mkdir(co.journal_dir.c_str(), 0700);
  co.chunk_size = opts_.chunk_size;
  co.remove_on_destroy = opts_.remove_on_destroy;
  co.alive = [this](int r) {
    ClusterView v = node_->Cluster();
    return r >= 0 && static_cast<size_t>(r) < v.alive.size() && v.alive[static_cast<size_t>(r)];
  };
  auto c = std::make_unique<Coordinator>(std::move(co), archive_.get());
  PDM_RETURN_IF_ERROR(c->Start(oldsid));
  coordinator_ = std::move(c);
  run_ = std::thread([this] { coordinator_->Run(); });
  return Status::Ok();
}

void Service::Watch() {
  while (!coordinator_) {
    ::usleep(500000);
    auto sid = FindCoordinator();
    if (!sid.ok()) continue;  // rank 0 is still starting it
    auto s = node_->QuerySession(*sid);
    if (!s.ok() || s->owner_alive) continue;
    ClusterView v = node_->Cluster();
    int lowest = -1;
    for (size_t r = 0; r < v.alive.size(); ++r)
      if (v.alive[r]) {
        lowest = static_cast<int>(r);
        break;
      }
    if (lowest != node_->rank()) continue;
    spdlog::warn("hsm: the coordinator's node {} died; rank {} takes over session {}", s->rec.owner, lowest, *sid);
    if (Status st = BecomeCoordinator(*sid); !st.ok())
      spdlog::error("hsm: cannot take over the coordinator: {}", st.ToString());
  }
}

}  // namespace pdm::hsm
