// Selection: which entries a purge (or a policy class) takes. One predicate,
// used by the dry run and the real run alike, so a dry run lists exactly what
// a real run acts on.
//
// Thread-safety: Criteria and ProtectSet are immutable values once built.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/status.h"
#include "tools/entry.h"
#include "tools/glob.h"
#include "tools/hsm_state.h"

namespace pdm::tools {

enum class TimeField : unsigned char { kAtime, kMtime, kCtime };
Result<TimeField> ParseTimeField(std::string_view s);  // "atime" | "mtime" | "ctime"
const char* TimeFieldName(TimeField f);
int64_t TimeOf(const Entry& e, TimeField f);

// Every set member must hold (AND); list members hold when any element does.
struct Criteria {
  std::vector<Glob> include;                // path globs; empty = every path
  std::vector<Glob> exclude;                // never selected (and, for dirs, pruned)
  std::optional<int64_t> older_than_s;      // now - time(by) > this
  std::optional<int64_t> newer_than_s;      // now - time(by) < this
  TimeField by = TimeField::kAtime;         // the time the ages are taken from
  std::optional<uint64_t> larger_than;      // size > this
  std::optional<uint64_t> smaller_than;     // size < this
  std::vector<uint32_t> uids, gids;         // owner / group in any of these
  std::vector<HsmClass> hsm;                // HSM state in any of these
  std::string types = "fl";                 // TypeLetter()s that may match;
                                            // default: files and symlinks
};

// Never-touch list (--protect FILE): exact paths; a protected directory
// protects everything below it.
class ProtectSet {
 public:
  // One absolute path per line; blank lines and '#' comments skipped; trailing
  // '/' removed. NotFound when the file cannot be read.
  static Result<ProtectSet> Load(const std::string& file);
  void Add(std::string path);
  void Merge(const ProtectSet& other) { paths_.insert(other.paths_.begin(), other.paths_.end()); }
  // True when `path` or one of its ancestors is in the set.
  bool Covers(std::string_view path) const;
  bool empty() const { return paths_.empty(); }
  size_t size() const { return paths_.size(); }

 private:
  std::unordered_set<std::string> paths_;
};

// True when Criteria selects e at time now_ns (ns since the epoch).
bool Matches(const Criteria& c, const Entry& e, int64_t now_ns);
// True when a directory must not be descended into: excluded by a glob or
// protected. Its subtree is then never selected.
bool Prunes(const Criteria& c, const ProtectSet& protect, const Entry& dir);

// Resolves a user or group name (or a number) to an id. NotFound otherwise.
Result<uint32_t> ResolveUser(std::string_view name_or_id);
Result<uint32_t> ResolveGroup(std::string_view name_or_id);
// The name for an id, or the number as text when it has none.
std::string UserName(uint32_t uid);

}  // namespace pdm::tools
