// Policy engine core: a TOML policy file of file classes and rules, the
// ordering and limits of a rule's candidates, and the watermark trigger.
// The actions themselves belong to the tools (pdm-purge unlinks and
// releases; pdm-migrate archives, migrates and recalls through the HSM);
// this header decides *what* they act on.
//
//   [trigger]                    # optional: run only above `high`, stop at `low`
//   path = "/scratch"            # file system to watch (default: the tool's PATH)
//   high = "90%"
//   low  = "80%"
//
//   [[class]]
//   name = "old_tmp"
//   path = ["*.tmp", "/scratch/**/core"]   # any glob (glob.h); default: all
//   exclude = ["*.keep"]
//   type = "f"                   # TypeLetter()s, default "fl"
//   larger_than = "1M"           # size > ; smaller_than = "1G": size <
//   older_than = "30d"           # age by `by` > ; newer_than: age <
//   by = "atime"                 # atime (default) | mtime | ctime
//   user = ["alice", "1001"]     # owner in any; group = ["proj"]
//   hsm_state = ["archived"]     # none | archived | released | dirty | lost
//
//   [[rule]]
//   name = "purge_old_tmp"
//   action = "purge"             # purge | release | migrate | archive | recall
//   class = ["old_tmp"]          # entries of any of these classes
//   order = "atime"              # atime|mtime|ctime: oldest first;
//                                # size: largest first; none (default)
//   max_count = 1000             # take at most this many ...
//   max_volume = "10T"           # ... or until this many bytes
//
// A file belongs to the first rule (in file order) one of whose classes it
// matches, so a rule cannot steal another's files. Unknown keys are errors:
// a typo must not silently widen or narrow a purge.
//
// Applying a policy is the same for every tool (RuleTaking, then
// CutToPolicy): pdm-purge does the purge and release rules, the HSM tools
// the release, migrate, archive and recall rules. A rule only takes files
// its action has work to do on (ActionApplies), so a limit is never spent
// on files already done.
//
// Thread-safety: Policy is an immutable value once parsed. PrefixSelect and
// CutToPolicy are COLLECTIVE.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tools/select.h"

namespace pdm::tools {

enum class Action : unsigned char { kPurge, kRelease, kMigrate, kArchive, kRecall };
const char* ActionName(Action a);

enum class OrderKey : unsigned char { kNone, kAtime, kMtime, kCtime, kSize };

struct PolicyClass {
  std::string name;
  Criteria criteria;
};

struct Rule {
  std::string name;
  Action action = Action::kPurge;
  std::vector<size_t> classes;  // indexes into Policy::classes
  OrderKey order = OrderKey::kNone;
  std::optional<uint64_t> max_count;
  std::optional<uint64_t> max_volume;
};

struct Trigger {
  std::string path;   // empty: the tool's PATH
  double high = 1.0;  // fraction of the file system used (df's Use%)
  double low = 1.0;   // stop once usage is at or below this
};

struct Policy {
  std::vector<PolicyClass> classes;
  std::vector<Rule> rules;
  std::optional<Trigger> trigger;

  // `origin` names the text in errors (a file name).
  static Result<Policy> Parse(std::string_view toml, const std::string& origin = "policy");
  static Result<Policy> Load(const std::string& file);

  // Index of the rule that takes e, or -1.
  int RuleFor(const Entry& e, int64_t now_ns) const;

  // The rule that takes e for a tool doing the actions in `actions`
  // (ActionBit()s): RuleFor(e) when that rule's action is among them and
  // ActionApplies; -1 otherwise. A file whose first matching rule is another
  // tool's is left alone, never handed to a later rule.
  int RuleTaking(const Entry& e, int64_t now_ns, uint32_t actions) const;

