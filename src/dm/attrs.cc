#include "common/le.h"
#include "dm/attrs.h"

#include <sys/xattr.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/posix.h"

namespace pdm::dm {

bool Overlaps(const Region& r, uint64_t off, uint64_t len) {
  const uint64_t end = len == 0 ? UINT64_MAX : off + len;
  const uint64_t rend = r.size == 0 ? UINT64_MAX : r.offset + r.size;
  return r.offset < end && off < rend;
}

namespace {

// ---- little-endian framing shared by the pdm.* binary values ---------------
//
// Every binary value is  magic u32 | version u8 | payload | XXH32(all before) u32.
// The checksum makes "garbage that happens to have the right length" an
// error too, not just wrong lengths.

constexpr uint32_t kRegionsMagic = 0x524D4450;  // "PDMR"
constexpr uint32_t kEventsMagic = 0x454D4450;   // "PDME"
constexpr uint8_t kFormatVersion = 1;
constexpr size_t kFrameOverhead = 4 + 1 + 4;
constexpr size_t kRegionRecord = 8 + 8 + 4 + 4;  // offset, size, flags, reserved


std::vector<uint8_t> Frame(uint32_t magic, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out;
  out.reserve(kFrameOverhead + payload.size());
  PutLe(out, magic, 4);
  out.push_back(kFormatVersion);
  out.insert(out.end(), payload.begin(), payload.end());
  PutLe(out, XXH32(out.data(), out.size(), 0), 4);
  return out;
}

// The payload of a framed value, or DataLoss naming the xattr.
Result<std::span<const uint8_t>> Unframe(std::span<const uint8_t> raw, uint32_t magic, std::string_view what) {
  auto corrupt = [&](std::string_view why) { return DataLoss(std::string(what) + " corrupt: " + std::string(why)); };
  if (raw.size() < kFrameOverhead) return corrupt("too short");
  if (GetLe(raw.data(), 4) != magic) return corrupt("bad magic");
  if (raw[4] != kFormatVersion) return corrupt("unknown version");
  size_t body = raw.size() - 4;
  if (GetLe(raw.data() + body, 4) != XXH32(raw.data(), body, 0)) return corrupt("checksum mismatch");
  return raw.subspan(5, body - 5);
}

// ---- xattr syscalls ---------------------------------------------------------

// The whole value, nullopt if absent. Retries when the value grows between the
// size query and the read.
Result<std::optional<std::vector<uint8_t>>> ReadXattr(int fd, const std::string& name) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    ssize_t n = ::fgetxattr(fd, name.c_str(), nullptr, 0);
    if (n < 0) {
      if (errno == ENODATA) return std::optional<std::vector<uint8_t>>();
      return PosixError("fgetxattr", name, errno);
    }
    std::vector<uint8_t> v(static_cast<size_t>(n));
    if (n == 0) return std::optional<std::vector<uint8_t>>(std::move(v));
    ssize_t m = ::fgetxattr(fd, name.c_str(), v.data(), v.size());
    if (m >= 0) {
      v.resize(static_cast<size_t>(m));
      return std::optional<std::vector<uint8_t>>(std::move(v));
    }
    if (errno == ENODATA) return std::optional<std::vector<uint8_t>>();
    if (errno != ERANGE) return PosixError("fgetxattr", name, errno);
  }
  return Unavailable("fgetxattr(" + name + "): value keeps changing size");
}

Status WriteXattr(int fd, const std::string& name, std::span<const uint8_t> value) {
  if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) != 0) return PosixError("fsetxattr", name, errno);
  return Status::Ok();
}

// Removing an absent pdm.* value is success: "set to nothing" is idempotent.
Status ClearXattr(int fd, const std::string& name) {
  if (::fremovexattr(fd, name.c_str()) != 0 && errno != ENODATA) return PosixError("fremovexattr", name, errno);
  return Status::Ok();
}

std::string DmXattrName(const AttrName& n) {
  std::string s(kDmAttrPrefix);
  s += n.str();
  return s;
}

}  // namespace

// ---- AttrName ---------------------------------------------------------------

Result<AttrName> AttrName::FromBytes(std::span<const uint8_t, kAttrNameSize> raw) {
  size_t len = 0;
  while (len < kAttrNameSize && raw[len] != 0) ++len;
  if (len == 0) return InvalidArgument("DM attribute name is empty");
  AttrName n;
  std::memcpy(n.chars_.data(), raw.data(), len);
  n.len_ = len;
  return n;
}

Result<AttrName> AttrName::FromString(std::string_view s) {
  if (s.empty()) return InvalidArgument("DM attribute name is empty");
  if (s.size() > kAttrNameSize) return InvalidArgument("DM attribute name longer than 8 bytes");
  if (s.find('\0') != std::string_view::npos) return InvalidArgument("DM attribute name contains NUL");
  AttrName n;
  std::memcpy(n.chars_.data(), s.data(), s.size());
  n.len_ = s.size();
  return n;
}

