/*
 * prestage_example: an MPI application that prestages its inputs with
 * pdm_prestage (include/pdm/prestage.h), then reads and checksums them.
 *
 *   mpirun -np 3 prestage_example [-s SOCKET] [-d DIR] [-q] FILE...
 *
 * Every rank reads the first FILE (a shared input, as a mesh would be) and a window
 * of the others that overlaps its neighbours', so many files are named by
 * two or three ranks: pdm_prestage recalls each of them once. FILEs are
 * relative to DIR when -d is given. In SOCKET and DIR, "%r" is replaced by
 * the rank: on a local test cluster node k has its own view of the file
 * system and its own agent socket, and -s sets DMAPI_SOCKET before the
 * library connects. -q: only the summary lines.
 *
 * Output, one line per event (each written whole, so ranks' lines do not
 * mix):
 *   rank R: prestage ok|failed (errno text), N paths
 *   rank R: failed PATH: errno text [hsm flags 0x..]
 *   rank R: file PATH SIZE FNV1A64-HEX
 *   prestage: paths P files F resident R recalled C failed_paths X
 *             failed_files Y requests Q bytes B seconds S     (rank 0, one line)
 *   rank R: read N files, B bytes
 * Exit status: 0 when every rank prestaged and read everything, 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pdm/prestage.h"

/* "%r" in pattern replaced by rank; the caller frees the result. */
static char *expand(const char *pattern, int rank) {
  char num[16];
  size_t len = 0, i;
  char *out;
  snprintf(num, sizeof num, "%d", rank);
  for (i = 0; pattern[i]; ++i) {
    if (pattern[i] == '%' && pattern[i + 1] == 'r') {
      len += strlen(num);
      ++i;
    } else {
      ++len;
    }
  }
  out = malloc(len + 1);
  if (!out) return NULL;
  len = 0;
  for (i = 0; pattern[i]; ++i) {
    if (pattern[i] == '%' && pattern[i + 1] == 'r') {
      memcpy(out + len, num, strlen(num));
      len += strlen(num);
      ++i;
    } else {
      out[len++] = pattern[i];
    }
  }
  out[len] = '\0';
  return out;
}

static char *join(const char *dir, const char *name) {
  size_t a, b;
  char *out;
  if (!dir) dir = "";
  a = strlen(dir);
  b = strlen(name);
  out = malloc(a + b + 2);
  if (!out) return NULL;
  memcpy(out, dir, a);
  if (a > 0 && dir[a - 1] != '/') out[a++] = '/';
  memcpy(out + a, name, b + 1);
  return out;
}

/* One whole line per call, flushed at once: mpirun forwards each rank's
 * output separately, and a line written in pieces could interleave. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fputs(line, stdout);
  fflush(stdout);
}

/* FNV-1a 64: simple enough that a test recomputes it in a few lines. */
static int checksum_file(const char *path, uint64_t *size, uint64_t *sum) {
  static unsigned char buf[1 << 20];
  uint64_t h = 14695981039346656037ull, n = 0;
  ssize_t got;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  while ((got = read(fd, buf, sizeof buf)) != 0) {
    ssize_t i;
    if (got < 0) {
      if (errno == EINTR) continue;
      {
        int err = errno;
        close(fd);
        errno = err;
      }
      return -1;
    }
    for (i = 0; i < got; ++i) {
      h ^= buf[i];
      h *= 1099511628211ull;
    }
    n += (uint64_t)got;
  }
  close(fd);
  *size = n;
  *sum = h;
  return 0;
}

