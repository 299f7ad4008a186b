// Progress: the one progress reporter of every tool. Rank 0 prints a line
// every `interval` seconds: items, items/s, bytes, and an ETA when the total
// is known. The ranks' counters are combined with nonblocking collectives on
// a duplicated communicator, so reporting never waits for a busy rank and
// never mixes with the tool's own messages:
//
//   rank 0, when its interval has passed:  Ibcast(go=1), Ireduce(counters)
//   other ranks, in Tick():                 test the pending Ibcast; when it
//                                           completed with go=1, Ireduce their
//                                           counters and post the next Ibcast
//   Finish() (COLLECTIVE):                  rank 0 sends go=0; all reduce the
//                                           final counters once, blocking
//
// Ranks post the collectives in the same order, as MPI requires, because
// only rank 0 decides when a round starts. A rank stuck in a slow syscall
// delays only the round it has not joined; rank 0 then prints its last
// complete numbers with "(waiting for N s)" rather than going silent.
//
// Thread-safety: one thread per process (the one that calls MPI).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace pdm::tools {

class Progress {
 public:
  // COLLECTIVE over comm (duplicates it). interval_s <= 0 turns printing off;
  // the object then costs nothing but Finish() still works. `what` names the
  // items in the line ("items", "files removed").
  Progress(MPI_Comm comm, double interval_s, std::string tool, std::string what, FILE* out = stderr);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Local: count work done on this rank.
  void Add(uint64_t items, uint64_t bytes) {
    items_ += items;
    bytes_ += bytes;
  }
  // Local: the expected global total of items, for the ETA (0 = unknown).
  void SetTotal(uint64_t total) { total_ = total; }
  // Local: call often (every few hundred items); cheap when nothing is due.
  void Tick();
  // COLLECTIVE: completes the protocol; rank 0 prints a final line when
  // printing is on. Returns the global item and byte counts on every rank.
  void Finish(uint64_t* items, uint64_t* bytes);

  uint64_t local_items() const { return items_; }

 private:
  void Print(const uint64_t sums[2], bool final_line);
  void StartRound();

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  double interval_s_;
  std::string tool_, what_;
  FILE* out_;
  uint64_t items_ = 0, bytes_ = 0, total_ = 0;
  double start_ = 0, last_print_ = 0, last_round_start_ = 0;
  bool finished_ = false;
  // Round state.
  int go_ = 0;
  MPI_Request bcast_req_ = MPI_REQUEST_NULL, reduce_req_ = MPI_REQUEST_NULL;
  uint64_t send_[2] = {0, 0}, recv_[2] = {0, 0};
  uint64_t last_sums_[2] = {0, 0};
  double last_sums_time_ = 0;
};

}  // namespace pdm::tools
