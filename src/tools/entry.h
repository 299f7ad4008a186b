// Entry: one file-system object as the tools see it — the fields of one
// catalog row (docs/catalog.md). Built from lstat (never stat: a symlink is
// described as itself, its target is never looked at) plus the HSM state.
//
// Thread-safety: a value.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

namespace pdm::tools {

// find -printf %y letters: f d l p s c b, '?' for anything else.
char TypeLetter(mode_t mode);

struct Entry {
  std::string path;       // absolute, no trailing '/', as reached by the walk
  char type = '?';        // TypeLetter(mode)
  uint64_t size = 0;      // st_size
  uint64_t blocks = 0;    // st_blocks (512-byte units, as stat reports them)
  uint32_t uid = 0, gid = 0;
  uint32_t mode = 0;      // st_mode, type bits included
  int64_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;  // since the epoch
  uint32_t hsm_flags = 0;  // HsmFlag bits (hsm_state.h); 0 = not managed
  uint64_t archive_id = 0;  // archive the copy lives in; 0 = none

  bool is_dir() const { return type == 'd'; }
  bool is_file() const { return type == 'f'; }
  // Bytes the entry occupies on disk (what removing it frees, hard links aside).
  uint64_t allocated() const { return blocks * 512; }
};

// Fills everything but path and the HSM fields from an lstat result.
void FillFromStat(const struct stat& st, Entry* e);

}  // namespace pdm::tools