std::array<uint8_t, kAttrNameSize> AttrName::ToBytes() const {
  std::array<uint8_t, kAttrNameSize> out{};
  std::memcpy(out.data(), chars_.data(), len_);
  return out;
}

// ---- DM attributes ----------------------------------------------------------

Status SetDmAttr(int fd, const AttrName& name, std::span<const uint8_t> value) {
  if (value.size() > kMaxAttrSize)
    return InvalidArgument("DM attribute " + std::string(name.str()) + " larger than kMaxAttrSize", E2BIG);
  return WriteXattr(fd, DmXattrName(name), value);
}

Status GetDmAttr(int fd, const AttrName& name, std::span<uint8_t> buf, size_t* needed) {
  const std::string x = DmXattrName(name);
  for (int attempt = 0; attempt < 8; ++attempt) {
    // With an empty buffer, ask only for the size (a 0-size fgetxattr never
    // copies, whatever the pointer).
    ssize_t n = ::fgetxattr(fd, x.c_str(), buf.empty() ? nullptr : buf.data(), buf.size());
    if (n >= 0) {
      *needed = static_cast<size_t>(n);
      if (buf.empty() && n > 0) return InvalidArgument("DM attribute " + x + ": buffer too small", E2BIG);
      return Status::Ok();
    }
    if (errno == ENODATA) return NotFound("DM attribute " + x + " not set");
    if (errno != ERANGE) return PosixError("fgetxattr", x, errno);
    ssize_t size = ::fgetxattr(fd, x.c_str(), nullptr, 0);
    if (size < 0) {
      if (errno == ENODATA) return NotFound("DM attribute " + x + " not set");
      return PosixError("fgetxattr", x, errno);
    }
    // The value may have shrunk between the two calls; then just read again.
    if (static_cast<size_t>(size) > buf.size()) {
      *needed = static_cast<size_t>(size);
      return InvalidArgument("DM attribute " + x + ": buffer too small", E2BIG);
    }
  }
  return Unavailable("fgetxattr(" + x + "): value keeps changing size");
}

Result<std::vector<uint8_t>> GetDmAttr(int fd, const AttrName& name) {
  const std::string x = DmXattrName(name);
  PDM_ASSIGN_OR_RETURN(auto v, ReadXattr(fd, x));
  if (!v) return NotFound("DM attribute " + x + " not set");
  return std::move(*v);
}

Status RemoveDmAttr(int fd, const AttrName& name) {
  const std::string x = DmXattrName(name);
  if (::fremovexattr(fd, x.c_str()) == 0) return Status::Ok();
  // ENODATA is how Linux says "no such xattr"; DMAPI says ENOENT.
  if (errno == ENODATA) return NotFound("DM attribute " + x + " not set");
  return PosixError("fremovexattr", x, errno);
}

Result<std::vector<DmAttr>> GetAllDmAttrs(int fd) {
  std::vector<char> names;
  for (int attempt = 0;; ++attempt) {
    ssize_t n = ::flistxattr(fd, nullptr, 0);
    if (n < 0) return PosixError("flistxattr", "fd " + std::to_string(fd), errno);
    names.resize(static_cast<size_t>(n));
    if (n == 0) break;
    ssize_t m = ::flistxattr(fd, names.data(), names.size());
    if (m >= 0) {
      names.resize(static_cast<size_t>(m));
      break;
    }
    if (errno != ERANGE || attempt >= 8) return PosixError("flistxattr", "fd " + std::to_string(fd), errno);
  }

  std::vector<DmAttr> out;
  for (size_t i = 0; i < names.size();) {
    std::string_view x(names.data() + i);
    i += x.size() + 1;
    if (x.substr(0, kDmAttrPrefix.size()) != kDmAttrPrefix) continue;
    auto name = AttrName::FromString(x.substr(kDmAttrPrefix.size()));
    if (!name.ok()) continue;  // not ours to interpret; see header
    PDM_ASSIGN_OR_RETURN(auto v, ReadXattr(fd, std::string(x)));
    if (!v) continue;  // removed since the listing
    out.push_back(DmAttr{*name, std::move(*v)});
  }
  std::sort(out.begin(), out.end(), [](const DmAttr& a, const DmAttr& b) { return a.name < b.name; });
  return out;
}

// ---- managed regions ---------------------------------------------------------

std::vector<uint8_t> EncodeRegions(std::span<const Region> regions) {
  std::vector<uint8_t> payload;
  payload.reserve(4 + regions.size() * kRegionRecord);
  PutLe(payload, regions.size(), 4);
  for (const Region& r : regions) {
    PutLe(payload, r.offset, 8);
    PutLe(payload, r.size, 8);
    PutLe(payload, r.flags, 4);
    PutLe(payload, 0, 4);  // reserved; lets v1 readers reject unknown use
  }
  return Frame(kRegionsMagic, payload);
}