  // The first rule whose action is not in `actions`, or -1 (tools refuse a
  // policy holding actions they must not do).
  int FirstRuleNotIn(uint32_t actions) const;
};

constexpr uint32_t ActionBit(Action a) { return 1u << static_cast<unsigned>(a); }

// Whether `a` has work to do on e, from its type and HSM flags (the same
// test in a dry run and a real run):
//   purge    always
//   release  a regular file with a clean, verified copy and resident data
//            (hsm_state "archived"), not norelease
//   migrate  a resident regular file, not noarchive nor norelease (a migrate
//            ends in a release)
//   archive  a regular file with no clean copy yet (none, dirty, lost), not
//            released, not noarchive
//   recall   a released regular file
bool ActionApplies(Action a, const Entry& e);

// What a rule's max_volume counts for e: the space the action frees
// (allocated bytes, st_blocks * 512) for purge, release and migrate; the
// bytes it moves (st_size) for archive and recall — a released file
// occupies almost nothing, so its allocation says nothing about a recall.
uint64_t VolumeOf(Action a, const Entry& e);

// True for the actions that free space (purge, release, migrate): only their
// volumes count against a trigger's budget.
bool FreesSpace(Action a);

// ---- watermarks --------------------------------------------------------------

struct FsUsage {
  uint64_t size = 0;   // bytes (f_blocks * f_frsize)
  uint64_t used = 0;   // bytes in use ((f_blocks - f_bfree) * f_frsize)
  uint64_t avail = 0;  // bytes available to users (f_bavail * f_frsize)
  // As df computes Use%: used / (used + avail); reserved blocks excluded.
  double used_fraction() const { return used + avail == 0 ? 0 : double(used) / double(used + avail); }
};

Result<FsUsage> StatFs(const std::string& path);

struct TriggerDecision {
  bool run = false;           // usage is at or above the high watermark
  uint64_t bytes_to_free = 0;  // to get down to the low watermark
};
// Pure: what a trigger says about one usage sample.
TriggerDecision Evaluate(const Trigger& t, const FsUsage& u);

// ---- ordering and limits ------------------------------------------------------

// One candidate of a rule on this rank. `key` orders candidates globally
// (smaller first); `weight` is what a volume limit counts (allocated bytes).
struct Candidate {
  int64_t key = 0;
  uint64_t weight = 0;
  uint64_t index = 0;  // caller's handle (position in its own list)
};

// "none" | "atime" | "mtime" | "ctime" | "size" (a rule's `order`, and
// pdm-purge --order); InvalidArgument otherwise.
Result<OrderKey> ParseOrderKey(std::string_view s);
// The key for an order: times oldest first, size largest first.
int64_t OrderKeyOf(OrderKey order, const Entry& e);

// COLLECTIVE. Sorts `local` by key (ties: rank, then local order) and
// returns how many of its first entries belong to the global prefix that a
// limit allows: a candidate is taken when the candidates before it, over all
// ranks, number fewer than max_count and weigh less than max_volume (so the
// one that reaches a volume limit is the last taken — a watermark target is
// met, not missed by one file). No limits: everything.
size_t PrefixSelect(MPI_Comm comm, std::vector<Candidate>* local, std::optional<uint64_t> max_count,
                    std::optional<uint64_t> max_volume);

// ---- applying a policy ----------------------------------------------------------

// One file a rule took on this rank (RuleTaking), for CutToPolicy.
struct PolicyCandidate {
  int rule = 0;        // index into Policy::rules
  int64_t key = 0;     // OrderKeyOf(rule's order, e)
  uint64_t weight = 0;  // VolumeOf(rule's action, e)
};

struct PolicyCut {
  bool triggered = true;    // false: a trigger found usage below high (nothing kept)
  uint64_t to_free = 0;     // with a trigger: bytes to free to reach low
  std::vector<size_t> keep;  // indexes into the candidates, rule by rule, each rule's in its order
};

// COLLECTIVE. Cuts the candidates to what the policy allows: with a
// trigger, statvfs of its path (`fs_path` when it names none) on rank 0;
// below the high watermark nothing is kept; above it the budget is the bytes
// that bring usage down to the low watermark. Then, rule by rule in file
// order, each rule's candidates are ordered and cut by PrefixSelect to its
// max_count and max_volume — and, for a rule that frees space, to what is
// left of the budget, which its taken volume then reduces. Rules that do not
// free space (archive, recall) run only when triggered and are cut by their
// own limits alone. Errors: the trigger's statvfs, on every rank.
Status CutToPolicy(MPI_Comm comm, const Policy& p, const std::string& fs_path,
                   const std::vector<PolicyCandidate>& local, PolicyCut* cut);

// Pure, for PrefixSelect and its tests: with `before_count` / `before_volume`
// candidates ahead of `sorted` (all with the same key), how many of `sorted`
// are taken.
size_t TakeWithin(const std::vector<Candidate>& sorted, size_t from, size_t to, uint64_t before_count,
                  uint64_t before_volume, uint64_t max_count, uint64_t max_volume);

}  // namespace pdm::tools
