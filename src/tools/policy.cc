#include "tools/policy.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <limits>
#include <sstream>
#include <toml++/toml.h>

#include "common/posix.h"
#include "tools/mpi_util.h"
#include "tools/units.h"

namespace pdm::tools {

const char* ActionName(Action a) {
  switch (a) {
    case Action::kPurge: return "purge";
    case Action::kRelease: return "release";
    case Action::kMigrate: return "migrate";
    case Action::kArchive: return "archive";
    case Action::kRecall: return "recall";
  }
  return "?";
}

namespace {

// Errors name the file, the table and the key, so an admin finds the line.
Status Bad(const std::string& where, const std::string& what) { return InvalidArgument(where + ": " + what); }

// A string or a list of strings, as lists of one are common ("user = 'bob'").
Result<std::vector<std::string>> StringList(const toml::node& n, const std::string& where) {
  std::vector<std::string> out;
  if (auto s = n.value<std::string>()) {
    out.push_back(*s);
    return out;
  }
  const toml::array* a = n.as_array();
  if (a == nullptr) return Bad(where, "expected a string or a list of strings");
  for (const auto& el : *a) {
    auto s = el.value<std::string>();
    if (!s) return Bad(where, "expected a list of strings");
    out.push_back(*s);
  }
  return out;
}

Result<std::string> String(const toml::node& n, const std::string& where) {
  auto s = n.value<std::string>();
  if (!s) return Bad(where, "expected a string");
  return *s;
}

// Sizes may be written as "10G" or as a plain integer of bytes.
Result<uint64_t> SizeValue(const toml::node& n, const std::string& where) {
  if (auto i = n.value<int64_t>()) {
    if (*i < 0) return Bad(where, "negative");
    return static_cast<uint64_t>(*i);
  }
  auto s = n.value<std::string>();
  if (!s) return Bad(where, "expected a size (\"10G\" or an integer)");
  auto v = ParseSize(*s);
  if (!v.ok()) return Bad(where, v.status().message());
  return *v;
}

Result<int64_t> DurationValue(const toml::node& n, const std::string& where) {
  if (auto i = n.value<int64_t>()) return *i;
  auto s = n.value<std::string>();
  if (!s) return Bad(where, "expected a duration (\"30d\" or seconds)");
  auto v = ParseDuration(*s);
  if (!v.ok()) return Bad(where, v.status().message());
  return *v;
}

Result<double> PercentValue(const toml::node& n, const std::string& where) {
  if (auto d = n.value<double>()) {
    if (*d < 0 || *d > 100) return Bad(where, "out of range");
    return *d > 1 ? *d / 100 : *d;
  }
  auto s = n.value<std::string>();
  if (!s) return Bad(where, "expected a percentage (\"90%\")");
  auto v = ParsePercent(*s);
  if (!v.ok()) return Bad(where, v.status().message());
  return *v;
}

Status ParseClass(const toml::table& t, const std::string& where, PolicyClass* pc) {
  Criteria& c = pc->criteria;
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    const std::string at = where + "." + key;
    if (key == "name") {
      PDM_ASSIGN_OR_RETURN(pc->name, String(v, at));
    } else if (key == "path" || key == "exclude") {
      PDM_ASSIGN_OR_RETURN(auto globs, StringList(v, at));
      for (const auto& g : globs) {
        auto gl = Glob::Make(g);
        if (!gl.ok()) return Bad(at, gl.status().message());
        (key == "path" ? c.include : c.exclude).push_back(std::move(*gl));
      }
    } else if (key == "type") {
      PDM_ASSIGN_OR_RETURN(c.types, String(v, at));
      if (c.types.empty() || c.types.find_first_not_of("fdlpscb") != std::string::npos)
        return Bad(at, "letters from f d l p s c b");
    } else if (key == "larger_than") {
      PDM_ASSIGN_OR_RETURN(c.larger_than, SizeValue(v, at));
    } else if (key == "smaller_than") {
      PDM_ASSIGN_OR_RETURN(c.smaller_than, SizeValue(v, at));
    } else if (key == "older_than") {
      PDM_ASSIGN_OR_RETURN(c.older_than_s, DurationValue(v, at));
    } else if (key == "newer_than") {
      PDM_ASSIGN_OR_RETURN(c.newer_than_s, DurationValue(v, at));
    } else if (key == "by") {
      PDM_ASSIGN_OR_RETURN(auto s, String(v, at));
      auto f = ParseTimeField(s);
      if (!f.ok()) return Bad(at, f.status().message());
      c.by = *f;
    } else if (key == "user" || key == "group") {
      PDM_ASSIGN_OR_RETURN(auto names, StringList(v, at));
      for (const auto& n : names) {
        auto id = key == "user" ? ResolveUser(n) : ResolveGroup(n);
        if (!id.ok()) return Bad(at, id.status().message());
        (key == "user" ? c.uids : c.gids).push_back(*id);
      }
    } else if (key == "hsm_state") {
      PDM_ASSIGN_OR_RETURN(auto names, StringList(v, at));
      for (const auto& n : names) {
        auto h = ParseHsmClass(n);
        if (!h.ok()) return Bad(at, h.status().message());
        c.hsm.push_back(*h);
      }
    } else {
      return Bad(at, "unknown key");
    }
  }
  if (pc->name.empty()) return Bad(where, "a class needs a name");
  return Status::Ok();
}

Status ParseRule(const toml::table& t, const std::string& where, const std::vector<PolicyClass>& classes, Rule* r) {
  bool have_action = false;
  for (const auto& [k, v] : t) {
    const std::string key(k.str());
    const std::string at = where + "." + key;
    if (key == "name") {
      PDM_ASSIGN_OR_RETURN(r->name, String(v, at));
    } else if (key == "action") {
      PDM_ASSIGN_OR_RETURN(auto s, String(v, at));
      have_action = true;
      if (s == "purge") r->action = Action::kPurge;
      else if (s == "release") r->action = Action::kRelease;
      else if (s == "migrate") r->action = Action::kMigrate;
      else if (s == "archive") r->action = Action::kArchive;
      else if (s == "recall") r->action = Action::kRecall;
      else return Bad(at, "'" + s + "' is not purge, release, migrate, archive or recall");
    } else if (key == "class") {
      PDM_ASSIGN_OR_RETURN(auto names, StringList(v, at));
      for (const auto& n : names) {
        auto it = std::find_if(classes.begin(), classes.end(), [&](const PolicyClass& c) { return c.name == n; });
        if (it == classes.end()) return Bad(at, "no class named '" + n + "'");
        r->classes.push_back(static_cast<size_t>(it - classes.begin()));
      }
    } else if (key == "order") {
      PDM_ASSIGN_OR_RETURN(auto s, String(v, at));
      auto order = ParseOrderKey(s);
      if (!order.ok()) return Bad(at, order.status().message());
      r->order = *order;
    } else if (key == "max_count") {
      auto i = v.value<int64_t>();
      if (!i || *i < 0) return Bad(at, "expected a non-negative integer");
      r->max_count = static_cast<uint64_t>(*i);
    } else if (key == "max_volume") {
      PDM_ASSIGN_OR_RETURN(r->max_volume, SizeValue(v, at));
    } else {
      return Bad(at, "unknown key");
    }
  }
  if (r->name.empty()) return Bad(where, "a rule needs a name");
  if (!have_action) return Bad(where, "a rule needs an action");
  if (r->classes.empty()) return Bad(where, "a rule needs at least one class");
  return Status::Ok();
}

}  // namespace

