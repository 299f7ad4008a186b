#include "tools/glob.h"

#include <vector>

namespace pdm::tools {
namespace {

// Matches one bracket expression at pattern[pi] ('[') against c. Returns the
// index just past ']' through *end, or false through *ok when malformed.
bool MatchClass(std::string_view p, size_t pi, char c, size_t* end, bool* ok) {
  size_t i = pi + 1;
  bool negate = false;
  if (i < p.size() && (p[i] == '!' || p[i] == '^')) {
    negate = true;
    ++i;
  }
  bool hit = false;
  bool first = true;
  while (i < p.size() && (first || p[i] != ']')) {
    first = false;
    char lo = p[i];
    if (lo == '\\' && i + 1 < p.size()) lo = p[++i];
    char hi = lo;
    if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      hi = p[i + 2];
      if (hi == '\\' && i + 3 < p.size()) hi = p[++i + 2];
      i += 2;
    }
    if (static_cast<unsigned char>(c) >= static_cast<unsigned char>(lo) &&
        static_cast<unsigned char>(c) <= static_cast<unsigned char>(hi))
      hit = true;
    ++i;
  }
  if (i >= p.size()) {
    *ok = false;
    return false;
  }
  *ok = true;
  *end = i + 1;
  return hit != negate;
}

// One literal-or-class step: does p[pi] match character c? Sets *next past it.
bool StepMatches(std::string_view p, size_t pi, char c, size_t* next, bool* malformed) {
  const char pc = p[pi];
  if (pc == '?') {
    *next = pi + 1;
    return c != '/';
  }
  if (pc == '[') {
    bool ok = true;
    const bool hit = MatchClass(p, pi, c, next, &ok);
    if (!ok) *malformed = true;
    return ok && hit && c != '/';
  }
  if (pc == '\\') {
    if (pi + 1 >= p.size()) {
      *malformed = true;
      return false;
    }
    *next = pi + 2;
    return p[pi + 1] == c;
  }
  *next = pi + 1;
  return pc == c;
}

// Patterns with only '*': the two-pointer algorithm with one backtrack point
// is exact here (a later star always dominates an earlier one), and it is the
// common case (--exclude '*.tmp'), so it stays allocation-free.
bool MatchSingleStars(std::string_view p, std::string_view t, bool* malformed) {
  size_t pi = 0, ti = 0;
  size_t star_p = std::string_view::npos, star_t = 0;
  while (ti < t.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star_p = ++pi;
      star_t = ti;
      continue;
    }
    size_t next = 0;
    if (pi < p.size() && StepMatches(p, pi, t[ti], &next, malformed)) {
      pi = next;
      ++ti;
      continue;
    }
    if (*malformed) return false;
    // Mismatch: the last star eats one more character, never a '/'.
    if (star_p != std::string_view::npos && t[star_t] != '/') {
      ti = ++star_t;
      pi = star_p;
      continue;
    }
    return false;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

// Patterns with '**': '*' and '**' backtrack points interact, so this is a
// memoised recursion over (pattern index, text index): O(|p| * |t|).
class StarStarMatcher {
 public:
  StarStarMatcher(std::string_view p, std::string_view t)
      : p_(p), t_(t), memo_((p.size() + 1) * (t.size() + 1), 0) {}
  bool Run(bool* malformed) {
    const bool r = At(0, 0);
    *malformed = malformed_;
    return r && !malformed_;
  }

 private:
  bool At(size_t pi, size_t ti) {
    char& m = memo_[pi * (t_.size() + 1) + ti];
    if (m != 0) return m == 1;
    const bool r = Compute(pi, ti);
    m = r ? 1 : 2;
    return r;
  }
  bool Compute(size_t pi, size_t ti) {
    if (pi == p_.size()) return ti == t_.size();
    if (p_[pi] == '*') {
      const bool dbl = pi + 1 < p_.size() && p_[pi + 1] == '*';
      const size_t after = pi + (dbl ? 2 : 1);
      // "**/" may match zero directories: "/a/**/b" matches "/a/b".
      if (dbl && after < p_.size() && p_[after] == '/' && At(after + 1, ti)) return true;
      for (size_t k = ti;; ++k) {
        if (At(after, k)) return true;
        if (k == t_.size() || (!dbl && t_[k] == '/')) return false;
      }
    }
    if (ti == t_.size()) return false;
    size_t next = 0;
    if (StepMatches(p_, pi, t_[ti], &next, &malformed_)) return At(next, ti + 1);
    return false;
  }

  std::string_view p_, t_;
  std::vector<char> memo_;  // 0 unknown, 1 match, 2 no match
  bool malformed_ = false;
};

bool Match(std::string_view p, std::string_view t, bool* malformed) {
  if (p.find("**") == std::string_view::npos) return MatchSingleStars(p, t, malformed);
  return StarStarMatcher(p, t).Run(malformed);
}

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view text) {
  bool malformed = false;
  return Match(pattern, text, &malformed) && !malformed;
}

Result<Glob> Glob::Make(std::string_view pattern) {
  if (pattern.empty()) return InvalidArgument("glob: empty pattern");
  // Validate brackets and escapes once, so Matches never meets a broken one.
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\') {
      if (i + 1 >= pattern.size()) return InvalidArgument("glob: trailing '\\' in '" + std::string(pattern) + "'");
      ++i;
    } else if (pattern[i] == '[') {
      size_t end = 0;
      bool ok = true;
      (void)MatchClass(pattern, i, 'a', &end, &ok);
      if (!ok) return InvalidArgument("glob: unterminated '[' in '" + std::string(pattern) + "'");
      i = end - 1;
    }
  }
  const bool whole = pattern.find('/') != std::string_view::npos;
  return Glob(std::string(pattern), whole);
}

bool Glob::Matches(std::string_view path) const {
  if (whole_path_) return GlobMatch(pattern_, path);
  const size_t slash = path.rfind('/');
  std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
  return GlobMatch(pattern_, name);
}

}  // namespace pdm::tools
