// Path globs for --exclude and policy classes.
//
//   *        any run of characters except '/'
//   **       any run of characters, '/' included ("/scratch/**/core")
//   ?        one character except '/'
//   [abc] [a-z] [!a-z] [^a-z]   one character from (or not from) a set
//   \x       the character x itself
//
// A pattern without '/' is matched against the entry's name (last
// component), as find -name and rsync do, so `--exclude '*.keep'` works at
// every depth. A pattern with '/' is matched against the whole absolute path,
// so `/scratch/proj/**` names a subtree. Matching is byte-wise (no locale).
//
// Thread-safety: a Glob is an immutable value once made.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace pdm::tools {

class Glob {
 public:
  // InvalidArgument on an empty pattern, an unterminated '[' or a trailing '\'.
  static Result<Glob> Make(std::string_view pattern);

  // True when the entry at absolute path `path` matches.
  bool Matches(std::string_view path) const;
  const std::string& pattern() const { return pattern_; }

 private:
  explicit Glob(std::string p, bool whole) : pattern_(std::move(p)), whole_path_(whole) {}
  std::string pattern_;
  bool whole_path_;  // pattern has a '/': match the full path, else the name
};

// The matcher itself, exposed for tests: the whole of `text` against the whole
// of `pattern` with the rules above.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace pdm::tools