Result<Policy> Policy::Parse(std::string_view text, const std::string& origin) {
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream os;
    os << origin << ":" << e.source().begin.line << ":" << e.source().begin.column << ": " << e.description();
    return InvalidArgument(os.str());
  }
  Policy p;
  // Classes first, whatever the order in the file, so rules can name them.
  if (const toml::node* n = root.get("class")) {
    const toml::array* a = n->as_array();
    if (a == nullptr) return Bad(origin, "'class' must be an array of tables ([[class]])");
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::table* t = (*a)[i].as_table();
      const std::string where = origin + ": class[" + std::to_string(i) + "]";
      if (t == nullptr) return Bad(where, "not a table");
      PolicyClass pc;
      PDM_RETURN_IF_ERROR(ParseClass(*t, where, &pc));
      for (const auto& other : p.classes)
        if (other.name == pc.name) return Bad(where, "duplicate class name '" + pc.name + "'");
      p.classes.push_back(std::move(pc));
    }
  }
  for (const auto& [k, v] : root) {
    const std::string key(k.str());
    if (key == "class") continue;
    if (key == "rule") {
      const toml::array* a = v.as_array();
      if (a == nullptr) return Bad(origin, "'rule' must be an array of tables ([[rule]])");
      for (size_t i = 0; i < a->size(); ++i) {
        const toml::table* t = (*a)[i].as_table();
        const std::string where = origin + ": rule[" + std::to_string(i) + "]";
        if (t == nullptr) return Bad(where, "not a table");
        Rule r;
        PDM_RETURN_IF_ERROR(ParseRule(*t, where, p.classes, &r));
        p.rules.push_back(std::move(r));
      }
    } else if (key == "trigger") {
      const toml::table* t = v.as_table();
      if (t == nullptr) return Bad(origin, "'trigger' must be a table");
      Trigger tr;
      bool have_high = false, have_low = false;
      for (const auto& [tk, tv] : *t) {
        const std::string tkey(tk.str());
        const std::string at = origin + ": trigger." + tkey;
        if (tkey == "path") {
          PDM_ASSIGN_OR_RETURN(tr.path, String(tv, at));
        } else if (tkey == "high") {
          PDM_ASSIGN_OR_RETURN(tr.high, PercentValue(tv, at));
          have_high = true;
        } else if (tkey == "low") {
          PDM_ASSIGN_OR_RETURN(tr.low, PercentValue(tv, at));
          have_low = true;
        } else {
          return Bad(at, "unknown key");
        }
      }
      if (!have_high || !have_low) return Bad(origin + ": trigger", "needs both high and low");
      if (tr.low > tr.high) return Bad(origin + ": trigger", "low is above high");
      p.trigger = tr;
    } else {
      return Bad(origin + ": " + key, "unknown table or key");
    }
  }
  if (p.rules.empty()) return Bad(origin, "no [[rule]]");
  return p;
}