int main(int argc, char **argv) {
  int rank = 0, size = 1, opt, quiet = 0, ok = 1, all_ok = 0;
  const char *socket_pattern = NULL, *dir_pattern = NULL;
  char *dir = NULL;
  char **mine;
  size_t nfiles, nmine = 0, nlisted, i, lo, hi;
  pdm_prestage_result *results;
  pdm_prestage_stats stats;
  uint64_t total_bytes = 0;

  while ((opt = getopt(argc, argv, "s:d:q")) != -1) {
    switch (opt) {
      case 's': socket_pattern = optarg; break;
      case 'd': dir_pattern = optarg; break;
      case 'q': quiet = 1; break;
      default:
        fprintf(stderr, "usage: %s [-s SOCKET] [-d DIR] [-q] FILE...\n", argv[0]);
        return 2;
    }
  }
  nfiles = (size_t)(argc - optind);

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  if (socket_pattern) {
    /* Before the first DMAPI call: libdmapi connects on first use. */
    char *s = expand(socket_pattern, rank);
    if (!s || setenv("DMAPI_SOCKET", s, 1) != 0) ok = 0;
    free(s);
  }
  if (dir_pattern) dir = expand(dir_pattern, rank);

  /* This rank's inputs: file 0, then the window [lo, hi) that reaches one
   * file into the next rank's window. */
  mine = calloc(nfiles + 1, sizeof *mine);
  lo = nfiles * (size_t)rank / (size_t)size;
  hi = nfiles * (size_t)(rank + 1) / (size_t)size + 1;
  if (hi > nfiles) hi = nfiles;
  if (!mine) {
    ok = 0;
  } else {
    if (nfiles > 0 && lo != 0) mine[nmine++] = join(dir, argv[optind]);
    for (i = lo; i < hi; ++i) mine[nmine++] = join(dir, argv[optind + (int)i]);
  }
  nlisted = nmine;
  for (i = 0; i < nmine; ++i)
    if (!mine[i]) ok = 0;
  if (!ok) {
    /* Out of memory or a bad environment: still call the collective (with
     * nothing), so the other ranks are not left waiting. */
    nmine = 0;
  }

  results = calloc(nmine + 1, sizeof *results);
  if (pdm_prestage_ex(MPI_COMM_WORLD, (const char *const *)mine, nmine, NULL, results, &stats) != 0) {
    say("rank %d: prestage failed (%s), %zu paths\n", rank, strerror(errno), nmine);
    ok = 0;
    for (i = 0; results && i < nmine; ++i)
      if (results[i].error != 0)
        say("rank %d: failed %s: %s [hsm flags 0x%02x]\n", rank, mine[i], strerror(results[i].error),
            (unsigned)results[i].hsm_flags);
  } else {
    say("rank %d: prestage ok, %zu paths\n", rank, nmine);
  }
  if (rank == 0)
    say("prestage: paths %llu files %llu resident %llu recalled %llu failed_paths %llu failed_files %llu "
        "requests %llu bytes %llu seconds %.3f\n",
        (unsigned long long)stats.paths, (unsigned long long)stats.files, (unsigned long long)stats.resident,
        (unsigned long long)stats.recalled, (unsigned long long)stats.failed_paths,
        (unsigned long long)stats.failed_files, (unsigned long long)stats.requests,
        (unsigned long long)stats.bytes, stats.seconds);

  /* The application's work: read what was prestaged. After a failure the
   * stubs would only fail again (or block on a recall), so nothing is read. */
  if (ok) {
    for (i = 0; i < nmine; ++i) {
      uint64_t n = 0, sum = 0;
      if (checksum_file(mine[i], &n, &sum) != 0) {
        say("rank %d: failed %s: read: %s\n", rank, mine[i], strerror(errno));
        ok = 0;
        continue;
      }
      total_bytes += n;
      if (!quiet) say("rank %d: file %s %llu %016llx\n", rank, mine[i], (unsigned long long)n, (unsigned long long)sum);
    }
    say("rank %d: read %zu files, %llu bytes\n", rank, nmine, (unsigned long long)total_bytes);
  }

  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  for (i = 0; i < nlisted; ++i) free(mine[i]);
  free(mine);
  free(results);
  free(dir);
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
