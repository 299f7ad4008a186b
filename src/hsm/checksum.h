// Checksums of archive data: XXH3-128 (libxxhash), per chunk and per object.
//
// Objects move in chunks (ObjectManifest::chunk_size, 64 MiB by default) and
// several workers in different processes on different nodes hash their own
// chunks at the same time. A single streaming hash over the whole object
// would force the chunks through one hasher in file order, i.e. serialise the
// very movement we parallelise. So each chunk carries its own XXH3-128, and
// the object checksum is XXH3-128 over the list of chunk checksums in index
// order (each in canonical 16-byte big-endian form). The coordinator computes
// it from the chunk checksums alone, without reading data again; it still
// binds every byte, the chunk boundaries and the chunk order, and it is what
// the file's HSM state (state.h) records.
//
// Hex form: 32 lower-case hex digits of the canonical (big-endian) hash, the
// same text `xxhsum -H2` (xxh128sum) prints for the chunk's bytes, so a chunk
// can be checked with plain tools.
//
// Thread-safety: Checksum128 is a value; a Hasher belongs to one thread at a
// time; the free functions are reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

struct XXH3_state_s;  // libxxhash's streaming state (opaque here)

namespace pdm::hsm {

struct Checksum128 {
  uint64_t hi = 0;  // high 64 bits of XXH128_hash_t
  uint64_t lo = 0;  // low 64 bits

  // 32 lower-case hex digits, canonical big-endian order.
  std::string Hex() const;
  // Inverse of Hex(). Anything but exactly 32 hex digits → InvalidArgument.
  static Result<Checksum128> FromHex(std::string_view hex);
  friend bool operator==(const Checksum128&, const Checksum128&) = default;
};

// One-shot XXH3-128 (seed 0) of data.
Checksum128 Xxh3_128(std::span<const uint8_t> data);

// Streaming XXH3-128 (seed 0): Update in any split gives the one-shot value.
// Move-only; owns the libxxhash state.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(Hasher&& o) noexcept;
  Hasher& operator=(Hasher&& o) noexcept;
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(std::span<const uint8_t> data);
  // Checksum of everything updated so far; the hasher can keep going.
  Checksum128 Digest() const;
  // Back to the empty state.
  void Reset();

 private:
  XXH3_state_s* state_ = nullptr;
};

// The object checksum: XXH3-128 over the canonical forms of chunk_sums in the
// given (index) order. An object with no chunks (empty file) hashes the empty
// input.
Checksum128 ObjectChecksum(std::span<const Checksum128> chunk_sums);

}  // namespace pdm::hsm
