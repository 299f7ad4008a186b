// Baseline for "session create until visible on every node": MPI_Bcast of
// the same bytes over the same fabric. Prints two numbers (microseconds):
//   bcast      average of back-to-back MPI_Bcast from rank 0 (the usual figure)
//   bcast+ack  MPI_Bcast then a 1-byte MPI_Reduce to rank 0: the root knows
//              every rank has the data, which is what a pdm create promises
// usage: mpirun -np N bench_mpi_bcast BYTES ITERS
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int bytes = argc > 1 ? std::atoi(argv[1]) : 128;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 10000;
  std::vector<char> buf(static_cast<size_t>(bytes), 1);
  for (int i = 0; i < 100; ++i) MPI_Bcast(buf.data(), bytes, MPI_CHAR, 0, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) MPI_Bcast(buf.data(), bytes, MPI_CHAR, 0, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  double bcast = (MPI_Wtime() - t0) / iters * 1e6;
  char one = 1, sum = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) {
    MPI_Bcast(buf.data(), bytes, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_Reduce(&one, &sum, 1, MPI_CHAR, MPI_SUM, 0, MPI_COMM_WORLD);
  }
  double acked = (MPI_Wtime() - t0) / iters * 1e6;
  if (rank == 0) std::printf("mpi_bcast n=%d bytes=%d bcast_us=%.2f bcast_ack_us=%.2f\n", size, bytes, bcast, acked);
  MPI_Finalize();
  return 0;
}
