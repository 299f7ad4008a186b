#include "tools/mpi_util.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace pdm::tools {

bool StartedWithoutLauncher() {
  // mpirun sets OMPI_COMM_WORLD_SIZE; srun --mpi=pmix sets PMIX_RANK,
  // --mpi=pmi2 PMI_RANK. Without any of them Open MPI runs as a singleton.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v) != nullptr) return false;
  return true;
}

MpiSession::MpiSession(int* argc, char*** argv, int required) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    if (StartedWithoutLauncher()) {
      ::setenv("OMPI_MCA_pml", "ob1", /*overwrite=*/0);
      ::setenv("OMPI_MCA_ess_singleton_isolated", "1", /*overwrite=*/0);
    }
    MPI_Init_thread(argc, argv, required, &provided_);
    owns_ = true;
  } else {
    MPI_Query_thread(&provided_);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() {
  if (owns_) MPI_Finalize();
}

uint64_t SumAll(MPI_Comm comm, uint64_t v) {
  uint64_t out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_UINT64_T, MPI_SUM, comm);
  return out;
}

int64_t MaxAll(MPI_Comm comm, int64_t v) {
  int64_t out = 0;
  MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_MAX, comm);
  return out;
}

bool AnyAll(MPI_Comm comm, bool v) {
  int in = v ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, comm);
  return out != 0;
}

Status AgreeStatus(MPI_Comm comm, const Status& local) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int mine = local.ok() ? size : rank;
  int first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first == size) return Status::Ok();
  // The failing rank broadcasts its code, errno and message.
  int hdr[3] = {static_cast<int>(local.code()), local.err(), static_cast<int>(local.message().size())};
  MPI_Bcast(hdr, 3, MPI_INT, first, comm);
  std::string msg(static_cast<size_t>(hdr[2]), '\0');
  if (rank == first) msg = local.message();
  MPI_Bcast(msg.data(), hdr[2], MPI_CHAR, first, comm);
  return Status(static_cast<Code>(hdr[0]), hdr[1], msg);
}

Status WriteRankOrdered(MPI_Comm comm, const std::string& local, FILE* out) {
  constexpr int kPiece = 1 << 20;  // bounds rank 0's receive buffer
  constexpr int kTag = 7101;
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  bool failed = false;
  if (rank == 0) {
    if (!local.empty() && std::fwrite(local.data(), 1, local.size(), out) != local.size()) failed = true;
    std::vector<char> buf(kPiece);
    for (int r = 1; r < size; ++r) {
      // Each sender sends pieces, then an empty piece to say it is done. The
      // go-ahead message keeps only one sender active at a time, so rank 0
      // never holds more than one piece.
      int go = 1;
      MPI_Send(&go, 1, MPI_INT, r, kTag, comm);
      for (;;) {
        MPI_Status st;
        MPI_Recv(buf.data(), kPiece, MPI_CHAR, r, kTag, comm, &st);
        int n = 0;
        MPI_Get_count(&st, MPI_CHAR, &n);
        if (n == 0) break;
        if (std::fwrite(buf.data(), 1, static_cast<size_t>(n), out) != static_cast<size_t>(n)) failed = true;
      }
    }
    std::fflush(out);
  } else {
    int go = 0;
    MPI_Recv(&go, 1, MPI_INT, 0, kTag, comm, MPI_STATUS_IGNORE);
    for (size_t off = 0; off < local.size(); off += kPiece) {
      const int n = static_cast<int>(std::min<size_t>(kPiece, local.size() - off));
      MPI_Send(local.data() + off, n, MPI_CHAR, 0, kTag, comm);
    }
    MPI_Send(nullptr, 0, MPI_CHAR, 0, kTag, comm);
  }
  return AgreeStatus(comm, failed ? Internal("write to the output failed") : Status::Ok());
}

Status WriteFileOrdered(MPI_Comm comm, const std::string& path, const std::string& local) {
  MPI_File fh;
  int rc = MPI_File_open(comm, path.c_str(), MPI_MODE_CREATE | MPI_MODE_WRONLY, MPI_INFO_NULL, &fh);
  if (rc != MPI_SUCCESS) return AgreeStatus(comm, Internal("MPI_File_open(" + path + ") failed"));
  MPI_File_set_size(fh, 0);
  long long len = static_cast<long long>(local.size()), off = 0;
  MPI_Exscan(&len, &off, 1, MPI_LONG_LONG, MPI_SUM, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) off = 0;  // MPI_Exscan leaves rank 0's result undefined
  // Written in pieces below 2 GiB: MPI counts are ints.
  constexpr size_t kPiece = size_t{1} << 30;
  bool failed = false;
  for (size_t done = 0; done < local.size(); done += kPiece) {
    const int n = static_cast<int>(std::min(kPiece, local.size() - done));
    if (MPI_File_write_at(fh, off + static_cast<MPI_Offset>(done), local.data() + done, n, MPI_CHAR,
                          MPI_STATUS_IGNORE) != MPI_SUCCESS)
      failed = true;
  }
  MPI_File_close(&fh);
  return AgreeStatus(comm, failed ? Internal("MPI_File_write_at(" + path + ") failed") : Status::Ok());
}

std::vector<std::string> ExchangeStrings(MPI_Comm comm, const std::vector<std::vector<std::string>>& out) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  // Pack as NUL-separated strings; paths never contain NUL.
  std::vector<int> send_counts(size, 0), send_displs(size, 0);
  std::string send;
  for (int r = 0; r < size; ++r) {
    send_displs[r] = static_cast<int>(send.size());
    for (const auto& s : out[r]) {
      send.append(s);
      send.push_back('\0');
    }
    send_counts[r] = static_cast<int>(send.size()) - send_displs[r];
  }
  std::vector<int> recv_counts(size, 0), recv_displs(size, 0);
  MPI_Alltoall(send_counts.data(), 1, MPI_INT, recv_counts.data(), 1, MPI_INT, comm);
  int total = 0;
  for (int r = 0; r < size; ++r) {
    recv_displs[r] = total;
    total += recv_counts[r];
  }
  std::string recv(static_cast<size_t>(total), '\0');
  MPI_Alltoallv(send.data(), send_counts.data(), send_displs.data(), MPI_CHAR, recv.data(), recv_counts.data(),
                recv_displs.data(), MPI_CHAR, comm);
  std::vector<std::string> got;
  size_t start = 0;
  for (size_t i = 0; i < recv.size(); ++i) {
    if (recv[i] == '\0') {
      got.emplace_back(recv, start, i - start);
      start = i + 1;
    }
  }
  return got;
}

}  // namespace pdm::tools
