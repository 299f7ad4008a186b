/*
 * pdm_prestage: collective recall of an MPI job's input files (libpdm_prestage).
 *
 * Every rank of `comm` passes the files it is going to read; the call brings
 * every released (HSM-migrated) one back from the archive before any rank
 * starts reading, so the job does not stall file by file on transparent
 * recalls, and one file named by many ranks is recalled once.
 *
 *   const char *inputs[] = {"/scratch/run7/mesh.h5", "/scratch/run7/bc.dat"};
 *   if (pdm_prestage(MPI_COMM_WORLD, inputs, 2) != 0) {
 *     perror("pdm_prestage");
 *     MPI_Abort(MPI_COMM_WORLD, 1);
 *   }
 *
 * How: each rank takes the DM handle of each of its paths (a symlink in the
 * last component is refused, not followed); handles are sent to an owner
 * rank chosen by a hash of the handle, so a file reached through different
 * paths or mounts on different ranks is one file; owners read each file's HSM
 * state; the released ones are gathered on rank 0, sorted by archive id and
 * object key (a file's versions and objects sit together in the archive, so
 * the archive is read in order, not at random), cut into recall requests and
 * dealt round-robin to all ranks, which send them to the HSM coordinator
 * through their node agent (DMAPI_SOCKET) with several requests in flight.
 * Each file is then judged by its state ("released" cleared) and the verdict
 * goes back to every rank that named it.
 *
 * Requirements: MPI initialised; the calling processes run as root (the
 * DMAPI is root only) on nodes whose pdm node agent runs with --archive.
 * The library makes no MPI call from its own threads, so any MPI thread
 * level works. All MPI communication uses a duplicate of comm.
 *
 * This header is C99 and C++ clean.
 */
#ifndef PDM_PRESTAGE_H
#define PDM_PRESTAGE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Collective over comm: every rank must call it (n may be 0, and paths may
 * then be NULL). Returns on every rank when every path of every rank has
 * been judged.
 *
 * Error contract:
 *   0   on every rank: every path of every rank names a regular file whose
 *       data is resident now (it was, or it has been recalled).
 *   -1  on every rank, with errno set, when anything failed anywhere:
 *       - a path of this rank failed: errno is the error of the first failed
 *         path of this rank (in paths[] order), e.g. EIO when the archive
 *         copy is lost or damaged, ENOENT for a missing file, EINVAL for a
 *         directory, symlink or other non-regular file;
 *       - only other ranks' paths failed: errno is EREMOTE;
 *       - the call could not run at all, on any rank: no node agent at
 *         DMAPI_SOCKET (libdmapi's errno, EIO), no HSM coordinator (ENOENT),
 *         paths NULL with n > 0 (EINVAL), an MPI error (EIO), more than
 *         2 GiB of handles in one exchange (EOVERFLOW): that errno on the
 *         failing rank, the largest such errno on the others.
 *   Which paths failed and why: pdm_prestage_ex.
 * Never aborts the job and never leaves other ranks waiting on a local
 * error: local failures are reported collectively.
 */
int pdm_prestage(MPI_Comm comm, const char *const *paths, size_t n);

/* Per-path outcome, results[i] for paths[i]. */
typedef struct pdm_prestage_result {
  int error;          /* 0 = resident now; else an errno value (see above) */
  uint32_t flags;     /* PDM_PRESTAGE_* below */
  uint32_t hsm_flags; /* the file's HSM state after the call: PDM_HSM_* */
} pdm_prestage_result;

#define PDM_PRESTAGE_RECALLED 0x1u  /* the file was released and this call recalled it */
#define PDM_PRESTAGE_DUPLICATE 0x2u /* another path (this or another rank) names the same file */

/* HSM state flags, as `pdm-state` prints them (docs/hsm-archive.md). */
#define PDM_HSM_EXISTS 0x01u
#define PDM_HSM_ARCHIVED 0x02u
#define PDM_HSM_RELEASED 0x04u
#define PDM_HSM_DIRTY 0x08u
#define PDM_HSM_LOST 0x10u
#define PDM_HSM_NORELEASE 0x20u
#define PDM_HSM_NOARCHIVE 0x40u

/* Totals over all ranks of comm; the same on every rank. */
typedef struct pdm_prestage_stats {
  uint64_t paths;         /* paths passed, all ranks */
  uint64_t files;         /* distinct files among the paths that resolved */
  uint64_t resident;      /* distinct files that were resident already */
  uint64_t recalled;      /* distinct files recalled by this call */
  uint64_t failed_paths;  /* paths that failed, all ranks */
  uint64_t failed_files;  /* distinct files whose recall or state read failed */
  uint64_t requests;      /* recall requests sent to the coordinator */
  uint64_t bytes;         /* bytes of the recalled files (sizes when archived) */
  double seconds;         /* wall time of the call, the slowest rank's */
} pdm_prestage_stats;

typedef struct pdm_prestage_options {
  /* Recall requests each rank keeps in flight. Default 4. */
  unsigned requests_per_rank;
  /* A request carries at most this many bytes of files (a bigger file goes
   * alone) and at most 256 files. Default 64 MiB. */
  uint64_t batch_bytes;
} pdm_prestage_options;

/* Fills *opts with the defaults. */
void pdm_prestage_options_init(pdm_prestage_options *opts);

/*
 * pdm_prestage with options (NULL: defaults), per-path results (NULL, or an
 * array of n written by the call whatever it returns) and totals (NULL, or
 * written whatever it returns; when the call could not run at all, only
 * paths and failed_paths are meaningful). Return value and errno as for
 * pdm_prestage. Zero fields of opts take the defaults; batch_bytes counts
 * on rank 0 (it cuts the requests), requests_per_rank on each rank.
 */
int pdm_prestage_ex(MPI_Comm comm, const char *const *paths, size_t n, const pdm_prestage_options *opts,
                    pdm_prestage_result *results, pdm_prestage_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* PDM_PRESTAGE_H */
