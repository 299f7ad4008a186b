#include "tools/entry.h"

#include <limits>

namespace pdm::tools {

char TypeLetter(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    default: return '?';
  }
}

void FillFromStat(const struct stat& st, Entry* e) {
  // Nanoseconds in an int64 reach only 1678..2262; tmpfs, btrfs and XFS
  // bigtime store times beyond that (touch -d 2500-01-01 works), so such a
  // time saturates instead of overflowing (undefined behaviour, and a wrapped
  // time would make a future file look ancient to a purge).
  auto ns = [](const struct timespec& ts) {
    int64_t out = 0;
    if (__builtin_mul_overflow(int64_t{ts.tv_sec}, int64_t{1000000000}, &out) ||
        __builtin_add_overflow(out, int64_t{ts.tv_nsec}, &out))
      return ts.tv_sec < 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
    return out;
  };
  e->type = TypeLetter(st.st_mode);
  e->size = static_cast<uint64_t>(st.st_size);
  e->blocks = static_cast<uint64_t>(st.st_blocks);
  e->uid = st.st_uid;
  e->gid = st.st_gid;
  e->mode = st.st_mode;
  e->atime_ns = ns(st.st_atim);
  e->mtime_ns = ns(st.st_mtim);
  e->ctime_ns = ns(st.st_ctim);
}

}  // namespace pdm::tools
