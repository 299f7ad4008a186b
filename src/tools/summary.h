// Summary: what a walk (or a purge selection) saw — counts by type, bytes,
// and the top users by bytes — for the human summary and the --json output.
//
// Thread-safety: a value; Reduce is COLLECTIVE.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "tools/entry.h"

namespace pdm::tools {

struct UserTotals {
  uint64_t entries = 0, bytes = 0;
};

class Summary {
 public:
  // Local: count one entry (bytes are st_size of non-directories).
  void Add(const Entry& e);
  // COLLECTIVE: after it, rank 0 holds the sums of all ranks (other ranks
  // keep their own numbers). Per-user tables are gathered, not reduced,
  // because only the users that exist are sent.
  void Reduce(MPI_Comm comm);

  uint64_t entries() const { return entries_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t count(char type) const;
  const std::map<uint32_t, UserTotals>& users() const { return users_; }

  // "1,234 entries: 1,000 files, 200 dirs, 34 links; 1.2 GiB" and the top
  // users by bytes, one per line.
  std::string Human(size_t top_users = 10) const;
  // {"entries", "bytes", "types": {"f": N, ...}, "top_users": [{"user", "uid", "entries", "bytes"}]}
  nlohmann::json Json(size_t top_users = 10) const;

 private:
  static int TypeIndex(char t);
  uint64_t entries_ = 0, bytes_ = 0;
  uint64_t types_[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // f d l p s c b ?
  std::map<uint32_t, UserTotals> users_;
};

}  // namespace pdm::tools
