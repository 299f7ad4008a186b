// Little-endian byte packing for the small fixed layouts we persist (DM
// handles, regions and event lists in xattrs): explicit byte order so what
// one node writes every other node reads the same.
#pragma once

#include <cstdint>
#include <vector>

namespace pdm {

inline void PutLe(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

inline uint64_t GetLe(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

}  // namespace pdm
