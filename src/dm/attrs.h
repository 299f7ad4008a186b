// Persistent DM state of one file, kept in trusted.* extended attributes so
// that it lives with the inode on every node and survives restarts:
//
//   trusted.pdm.dm.<name>  DM attributes (dm_set_dmattr & co.), value as given
//   trusted.pdm.regions    managed regions (dm_set_region), versioned binary
//   trusted.pdm.events     per-object event list (dm_set_eventlist), versioned
//   trusted.pdm.rod        return-on-destroy attribute name
//                          (dm_set_return_on_destroy; set on the fs root)
//
// Everything operates on an fd, so callers can use fds from dm::Open on a
// handle. The fd must not be O_PATH (the kernel refuses fsetxattr on O_PATH
// fds); open symlinks/special files by path with the *xattr syscalls instead
// (trusted.* on symlinks is allowed for root).
//
// Timestamps: setting or removing an xattr never changes mtime or atime; the
// kernel always updates ctime, so XDSM's "setdtime = false" cannot be honoured
// on Linux (ctime doubles as dtime, as in XFS's DM_CONFIG_DTIME_OVERLOAD).
//
// Corruption: regions, events and rod values are validated on read; a value
// that does not decode is DataLoss(EIO), never a guess.
//
// Requires CAP_SYS_ADMIN (trusted.* namespace). Thread-safety: reentrant;
// concurrent writers of the same attribute race at the file system (last
// writer wins), so callers serialise with DM rights.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pdm::dm {

// ---- DM attribute names ---------------------------------------------------

// dm_attrname_t: 8 bytes, the name is the bytes up to the first NUL (all 8 if
// none). Never empty.
inline constexpr size_t kAttrNameSize = 8;

class AttrName {
 public:
  // From the 8-byte dm_attrname_t. Empty name (first byte NUL) → EINVAL.
  static Result<AttrName> FromBytes(std::span<const uint8_t, kAttrNameSize> raw);
  // From a string of 1..8 non-NUL bytes; anything else → EINVAL.
  static Result<AttrName> FromString(std::string_view s);

  std::string_view str() const { return {chars_.data(), len_}; }
  // Back to dm_attrname_t form: the name, NUL-padded to 8 bytes.
  std::array<uint8_t, kAttrNameSize> ToBytes() const;
  friend bool operator==(const AttrName& a, const AttrName& b) { return a.str() == b.str(); }
  friend bool operator<(const AttrName& a, const AttrName& b) { return a.str() < b.str(); }

 private:
  AttrName() = default;
  std::array<char, kAttrNameSize> chars_{};
  size_t len_ = 0;
};

inline constexpr std::string_view kDmAttrPrefix = "trusted.pdm.dm.";
inline constexpr std::string_view kRegionsXattr = "trusted.pdm.regions";
inline constexpr std::string_view kEventsXattr = "trusted.pdm.events";
inline constexpr std::string_view kRodXattr = "trusted.pdm.rod";

// Largest DM attribute value accepted (DM_CONFIG_MAX_ATTRIBUTE_SIZE). Chosen
// so the value fits in one ext4 xattr block next to the other pdm.* and
// security.* attributes; file systems with larger xattrs could raise it, but
// the advertised limit must hold everywhere a file may live.
inline constexpr size_t kMaxAttrSize = 2048;

// ---- DM attributes ----------------------------------------------------------

// Creates or replaces the attribute. value.size() > kMaxAttrSize → E2BIG. An
// empty value is a valid, present attribute.
Status SetDmAttr(int fd, const AttrName& name, std::span<const uint8_t> value);

// Copies the value into buf and sets *needed to its length. If buf is too
// small: InvalidArgument(E2BIG), *needed still set, buf contents unspecified
// (the dm_get_dmattr buflen/rlenp contract). Absent attribute → NotFound(ENOENT)
// and *needed untouched.
Status GetDmAttr(int fd, const AttrName& name, std::span<uint8_t> buf, size_t* needed);
// The whole value. Absent → NotFound(ENOENT).
Result<std::vector<uint8_t>> GetDmAttr(int fd, const AttrName& name);

// Absent → NotFound(ENOENT).
Status RemoveDmAttr(int fd, const AttrName& name);

struct DmAttr {
  AttrName name;
  std::vector<uint8_t> value;
};
// Every DM attribute of the file, sorted by name. Other xattrs are ignored;
// a trusted.pdm.dm.* xattr whose suffix is not a valid name is skipped.
Result<std::vector<DmAttr>> GetAllDmAttrs(int fd);

// ---- managed regions ---------------------------------------------------------

inline constexpr uint32_t kRegionRead = 1;      // DM_REGION_READ
inline constexpr uint32_t kRegionWrite = 2;     // DM_REGION_WRITE
inline constexpr uint32_t kRegionTruncate = 4;  // DM_REGION_TRUNCATE
inline constexpr uint32_t kRegionAllFlags = kRegionRead | kRegionWrite | kRegionTruncate;
// DM_CONFIG_MAX_MANAGED_REGIONS; keeps the encoded list within one xattr block.
inline constexpr size_t kMaxRegions = 64;

struct Region {
  uint64_t offset = 0;
  uint64_t size = 0;  // 0 = from offset to end of file, however the file grows
  uint32_t flags = 0;
  friend bool operator==(const Region&, const Region&) = default;
};

// True when the access [off, off+len) (len 0: to the end) touches r.
bool Overlaps(const Region& r, uint64_t off, uint64_t len);

// Replaces the whole list (empty list removes the xattr). Flags outside
// kRegionAllFlags or offset + size overflowing u64 → EINVAL; more than
// kMaxRegions → E2BIG. Regions are stored as given (no merging), so
// GetRegions returns exactly what was set.
Status SetRegions(int fd, std::span<const Region> regions);
// The stored list; no xattr → empty. Corrupt value → DataLoss(EIO).
Result<std::vector<Region>> GetRegions(int fd);

// Encoding, exposed for tests and for tools that inspect raw xattrs.
std::vector<uint8_t> EncodeRegions(std::span<const Region> regions);
Result<std::vector<Region>> DecodeRegions(std::span<const uint8_t> raw);

// True if some byte of the access [off, off + len) lies in a region carrying
// `flag`, i.e. the access must generate that data event. len 0 means "from off
// to end of file" (truncation to off touches everything beyond it).
bool RegionCovers(const std::vector<Region>& regions, uint64_t off, uint64_t len, uint32_t flag);

// ---- per-object event list -----------------------------------------------

// Bit i set = event type i enabled (libdmapi maps dm_eventtype_t numbers).
// Mask 0 removes the xattr.
Status SetEventList(int fd, uint64_t mask);
// No xattr → 0. Corrupt value → DataLoss(EIO).
Result<uint64_t> GetEventList(int fd);

// ---- return-on-destroy --------------------------------------------------------

// Sets (name) or clears (nullopt) the file system's return-on-destroy
// attribute name. Call on an fd of the file system root: the setting is per
// file system, and the root is the one inode every node can find.
Status SetReturnOnDestroy(int fd, const std::optional<AttrName>& name);
// nullopt when not set. Corrupt value → DataLoss(EIO).
Result<std::optional<AttrName>> GetReturnOnDestroy(int fd);

}  // namespace pdm::dm