Result<Policy> Policy::Load(const std::string& file) {
  std::ifstream in(file);
  if (!in) return NotFound("policy: cannot read " + file);
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), file);
}

int Policy::RuleFor(const Entry& e, int64_t now_ns) const {
  for (size_t r = 0; r < rules.size(); ++r)
    for (size_t c : rules[r].classes)
      if (Matches(classes[c].criteria, e, now_ns)) return static_cast<int>(r);
  return -1;
}

int Policy::RuleTaking(const Entry& e, int64_t now_ns, uint32_t actions) const {
  const int r = RuleFor(e, now_ns);
  if (r < 0) return -1;
  const Action a = rules[static_cast<size_t>(r)].action;
  if ((ActionBit(a) & actions) == 0 || !ActionApplies(a, e)) return -1;
  return r;
}

int Policy::FirstRuleNotIn(uint32_t actions) const {
  for (size_t r = 0; r < rules.size(); ++r)
    if ((ActionBit(rules[r].action) & actions) == 0) return static_cast<int>(r);
  return -1;
}

bool ActionApplies(Action a, const Entry& e) {
  if (a == Action::kPurge) return true;
  if (!e.is_file()) return false;  // the HSM manages regular files only
  const uint32_t f = e.hsm_flags;
  switch (a) {
    case Action::kPurge: return true;
    case Action::kRelease: return ClassOf(f) == HsmClass::kArchived && !(f & kHsmNoRelease);
    case Action::kMigrate: return !(f & (kHsmReleased | kHsmNoArchive | kHsmNoRelease));
    case Action::kArchive: {
      const HsmClass c = ClassOf(f);
      return c != HsmClass::kArchived && c != HsmClass::kReleased && !(f & (kHsmReleased | kHsmNoArchive));
    }
    case Action::kRecall: return (f & kHsmReleased) != 0;
  }
  return false;
}

uint64_t VolumeOf(Action a, const Entry& e) {
  return a == Action::kArchive || a == Action::kRecall ? e.size : e.allocated();
}

bool FreesSpace(Action a) { return a == Action::kPurge || a == Action::kRelease || a == Action::kMigrate; }

