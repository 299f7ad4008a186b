#include "tools/entry.h"

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
  auto ns = [](const struct timespec& ts) { return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec; };
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
