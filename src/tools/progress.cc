#include "tools/progress.h"

#include "tools/units.h"

namespace pdm::tools {

Progress::Progress(MPI_Comm comm, double interval_s, std::string tool, std::string what, FILE* out)
    : interval_s_(interval_s), tool_(std::move(tool)), what_(std::move(what)), out_(out) {
  MPI_Comm_dup(comm, &comm_);
  MPI_Comm_rank(comm_, &rank_);
  start_ = last_print_ = last_round_start_ = last_sums_time_ = MPI_Wtime();
  // Non-root ranks wait for rank 0's first "go" from the start.
  if (interval_s_ > 0 && rank_ != 0) MPI_Ibcast(&go_, 1, MPI_INT, 0, comm_, &bcast_req_);
}

Progress::~Progress() {
  if (!finished_) {
    uint64_t i = 0, b = 0;
    Finish(&i, &b);
  }
  MPI_Comm_free(&comm_);
}

void Progress::StartRound() {
  // Root's previous Ibcast may still be pending locally; a request handle is
  // never overwritten while live.
  MPI_Wait(&bcast_req_, MPI_STATUS_IGNORE);
  go_ = 1;
  MPI_Ibcast(&go_, 1, MPI_INT, 0, comm_, &bcast_req_);
  send_[0] = items_;
  send_[1] = bytes_;
  MPI_Ireduce(send_, recv_, 2, MPI_UINT64_T, MPI_SUM, 0, comm_, &reduce_req_);
  last_round_start_ = MPI_Wtime();
}

void Progress::Tick() {
  if (interval_s_ <= 0 || finished_) return;
  int done = 0;
  if (rank_ == 0) {
    const double now = MPI_Wtime();
    if (reduce_req_ == MPI_REQUEST_NULL) {
      if (now - last_print_ >= interval_s_) StartRound();
      return;
    }
    MPI_Test(&bcast_req_, &done, MPI_STATUS_IGNORE);
    MPI_Test(&reduce_req_, &done, MPI_STATUS_IGNORE);
    if (done) {
      last_sums_[0] = recv_[0];
      last_sums_[1] = recv_[1];
      last_sums_time_ = MPI_Wtime();
      Print(recv_, false);
      last_print_ = last_sums_time_;
    } else if (now - last_print_ >= interval_s_) {
      // A rank has not joined the round yet: say so instead of going quiet.
      Print(last_sums_, false);
      last_print_ = now;
    }
    return;
  }
  // Non-root: finish the previous reduce, then see whether rank 0 called.
  if (reduce_req_ != MPI_REQUEST_NULL) {
    MPI_Test(&reduce_req_, &done, MPI_STATUS_IGNORE);
    if (!done) return;
  }
  MPI_Test(&bcast_req_, &done, MPI_STATUS_IGNORE);
  if (!done) return;
  if (go_ == 1) {
    send_[0] = items_;
    send_[1] = bytes_;
    MPI_Ireduce(send_, recv_, 2, MPI_UINT64_T, MPI_SUM, 0, comm_, &reduce_req_);
    MPI_Ibcast(&go_, 1, MPI_INT, 0, comm_, &bcast_req_);
  }
}

void Progress::Finish(uint64_t* items, uint64_t* bytes) {
  if (!finished_ && interval_s_ > 0) {
    if (rank_ == 0) {
      MPI_Wait(&bcast_req_, MPI_STATUS_IGNORE);  // no-ops on MPI_REQUEST_NULL
      MPI_Wait(&reduce_req_, MPI_STATUS_IGNORE);
      go_ = 0;
      MPI_Ibcast(&go_, 1, MPI_INT, 0, comm_, &bcast_req_);
      MPI_Wait(&bcast_req_, MPI_STATUS_IGNORE);
    } else {
      // Join every round rank 0 started until it says stop.
      for (;;) {
        if (reduce_req_ != MPI_REQUEST_NULL) MPI_Wait(&reduce_req_, MPI_STATUS_IGNORE);
        MPI_Wait(&bcast_req_, MPI_STATUS_IGNORE);
        if (go_ == 0) break;
        send_[0] = items_;
        send_[1] = bytes_;
        MPI_Ireduce(send_, recv_, 2, MPI_UINT64_T, MPI_SUM, 0, comm_, &reduce_req_);
        MPI_Ibcast(&go_, 1, MPI_INT, 0, comm_, &bcast_req_);
      }
    }
  }
  uint64_t local[2] = {items_, bytes_}, sums[2] = {0, 0};
  MPI_Allreduce(local, sums, 2, MPI_UINT64_T, MPI_SUM, comm_);
  if (!finished_ && interval_s_ > 0 && rank_ == 0) Print(sums, true);
  finished_ = true;
  *items = sums[0];
  *bytes = sums[1];
}

void Progress::Print(const uint64_t sums[2], bool final_line) {
  const double now = MPI_Wtime();
  const double elapsed = now - start_;
  const double rate = elapsed > 0 ? static_cast<double>(sums[0]) / elapsed : 0;
  std::string line = tool_ + ": " + FormatCount(sums[0]) + " " + what_ + " (" +
                     FormatCount(static_cast<uint64_t>(rate)) + "/s), " + FormatBytes(sums[1]) + ", " +
                     FormatDuration(elapsed);
  if (total_ > 0 && !final_line && rate > 0 && sums[0] < total_)
    line += ", ETA " + FormatDuration(static_cast<double>(total_ - sums[0]) / rate);
  if (!final_line && now - last_sums_time_ > interval_s_ * 1.5 && reduce_req_ != MPI_REQUEST_NULL)
    line += " (waiting " + FormatDuration(now - last_round_start_) + " for a busy rank)";
  if (final_line) line += ", done";
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

}  // namespace pdm::tools
