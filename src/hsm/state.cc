#include "hsm/state.h"

#include <unistd.h>

#include <array>
#include <nlohmann/json.hpp>

#include "common/posix.h"
#include "dm/attrs.h"

namespace pdm::hsm {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 7> kFlagNames = {
    "exists", "archived", "released", "dirty", "lost", "norelease", "noarchive"};
static_assert(kAllFlags == (1u << kFlagNames.size()) - 1, "a name for every flag");

constexpr size_t kMaxStateKey = 512;

const dm::AttrName& StateAttr() {
  static const dm::AttrName name = *dm::AttrName::FromString(kStateAttrName);
  return name;
}

// The rule check shared by Encode (caller bug → InvalidArgument) and Decode
// (stored value → DataLoss): returns "" when consistent, else the rule.
std::string BrokenRule(const FileState& s) {
  if (s.flags & ~kAllFlags) return "unknown flag bits";
  if ((s.flags & (kArchived | kReleased | kLost)) && !s.Has(kExists)) return "archived/released/lost without exists";
  if (s.Has(kReleased) && !s.Has(kArchived)) return "released without archived";
  if (s.Has(kExists) && (s.key.empty() || s.archive_id == 0)) return "exists without key and archive id";
  if (s.key.size() > kMaxStateKey) return "key longer than 512 bytes";
  for (char c : s.key)
    if (c <= ' ' || c > '~') return "key not printable ASCII";
  return {};
}

json Body(const FileState& s) {
  json j = json::object();
  j["flags"] = FlagNames(s.flags);
  j["archive"] = s.archive_id;
  j["key"] = s.key;
  j["size"] = s.size;
  j["mtime_ns"] = s.mtime_ns;
  j["sum"] = s.sum.Hex();
  j["ver"] = s.ver;
  return j;
}

Status Corrupt(std::string_view why) { return DataLoss("hsm state attribute: " + std::string(why)); }

}  // namespace

Status Validate(const FileState& s) {
  std::string rule = BrokenRule(s);
  if (!rule.empty()) return InvalidArgument("hsm state: " + rule);
  return Status::Ok();
}

std::vector<std::string> FlagNames(uint32_t flags) {
  std::vector<std::string> out;
  for (size_t i = 0; i < kFlagNames.size(); ++i)
    if (flags & (1u << i)) out.emplace_back(kFlagNames[i]);
  return out;
}

std::string FlagsString(uint32_t flags) {
  std::string out;
  for (const auto& n : FlagNames(flags)) {
    if (!out.empty()) out += ',';
    out += n;
  }
  return out;
}

Result<uint32_t> ParseFlag(std::string_view name) {
  for (size_t i = 0; i < kFlagNames.size(); ++i)
    if (kFlagNames[i] == name) return uint32_t{1} << i;
  return InvalidArgument("unknown hsm flag '" + std::string(name) + "'");
}

json ToJson(const FileState& s) { return Body(s); }

Result<std::string> Encode(const FileState& s) {
  PDM_RETURN_IF_ERROR(Validate(s));
  json j = json::object();
  j["v"] = kStateVersion;
  j.update(Body(s));
  // A key is validated ASCII by the archive, but never let odd bytes throw.
  std::string out = j.dump(-1, ' ', false, json::error_handler_t::replace);
  if (out.size() > dm::kMaxAttrSize)
    return InvalidArgument("hsm state: encoded value " + std::to_string(out.size()) + " bytes > " +
                               std::to_string(dm::kMaxAttrSize),
                           E2BIG);
  return out;
}

Result<FileState> Decode(std::span<const uint8_t> raw) {
  if (raw.size() > dm::kMaxAttrSize) return Corrupt("longer than the attribute limit");
  // No exceptions: a parse error gives a discarded value.
  json j = json::parse(raw.begin(), raw.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt("not a JSON object");
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_unsigned() || v->get<uint64_t>() != kStateVersion)
    return Corrupt("missing or unsupported version");

  FileState s;
  auto flags = j.find("flags");
  if (flags == j.end() || !flags->is_array()) return Corrupt("flags missing");
  for (const auto& f : *flags) {
    if (!f.is_string()) return Corrupt("flag not a string");
    auto bit = ParseFlag(f.get_ref<const std::string&>());
    if (!bit.ok()) return Corrupt("unknown flag '" + f.get<std::string>() + "'");
    if (s.flags & *bit) return Corrupt("repeated flag");
    s.flags |= *bit;
  }
  auto u64 = [&](const char* name, uint64_t* out) -> bool {
    auto it = j.find(name);
    if (it == j.end() || !it->is_number_unsigned()) return false;
    *out = it->get<uint64_t>();
    return true;
  };
  uint64_t archive = 0;
  if (!u64("archive", &archive) || archive > UINT32_MAX) return Corrupt("archive id missing or out of range");
  s.archive_id = static_cast<uint32_t>(archive);
  if (!u64("size", &s.size)) return Corrupt("size missing");
  if (!u64("ver", &s.ver)) return Corrupt("ver missing");
  auto mt = j.find("mtime_ns");
  if (mt == j.end() || !mt->is_number_integer()) return Corrupt("mtime_ns missing");
  if (mt->is_number_unsigned() && mt->get<uint64_t>() > uint64_t(INT64_MAX)) return Corrupt("mtime_ns out of range");
  s.mtime_ns = mt->get<int64_t>();
  auto key = j.find("key");
  if (key == j.end() || !key->is_string()) return Corrupt("key missing");
  s.key = key->get<std::string>();
  auto sum = j.find("sum");
  if (sum == j.end() || !sum->is_string()) return Corrupt("sum missing");
  auto parsed = Checksum128::FromHex(sum->get_ref<const std::string&>());
  if (!parsed.ok()) return Corrupt("sum not 32 hex digits");
  s.sum = *parsed;
  std::string rule = BrokenRule(s);
  if (!rule.empty()) return Corrupt(rule);
  return s;
}

Result<FileState> ReadState(int fd) {
  auto raw = dm::GetDmAttr(fd, StateAttr());
  if (!raw.ok()) {
    if (raw.status().code() == Code::kNotFound) return FileState{};
    return raw.status();
  }
  return Decode(*raw);
}

Status WriteState(int fd, const FileState& s, bool sync) {
  if (s == FileState{}) {
    Status st = dm::RemoveDmAttr(fd, StateAttr());
    if (!st.ok() && st.code() != Code::kNotFound) return st;
  } else {
    PDM_ASSIGN_OR_RETURN(std::string value, Encode(s));
    PDM_RETURN_IF_ERROR(dm::SetDmAttr(
        fd, StateAttr(), {reinterpret_cast<const uint8_t*>(value.data()), value.size()}));
  }
  // fsync commits the inode, xattrs included (ext4/xfs journal them with the
  // inode), so the state survives a crash right after we return.
  if (sync && ::fsync(fd) != 0) return PosixError("fsync", "hsm state", errno);
  return Status::Ok();
}

bool CopyIsCurrent(const FileState& s, const struct stat& st) {
  int64_t mtime = int64_t(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return s.Has(kExists) && uint64_t(st.st_size) == s.size && mtime == s.mtime_ns;
}

}  // namespace pdm::hsm
