// Per-file HSM state: what the HSM knows about one file, kept with the file in
// the DM attribute "pdmhsm" (xattr trusted.pdm.dm.pdmhsm, through
// dm::SetDmAttr / dm::GetDmAttr, so any DMAPI client sees it with
// dm_get_dmattr). Root-only (trusted.*), so users cannot forge it.
//
// Value: compact JSON, at most dm::kMaxAttrSize (2048) bytes, e.g.
//   {"v":1,"flags":["exists","archived","released"],"archive":1,
//    "key":"2a0000000000fd01/1234.5678/v3","size":1048576,
//    "mtime_ns":1700000000123456789,"sum":"<32 hex>","ver":3}
// Keys: v (schema version, 1), flags (names below, any order, no repeats),
// archive (archive id, u32), key (object key in that archive), size and
// mtime_ns (the file's size and mtime when the archive copy was taken: the
// copy is current only while both still match), sum (Checksum128::Hex of the
// object checksum, see checksum.h), ver (data version of the archive copy,
// incremented by every archive). Unknown keys are ignored (later additive
// fields); a missing or mistyped known key, an unknown flag or version, or an
// inconsistent combination (see Validate) is DataLoss(EIO): never a guess.
// docs/hsm-archive.md has the schema.
//
// Flags, as Lustre HSM users know them (lfs hsm_state):
//   exists     an archive copy (possibly partial or old) exists for the file
//   archived   the archive copy is complete and verified
//   released   the file's data has been punched out; reads must recall
//   dirty      the file was written after its archive copy was taken
//   lost       the archive copy is gone or corrupt (a recall failed with EIO)
//   norelease  an administrator forbids releasing the file
//   noarchive  an administrator forbids archiving the file
//
// Thread-safety: FileState is a value; ReadState/WriteState are reentrant but
// concurrent writers of one file race (last writer wins), so callers hold DM
// rights on the file (the coordinator's token) around read-modify-write.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "hsm/checksum.h"

namespace pdm::hsm {

// The DM attribute name (dm_attrname_t, 8 bytes max).
inline constexpr std::string_view kStateAttrName = "pdmhsm";
inline constexpr int kStateVersion = 1;

enum Flag : uint32_t {
  kExists = 1u << 0,
  kArchived = 1u << 1,
  kReleased = 1u << 2,
  kDirty = 1u << 3,
  kLost = 1u << 4,
  kNoRelease = 1u << 5,
  kNoArchive = 1u << 6,
};
inline constexpr uint32_t kAllFlags = (1u << 7) - 1;

struct FileState {
  uint32_t flags = 0;       // Flag bits
  uint32_t archive_id = 0;  // 0 = none (never archived)
  std::string key;          // object key; empty when no copy exists
  uint64_t size = 0;        // file size when the copy was taken
  int64_t mtime_ns = 0;     // file mtime when the copy was taken
  Checksum128 sum;          // object checksum of the copy
  uint64_t ver = 0;         // data version of the copy (0 = never archived)

  bool Has(uint32_t f) const { return (flags & f) == f; }
  void Set(uint32_t f) { flags |= f; }
  void Clear(uint32_t f) { flags &= ~f; }
  friend bool operator==(const FileState&, const FileState&) = default;
};

// Consistency rules that Encode enforces (InvalidArgument) and Decode checks
// (DataLoss): flags within kAllFlags; archived or released or lost → exists;
// released → archived (a file is released only with a verified copy; a
// released copy that later turns out lost keeps archived|released|lost so the
// admin sees what the stub expected); exists → non-empty key and
// archive_id != 0; the key at most 512 bytes. Returns OK or InvalidArgument
// naming the broken rule.
Status Validate(const FileState& s);

// Compact JSON as above. Validate fails → InvalidArgument; longer than
// dm::kMaxAttrSize → InvalidArgument(E2BIG).
Result<std::string> Encode(const FileState& s);
// Inverse of Encode. Malformed in any way → DataLoss(EIO).
Result<FileState> Decode(std::span<const uint8_t> raw);

// The state of the open file fd (not O_PATH). No attribute → a default
// FileState (no flags): a file the HSM never touched. Corrupt → DataLoss(EIO).
Result<FileState> ReadState(int fd);
// Writes the attribute and, when sync, fsyncs fd so the state is durable
// before the caller's next step (blueprint section 5: the archived state is
// durable before any hole is punched). A default state (flags 0, no key)
// removes the attribute instead.
Status WriteState(int fd, const FileState& s, bool sync = true);

// True when the copy described by s is still current for a file with stat st:
// s has exists, and st's size and mtime equal s.size / s.mtime_ns. A file
// that is not current must be treated as dirty.
bool CopyIsCurrent(const FileState& s, const struct stat& st);

// Flag names, comma separated, in the order of the enum ("exists,archived");
// "" for none.
std::string FlagsString(uint32_t flags);
// One flag from its name ("released" → kReleased); unknown → InvalidArgument.
Result<uint32_t> ParseFlag(std::string_view name);
// Names of the set flags, in enum order.
std::vector<std::string> FlagNames(uint32_t flags);

// For `pdm-state --json`: {"flags":[...],"archive":N,"key":"...","size":N,
// "mtime_ns":N,"sum":"...","ver":N}; the same keys as the attribute minus v.
nlohmann::json ToJson(const FileState& s);

}  // namespace pdm::hsm
