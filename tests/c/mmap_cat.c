/* mmap_cat FILE: maps FILE read-only and writes the mapping to stdout, the
 * way a program that reads its input through mmap(2) does. The events test
 * runs it on a released file: the bytes it prints must be the data, never
 * the hole. Exit 1 with the errno's text when open or mmap fails. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: mmap_cat FILE\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    fprintf(stderr, "mmap_cat: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  if (st.st_size == 0) return 0;
  void* m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    fprintf(stderr, "mmap_cat: mmap %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  size_t done = 0;
  while (done < (size_t)st.st_size) {
    ssize_t n = write(1, (const char*)m + done, (size_t)st.st_size - done);
    if (n <= 0) return 1;
    done += (size_t)n;
  }
  return 0;
}
