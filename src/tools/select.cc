#include "tools/select.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>

namespace pdm::tools {

Result<TimeField> ParseTimeField(std::string_view s) {
  if (s == "atime") return TimeField::kAtime;
  if (s == "mtime") return TimeField::kMtime;
  if (s == "ctime") return TimeField::kCtime;
  return InvalidArgument("time field: '" + std::string(s) + "' is not atime, mtime or ctime");
}

const char* TimeFieldName(TimeField f) {
  switch (f) {
    case TimeField::kAtime: return "atime";
    case TimeField::kMtime: return "mtime";
    case TimeField::kCtime: return "ctime";
  }
  return "?";
}

int64_t TimeOf(const Entry& e, TimeField f) {
  switch (f) {
    case TimeField::kAtime: return e.atime_ns;
    case TimeField::kMtime: return e.mtime_ns;
    case TimeField::kCtime: return e.ctime_ns;
  }
  return 0;
}

Result<ProtectSet> ProtectSet::Load(const std::string& file) {
  std::ifstream in(file);
  if (!in) return NotFound("protect list: cannot read " + file);
  ProtectSet set;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    set.Add(line);
  }
  return set;
}

void ProtectSet::Add(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  paths_.insert(std::move(path));
}

bool ProtectSet::Covers(std::string_view path) const {
  if (paths_.empty()) return false;
  // Walk up the ancestors: depth lookups, no allocation beyond the key.
  std::string key(path);
  for (;;) {
    if (paths_.count(key)) return true;
    const size_t slash = key.rfind('/');
    if (slash == std::string::npos || slash == 0) return slash == 0 && paths_.count("/");
    key.resize(slash);
  }
}

namespace {

// Age limits are seconds (ParseDuration allows up to ~9.2e18) and ages are
// nanoseconds: a limit past int64 nanoseconds (~292 years) saturates, so
// "--older-than 1000y" selects nothing instead of overflowing.
int64_t SecondsToNs(int64_t s) {
  int64_t ns = 0;
  if (__builtin_mul_overflow(s, int64_t{1000000000}, &ns))
    return s < 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max();
  return ns;
}

// now - t, saturated: t may be a saturated catalog time (entry.cc).
int64_t AgeNs(int64_t now_ns, int64_t t_ns) {
  int64_t age = 0;
  if (__builtin_sub_overflow(now_ns, t_ns, &age))
    return t_ns < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  return age;
}

}  // namespace

bool Matches(const Criteria& c, const Entry& e, int64_t now_ns) {
  if (c.types.find(e.type) == std::string::npos) return false;
  if (c.larger_than && !(e.size > *c.larger_than)) return false;
  if (c.smaller_than && !(e.size < *c.smaller_than)) return false;
  if (c.older_than_s || c.newer_than_s) {
    const int64_t age_ns = AgeNs(now_ns, TimeOf(e, c.by));
    if (c.older_than_s && !(age_ns > SecondsToNs(*c.older_than_s))) return false;
    if (c.newer_than_s && !(age_ns < SecondsToNs(*c.newer_than_s))) return false;
  }
  if (!c.uids.empty() && std::find(c.uids.begin(), c.uids.end(), e.uid) == c.uids.end()) return false;
  if (!c.gids.empty() && std::find(c.gids.begin(), c.gids.end(), e.gid) == c.gids.end()) return false;
  if (!c.hsm.empty() && std::find(c.hsm.begin(), c.hsm.end(), ClassOf(e.hsm_flags)) == c.hsm.end()) return false;
  if (!c.include.empty() &&
      std::none_of(c.include.begin(), c.include.end(), [&](const Glob& g) { return g.Matches(e.path); }))
    return false;
  for (const auto& g : c.exclude)
    if (g.Matches(e.path)) return false;
  return true;
}

bool Prunes(const Criteria& c, const ProtectSet& protect, const Entry& dir) {
  for (const auto& g : c.exclude)
    if (g.Matches(dir.path)) return true;
  return protect.Covers(dir.path);
}

namespace {

std::optional<uint32_t> AsNumber(std::string_view s) {
  uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

Result<uint32_t> ResolveUser(std::string_view name_or_id) {
  if (auto n = AsNumber(name_or_id)) return *n;
  struct passwd pw, *out = nullptr;
  char buf[4096];
  std::string name(name_or_id);
  if (getpwnam_r(name.c_str(), &pw, buf, sizeof buf, &out) != 0 || out == nullptr)
    return NotFound("no such user: " + name);
  return static_cast<uint32_t>(pw.pw_uid);
}

Result<uint32_t> ResolveGroup(std::string_view name_or_id) {
  if (auto n = AsNumber(name_or_id)) return *n;
  struct group gr, *out = nullptr;
  char buf[4096];
  std::string name(name_or_id);
  if (getgrnam_r(name.c_str(), &gr, buf, sizeof buf, &out) != 0 || out == nullptr)
    return NotFound("no such group: " + name);
  return static_cast<uint32_t>(gr.gr_gid);
}

std::string UserName(uint32_t uid) {
  struct passwd pw, *out = nullptr;
  char buf[4096];
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &out) == 0 && out != nullptr) return pw.pw_name;
  return std::to_string(uid);
}

}  // namespace pdm::tools
