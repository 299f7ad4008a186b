// Parallel walk: every rank of a communicator lstats a share of the tree and
// hands each entry to a local sink.
//
// Work distribution is dynamic work stealing. A work item is a directory to
// read, or a chunk of names of one directory to lstat. A rank works on its own
// queue depth-first (newest item first, which keeps the queue short); an idle
// rank asks a victim, which gives away the older half of its queue (shallow
// directories: the biggest subtrees). A directory is read in chunks of
// `chunk` names, and every full chunk is queued as soon as it is read, so the
// lstats of one huge directory are shared by all ranks while its reader is
// still reading; no directory pins one rank.
//
// Termination: Safra's token algorithm. Each rank counts work messages sent
// minus received and turns black when it receives work; rank 0 circulates a
// token collecting the counts and colours, and ends the walk when a round
// finds every rank idle, every count summed to zero and no rank black. After
// that a nonblocking barrier drains outstanding steal requests, so no
// message is left unmatched.
//
// Symlinks are never followed: entries are lstat'ed (fstatat with
// AT_SYMLINK_NOFOLLOW), only real directories are descended, and a directory
// is opened with O_NOFOLLOW. A root that is a symlink is reported as the link
// (as find does without -H).
//
// Errors (unreadable directory, failed lstat) are counted and printed to
// stderr (the first few per rank); the walk goes on. An entry that vanished
// between readdir and lstat is counted separately and is not an error.
//
// Thread-safety: one thread per process.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/entry.h"
#include "tools/progress.h"

namespace pdm::tools {

struct WalkOptions {
  std::vector<std::string> roots;  // walked in this order; made absolute
  bool read_hsm = true;            // read trusted.pdm.dm.pdmhsm of regular files
  size_t chunk = 256;              // names per lstat work item (>= 1)
  // When set and true for a directory entry, that directory is not read (the
  // entry itself is still handed to the sink). Used for excludes/protection.
  std::function<bool(const Entry&)> prune;
  Progress* progress = nullptr;    // Add(1, size) per entry, Tick() often
  int max_error_lines = 20;        // error lines printed per rank
};

struct WalkStats {
  uint64_t entries = 0;   // handed to the sink
  uint64_t errors = 0;    // failed opendir / lstat / xattr reads
  uint64_t vanished = 0;  // gone between readdir and lstat
  uint64_t steals = 0;    // work items received from other ranks
};

using EntrySink = std::function<void(Entry&&)>;

// COLLECTIVE over comm. Stats are this rank's; sum them for the totals.
// Returns InvalidArgument for an empty root list; never fails for per-entry
// errors (they are in stats).
Status Walk(MPI_Comm comm, const WalkOptions& opts, const EntrySink& sink, WalkStats* stats);

// Local: "rel/dir/" -> "/cwd/rel/dir" — absolute, no trailing '/', "." and
// ".." components resolved textually (no symlink is looked at).
std::string AbsolutePath(const std::string& path);

// Local: lstat + HSM state of one path into an Entry. Used for roots and for
// list/catalog input.
Status StatEntry(const std::string& path, bool read_hsm, Entry* e);

}  // namespace pdm::tools
