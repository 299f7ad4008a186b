#include "hsm/checksum.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <new>
#include <utility>
#include <vector>

namespace pdm::hsm {
namespace {

Checksum128 FromXxh(XXH128_hash_t h) { return Checksum128{h.high64, h.low64}; }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string Checksum128::Hex() const {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH128_hash_t{lo, hi});
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    out[2 * i] = kDigits[canon.digest[i] >> 4];
    out[2 * i + 1] = kDigits[canon.digest[i] & 0xf];
  }
  return out;
}

Result<Checksum128> Checksum128::FromHex(std::string_view hex) {
  if (hex.size() != 32) return InvalidArgument("checksum: want 32 hex digits, got " + std::to_string(hex.size()));
  XXH128_canonical_t canon;
  for (size_t i = 0; i < 16; ++i) {
    int a = HexDigit(hex[2 * i]), b = HexDigit(hex[2 * i + 1]);
    if (a < 0 || b < 0) return InvalidArgument("checksum: not a hex digit in '" + std::string(hex) + "'");
    canon.digest[i] = static_cast<unsigned char>(a << 4 | b);
  }
  return FromXxh(XXH128_hashFromCanonical(&canon));
}

Checksum128 Xxh3_128(std::span<const uint8_t> data) {
  return FromXxh(XXH3_128bits(data.data(), data.size()));
}

Hasher::Hasher() : state_(XXH3_createState()) {
  // XXH3_createState only fails when malloc does; treat it like operator new.
  if (state_ == nullptr) throw std::bad_alloc();
  XXH3_128bits_reset(state_);
}

Hasher::~Hasher() {
  if (state_ != nullptr) XXH3_freeState(state_);
}

Hasher::Hasher(Hasher&& o) noexcept : state_(std::exchange(o.state_, nullptr)) {}

Hasher& Hasher::operator=(Hasher&& o) noexcept {
  if (this != &o) {
    if (state_ != nullptr) XXH3_freeState(state_);
    state_ = std::exchange(o.state_, nullptr);
  }
  return *this;
}

void Hasher::Update(std::span<const uint8_t> data) {
  // A moved-from hasher has no state; using it is a caller bug.
  if (state_ == nullptr) std::abort();
  XXH3_128bits_update(state_, data.data(), data.size());
}

Checksum128 Hasher::Digest() const {
  if (state_ == nullptr) std::abort();
  return FromXxh(XXH3_128bits_digest(state_));
}

void Hasher::Reset() {
  if (state_ == nullptr) std::abort();
  XXH3_128bits_reset(state_);
}

Checksum128 ObjectChecksum(std::span<const Checksum128> chunk_sums) {
  // Canonical (big-endian) forms, so the value does not depend on the
  // byte order of the node that computes it.
  std::vector<unsigned char> buf(chunk_sums.size() * sizeof(XXH128_canonical_t));
  for (size_t i = 0; i < chunk_sums.size(); ++i) {
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH128_hash_t{chunk_sums[i].lo, chunk_sums[i].hi});
    std::copy(std::begin(canon.digest), std::end(canon.digest), buf.begin() + i * sizeof(canon));
  }
  return FromXxh(XXH3_128bits(buf.data(), buf.size()));
}

}  // namespace pdm::hsm
