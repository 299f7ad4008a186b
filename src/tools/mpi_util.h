// Small MPI helpers shared by the tools: an init guard (so a tool's early
// return never repeats the finalize sequence), rank-ordered text output, and
// the all-ranks reductions the tools need to agree on one outcome.
//
// Every function taking a communicator is COLLECTIVE over it unless marked
// local. Thread-safety: call from the thread that initialised MPI.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/status.h"

namespace pdm::tools {

// MPI_Init_thread on construction, MPI_Finalize on destruction (unless MPI
// was already initialised by someone else, who then owns the finalize).
//
// A tool started without a launcher (no mpirun, no srun) is an MPI singleton.
// It has no peers and spawns none, yet Open MPI's default singleton start-up
// probes every fabric library and forks a daemon: 0.45 s of every pdm-state
// here, 0.05 s without. A singleton therefore gets the ob1 layer and no daemon
// (OMPI_MCA_pml=ob1, OMPI_MCA_ess_singleton_isolated=1) unless the user set
// those variables; a launched job keeps the site's choice.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv, int required = MPI_THREAD_SINGLE);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // The thread level MPI gave (at least `required` unless MPI could not).
  int provided() const { return provided_; }

 private:
  bool owns_ = false;
  int rank_ = 0, size_ = 1;
  int provided_ = MPI_THREAD_SINGLE;
};

// Local. True when no launcher started this process (see MpiSession).
bool StartedWithoutLauncher();

// COLLECTIVE. Sums v over comm; every rank gets the sum.
uint64_t SumAll(MPI_Comm comm, uint64_t v);
int64_t MaxAll(MPI_Comm comm, int64_t v);
// COLLECTIVE. True on every rank when any rank passed true.
bool AnyAll(MPI_Comm comm, bool v);
// COLLECTIVE. The first non-OK status of the lowest rank that has one, on
// every rank, so all ranks and the exit code agree (blueprint style rule 8).
Status AgreeStatus(MPI_Comm comm, const Status& local);

// COLLECTIVE. Writes each rank's text to `out` in rank order (rank 0 first):
// rank 0 receives the others' text in bounded pieces and writes it, so the
// whole text never has to fit in rank 0's memory. `out` is used on rank 0 only.
Status WriteRankOrdered(MPI_Comm comm, const std::string& local, FILE* out);

// COLLECTIVE. Creates (truncates) `path` and writes each rank's text at its
// rank-ordered offset with MPI-IO (MPI_Exscan of the lengths), so large lists
// are written in parallel and never gathered.
Status WriteFileOrdered(MPI_Comm comm, const std::string& path, const std::string& local);

// COLLECTIVE. Sends strings to owner ranks: out[r] goes to rank r; returns
// what this rank received, in source-rank order. Used to rebalance selected
// paths before acting on them.
std::vector<std::string> ExchangeStrings(MPI_Comm comm, const std::vector<std::vector<std::string>>& out);

}  // namespace pdm::tools