namespace {

Status CheckRegion(const Region& r) {
  if (r.flags & ~kRegionAllFlags) return InvalidArgument("managed region has unknown flags");
  if (r.size != 0 && r.offset + r.size < r.offset) return InvalidArgument("managed region wraps past 2^64");
  return Status::Ok();
}

}  // namespace

Result<std::vector<Region>> DecodeRegions(std::span<const uint8_t> raw) {
  PDM_ASSIGN_OR_RETURN(std::span<const uint8_t> p, Unframe(raw, kRegionsMagic, kRegionsXattr));
  auto corrupt = [](std::string_view why) { return DataLoss(std::string(kRegionsXattr) + " corrupt: " + std::string(why)); };
  if (p.size() < 4) return corrupt("no count");
  uint64_t count = GetLe(p.data(), 4);
  if (count > kMaxRegions) return corrupt("too many regions");
  if (p.size() != 4 + count * kRegionRecord) return corrupt("length does not match count");
  std::vector<Region> out;
  out.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* rec = p.data() + 4 + i * kRegionRecord;
    Region r{GetLe(rec, 8), GetLe(rec + 8, 8), static_cast<uint32_t>(GetLe(rec + 16, 4))};
    if (GetLe(rec + 20, 4) != 0) return corrupt("reserved field set");
    if (!CheckRegion(r).ok()) return corrupt("invalid region");
    out.push_back(r);
  }
  return out;
}

Status SetRegions(int fd, std::span<const Region> regions) {
  if (regions.size() > kMaxRegions) return InvalidArgument("more than kMaxRegions managed regions", E2BIG);
  for (const Region& r : regions) PDM_RETURN_IF_ERROR(CheckRegion(r));
  if (regions.empty()) return ClearXattr(fd, std::string(kRegionsXattr));
  return WriteXattr(fd, std::string(kRegionsXattr), EncodeRegions(regions));
}

Result<std::vector<Region>> GetRegions(int fd) {
  PDM_ASSIGN_OR_RETURN(auto raw, ReadXattr(fd, std::string(kRegionsXattr)));
  if (!raw) return std::vector<Region>();
  return DecodeRegions(*raw);
}

bool RegionCovers(const std::vector<Region>& regions, uint64_t off, uint64_t len, uint32_t flag) {
  // Half-open intervals; "end" UINT64_MAX stands for end of file. An access
  // with len overflowing u64 is treated as reaching end of file.
  const uint64_t a_end = (len == 0 || off + len < off) ? UINT64_MAX : off + len;
  for (const Region& r : regions) {
    if (!(r.flags & flag)) continue;
    const uint64_t r_end = r.size == 0 ? UINT64_MAX : r.offset + r.size;
    if (off < r_end && r.offset < a_end) return true;
  }
  return false;
}

// ---- per-object event list -----------------------------------------------

Status SetEventList(int fd, uint64_t mask) {
  if (mask == 0) return ClearXattr(fd, std::string(kEventsXattr));
  std::vector<uint8_t> payload;
  PutLe(payload, mask, 8);
  return WriteXattr(fd, std::string(kEventsXattr), Frame(kEventsMagic, payload));
}

Result<uint64_t> GetEventList(int fd) {
  PDM_ASSIGN_OR_RETURN(auto raw, ReadXattr(fd, std::string(kEventsXattr)));
  if (!raw) return uint64_t{0};
  PDM_ASSIGN_OR_RETURN(std::span<const uint8_t> p, Unframe(*raw, kEventsMagic, kEventsXattr));
  if (p.size() != 8) return DataLoss(std::string(kEventsXattr) + " corrupt: wrong length");
  return GetLe(p.data(), 8);
}

// ---- return-on-destroy --------------------------------------------------------

Status SetReturnOnDestroy(int fd, const std::optional<AttrName>& name) {
  if (!name) return ClearXattr(fd, std::string(kRodXattr));
  auto s = name->str();
  return WriteXattr(fd, std::string(kRodXattr), {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

Result<std::optional<AttrName>> GetReturnOnDestroy(int fd) {
  PDM_ASSIGN_OR_RETURN(auto raw, ReadXattr(fd, std::string(kRodXattr)));
  if (!raw) return std::optional<AttrName>();
  auto name = AttrName::FromString(std::string_view(reinterpret_cast<const char*>(raw->data()), raw->size()));
  if (!name.ok()) return DataLoss(std::string(kRodXattr) + " corrupt: not an attribute name");
  return std::optional<AttrName>(*name);
}

}  // namespace pdm::dm
