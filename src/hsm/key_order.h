// The order of archive objects that a bulk recall should read them in, by
// key alone. Header-only: the tools (built with or without the HSM) and
// pdm_prestage both sort by it.
//
// Keys are "<fsid hex>/<ino>.<igen>/v<ver>" (hsm::MakeObjectKey, the same
// for both back ends), compared as numbers, so inode 10 follows inode 9 (as
// strings "10.1" < "9.1") and one file's versions stay together. Inode order
// is creation order on the file systems we manage: the order a tree was
// written and archived in. A key of any other form sorts after those, as a
// string, and no key at all (no copy) last.
#pragma once

#include <cstdio>
#include <string>

namespace pdm::hsm {

namespace key_order_internal {
struct Parsed {
  int form = 2;  // 0: an HSM key, 1: another key, 2: none
  unsigned long long fsid = 0, ino = 0, ver = 0;
  unsigned igen = 0;
};
inline Parsed Parse(const std::string& key) {
  Parsed k;
  if (key.empty()) return k;
  k.form = 1;
  int used = 0;
  if (std::sscanf(key.c_str(), "%16llx/%llu.%u/v%llu%n", &k.fsid, &k.ino, &k.igen, &k.ver, &used) == 4 &&
      static_cast<size_t>(used) == key.size())
    k.form = 0;
  return k;
}
}  // namespace key_order_internal

inline bool ObjectKeyLess(const std::string& key_a, const std::string& key_b) {
  const auto a = key_order_internal::Parse(key_a), b = key_order_internal::Parse(key_b);
  if (a.form != b.form) return a.form < b.form;
  if (a.form == 0) {
    if (a.fsid != b.fsid) return a.fsid < b.fsid;
    if (a.ino != b.ino) return a.ino < b.ino;
    if (a.igen != b.igen) return a.igen < b.igen;
    if (a.ver != b.ver) return a.ver < b.ver;
  }
  return key_a < key_b;
}

}  // namespace pdm::hsm
