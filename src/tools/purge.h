// Purge: select files (a walk of the roots, or a list / catalog), then
// unlink them — or, with release_only, free their space through the HSM —
// spread evenly over the ranks.
//
//   1. selection: every entry is judged with Matches() on a fresh lstat (a
//      catalog's numbers may be stale); excluded and protected directories
//      are not descended. With a policy, the first rule taking the entry
//      decides, then each rule's candidates are ordered and cut to its limits
//      and, with a trigger, to the bytes that bring usage down to the low
//      watermark (PrefixSelect). Without a policy, max_count / max_volume
//      cut the one selection the same way.
//   2. the selected paths are redistributed so every rank acts on the same
//      number of files.
//   3. action: each parent directory is opened with openat2(RESOLVE_NO_SYMLINKS)
//      — a path with a symlink anywhere in it is refused, so no unlink ever
//      follows a symlink out of the tree — the entry is lstat'ed again through
//      that fd, re-judged, and unlinkat() removes it.
//   4. with rmdir: directories whose entries were all removed are removed
//      too, deepest first, level by level (a barrier per level), never a root
//      nor a protected one. Each candidate directory is decided by one owner
//      rank (a hash of its path).
//
// A dry run does steps 1 and 2, then step 4 with "would every entry the
// directory holds now be gone?" (a readdir) in place of rmdir, and writes the
// list a real run would act on — files, then directories — from the same code. Roots are resolved with realpath; "/" and a mount
// root are refused unless `force`.
//
// Thread-safety: one thread per process; RunPurge is COLLECTIVE.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/policy.h"
#include "tools/select.h"

namespace pdm::tools {

// Frees an archived file's data and keeps the file (HSM release). Called on
// the rank that acts on the file. Injected by the tool, so the purge engine
// does not depend on the HSM.
using ReleaseHook = std::function<Status(const std::string& path)>;

struct PurgeOptions {
  std::vector<std::string> roots;  // the trees; with `input`, entries outside them are skipped
  std::string input;               // -i: text list or catalog instead of walking
  Criteria criteria;               // used when policy is null
  ProtectSet protect;
  const Policy* policy = nullptr;  // purge/release rules of a policy file
  // Without a policy: take only the first candidates in `order` (times:
  // oldest first; size: largest first) while fewer than max_count are taken
  // and they weigh (st_blocks * 512, the space a purge frees) less than
  // max_volume — a policy rule's order / max_count / max_volume, from flags.
  OrderKey order = OrderKey::kNone;
  std::optional<uint64_t> max_count;
  std::optional<uint64_t> max_volume;
  bool dryrun = false;
  bool rmdir = false;          // also remove directories emptied by the purge
  bool force = false;          // allow "/" and mount roots
  bool release_only = false;   // release archived files instead of unlinking
  ReleaseHook release;         // required with release_only or release rules
  std::string list_file;       // write the selected (dry run) / removed paths
  std::string report_file;     // per-user report of the selection
  bool print_list = false;     // dry run: print the selection on stdout
  double progress_s = 0;
  int64_t now_ns = 0;          // "now" for ages; 0 = the clock at the start
  bool read_hsm = true;
  int max_error_lines = 20;    // per rank
};

struct PurgeResult {
  uint64_t scanned = 0;      // entries looked at
  uint64_t matched = 0;      // selected
  uint64_t removed = 0;      // unlinked (0 in a dry run)
  uint64_t released = 0;     // released through the hook
  uint64_t bytes = 0;        // st_size of the removed / released (selected, in a dry run)
  uint64_t dirs_removed = 0;  // with rmdir (0 in a dry run)
  uint64_t dirs_matched = 0;  // with rmdir: directories removed, or a dry run would remove
  uint64_t skipped = 0;      // changed or vanished before the action, or outside the roots
  uint64_t errors = 0;       // failed walks, lstats, unlinks, releases
  bool triggered = true;     // false: a policy trigger said usage is below high
  uint64_t to_free = 0;      // bytes the trigger asked for
  double seconds = 0;
};

// COLLECTIVE. Result holds the global sums on every rank. The Status is not
// OK only when the purge could not start (bad root, unreadable input, missing
// hook); per-entry failures are in result->errors.
Status RunPurge(MPI_Comm comm, const PurgeOptions& opts, PurgeResult* result);

// Local: realpath of root; FailedPrecondition for "/" or a mount root unless
// force; InvalidArgument when it is not a directory.
Result<std::string> CheckPurgeRoot(const std::string& root, bool force);

}  // namespace pdm::tools