// ---- watermarks -----------------------------------------------------------

Result<FsUsage> StatFs(const std::string& path) {
  struct statvfs sv;
  if (statvfs(path.c_str(), &sv) != 0) return PosixError("statvfs", path, errno);
  FsUsage u;
  const uint64_t f = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
  u.size = uint64_t{sv.f_blocks} * f;
  u.used = (uint64_t{sv.f_blocks} - uint64_t{sv.f_bfree}) * f;
  u.avail = uint64_t{sv.f_bavail} * f;
  return u;
}

TriggerDecision Evaluate(const Trigger& t, const FsUsage& u) {
  TriggerDecision d;
  if (u.used + u.avail == 0 || u.used_fraction() < t.high) return d;
  d.run = true;
  // Target usage is low * (used + avail): the same denominator as Use%.
  const double target = t.low * static_cast<double>(u.used + u.avail);
  if (static_cast<double>(u.used) > target) d.bytes_to_free = u.used - static_cast<uint64_t>(target);
  return d;
}

// ---- ordering and limits -------------------------------------------------------

Result<OrderKey> ParseOrderKey(std::string_view s) {
  if (s == "none") return OrderKey::kNone;
  if (s == "atime") return OrderKey::kAtime;
  if (s == "mtime") return OrderKey::kMtime;
  if (s == "ctime") return OrderKey::kCtime;
  if (s == "size") return OrderKey::kSize;
  return InvalidArgument("'" + std::string(s) + "' is not none, atime, mtime, ctime or size");
}

int64_t OrderKeyOf(OrderKey order, const Entry& e) {
  switch (order) {
    case OrderKey::kNone: return 0;
    case OrderKey::kAtime: return e.atime_ns;
    case OrderKey::kMtime: return e.mtime_ns;
    case OrderKey::kCtime: return e.ctime_ns;
    case OrderKey::kSize:
      // Largest first: negate, saturating so the biggest sizes stay ordered.
      return e.size > uint64_t{std::numeric_limits<int64_t>::max()} ? std::numeric_limits<int64_t>::min()
                                                                    : -static_cast<int64_t>(e.size);
  }
  return 0;
}

size_t TakeWithin(const std::vector<Candidate>& sorted, size_t from, size_t to, uint64_t before_count,
                  uint64_t before_volume, uint64_t max_count, uint64_t max_volume) {
  size_t taken = 0;
  for (size_t i = from; i < to; ++i) {
    if (before_count >= max_count || before_volume >= max_volume) break;
    ++before_count;
    before_volume += sorted[i].weight;
    ++taken;
  }
  return taken;
}

size_t PrefixSelect(MPI_Comm comm, std::vector<Candidate>* local, std::optional<uint64_t> max_count,
                    std::optional<uint64_t> max_volume) {
  auto& v = *local;
  std::stable_sort(v.begin(), v.end(), [](const Candidate& a, const Candidate& b) { return a.key < b.key; });
  if (!max_count && !max_volume) return v.size();
  const uint64_t mc = max_count.value_or(std::numeric_limits<uint64_t>::max());
  const uint64_t mv = max_volume.value_or(std::numeric_limits<uint64_t>::max());
  // Prefix sums of weight, for "how much is at or below key K" in O(log n).
  std::vector<uint64_t> vol(v.size() + 1, 0);
  for (size_t i = 0; i < v.size(); ++i) vol[i + 1] = vol[i] + v[i].weight;
  auto upto = [&](int64_t k, uint64_t out[2]) {  // count, volume of key <= k, global
    const size_t n = static_cast<size_t>(
        std::upper_bound(v.begin(), v.end(), k, [](int64_t x, const Candidate& c) { return x < c.key; }) - v.begin());
    uint64_t in[2] = {n, vol[n]};
    MPI_Allreduce(in, out, 2, MPI_UINT64_T, MPI_SUM, comm);
  };
  auto overflows = [&](const uint64_t s[2]) { return s[0] >= mc || s[1] >= mv; };
  int64_t lo_key = v.empty() ? std::numeric_limits<int64_t>::max() : v.front().key;
  int64_t hi_key = v.empty() ? std::numeric_limits<int64_t>::min() : v.back().key;
  MPI_Allreduce(MPI_IN_PLACE, &lo_key, 1, MPI_INT64_T, MPI_MIN, comm);
  MPI_Allreduce(MPI_IN_PLACE, &hi_key, 1, MPI_INT64_T, MPI_MAX, comm);
  uint64_t all[2];
  upto(hi_key, all);
  if (all[0] == 0) return 0;
  if (!overflows(all)) return v.size();
  // Smallest key K whose "key <= K" prefix reaches a limit: every candidate
  // with a smaller key is taken, candidates with key K are taken in (rank,
  // local) order while the limits allow, larger keys are not taken.
  int64_t lo = lo_key, hi = hi_key;  // invariant: prefix(hi) overflows
  while (lo < hi) {
    const int64_t mid = lo + static_cast<int64_t>((static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo)) / 2);
    uint64_t s[2];
    upto(mid, s);
    if (overflows(s)) hi = mid;
    else lo = mid + 1;
  }
  const int64_t k = hi;
  uint64_t below[2] = {0, 0};
  if (k != std::numeric_limits<int64_t>::min()) upto(k - 1, below);
  const size_t first_tie = static_cast<size_t>(
      std::lower_bound(v.begin(), v.end(), k, [](const Candidate& c, int64_t x) { return c.key < x; }) - v.begin());
  const size_t end_tie = static_cast<size_t>(
      std::upper_bound(v.begin(), v.end(), k, [](int64_t x, const Candidate& c) { return x < c.key; }) - v.begin());
  uint64_t mine[2] = {end_tie - first_tie, vol[end_tie] - vol[first_tie]}, ahead[2] = {0, 0};
  MPI_Exscan(mine, ahead, 2, MPI_UINT64_T, MPI_SUM, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) ahead[0] = ahead[1] = 0;  // MPI_Exscan leaves rank 0 undefined
  return first_tie + TakeWithin(v, first_tie, end_tie, below[0] + ahead[0], below[1] + ahead[1], mc, mv);
}

// ---- applying a policy ----------------------------------------------------------

Status CutToPolicy(MPI_Comm comm, const Policy& p, const std::string& fs_path,
                   const std::vector<PolicyCandidate>& local, PolicyCut* cut) {
  *cut = PolicyCut{};
  std::optional<uint64_t> budget;
  if (p.trigger) {
    const std::string path = !p.trigger->path.empty() ? p.trigger->path : fs_path;
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    // One sample, taken by rank 0, so every rank cuts to the same budget.
    uint64_t u[3] = {0, 0, 0};
    Status st;
    if (rank == 0) {
      auto fs = StatFs(path);
      if (fs.ok()) {
        u[0] = fs->size;
        u[1] = fs->used;
        u[2] = fs->avail;
      } else {
        st = fs.status();
      }
    }
    PDM_RETURN_IF_ERROR(AgreeStatus(comm, st));
    MPI_Bcast(u, 3, MPI_UINT64_T, 0, comm);
    const TriggerDecision d = Evaluate(*p.trigger, FsUsage{u[0], u[1], u[2]});
    cut->triggered = d.run;
    cut->to_free = d.bytes_to_free;
    if (!d.run) return Status::Ok();
    budget = d.bytes_to_free;
  }
  for (size_t r = 0; r < p.rules.size(); ++r) {
    const Rule& rule = p.rules[r];
    std::vector<Candidate> c;
    for (size_t i = 0; i < local.size(); ++i)
      if (local[i].rule == static_cast<int>(r)) c.push_back(Candidate{local[i].key, local[i].weight, i});
    const bool frees = FreesSpace(rule.action);
    std::optional<uint64_t> max_volume = rule.max_volume;
    if (budget && frees) max_volume = std::min(max_volume.value_or(UINT64_MAX), *budget);
    const size_t take = PrefixSelect(comm, &c, rule.max_count, max_volume);
    uint64_t vol = 0;
    for (size_t i = 0; i < take; ++i) {
      vol += c[i].weight;
      cut->keep.push_back(c[i].index);
    }
    if (budget && frees) {
      const uint64_t got = SumAll(comm, vol);
      *budget = got >= *budget ? 0 : *budget - got;
    }
  }
  return Status::Ok();
}

}  // namespace pdm::tools
