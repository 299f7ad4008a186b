#include "tools/hsm_state.h"

#include <sys/xattr.h>

#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/posix.h"
#ifdef PDM_TOOLS_WITH_HSM
#include "hsm/key_order.h"
#include "hsm/state.h"
#endif

namespace pdm::tools {

#ifdef PDM_TOOLS_WITH_HSM
// The catalog's hsm_flags column stores hsm::Flag bits as they are; these
// pin the two enums together so a new HSM flag cannot shift a column value.
constexpr bool Same(uint32_t a, uint32_t b) { return a == b; }
static_assert(Same(kHsmExists, hsm::kExists) && Same(kHsmArchived, hsm::kArchived) &&
              Same(kHsmReleased, hsm::kReleased) && Same(kHsmDirty, hsm::kDirty) && Same(kHsmLost, hsm::kLost) &&
              Same(kHsmNoRelease, hsm::kNoRelease) && Same(kHsmNoArchive, hsm::kNoArchive));

Result<HsmState> ParseHsmState(std::string_view json) {
  // The HSM's own decoder, so the tools and the HSM judge a value alike: one
  // the HSM would refuse (DataLoss) is reported, not half-read.
  auto fs = hsm::Decode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(json.data()), json.size()));
  if (!fs.ok()) return fs.status();  // already DataLoss, naming the broken rule
  return HsmState{fs->flags, fs->archive_id, std::move(fs->key)};
}
#else
Result<HsmState> ParseHsmState(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLoss(std::string(kHsmXattr) + ": not a JSON object");
  HsmState st;
  if (auto it = j.find("flags"); it != j.end()) {
    if (it->is_number_unsigned()) {
      st.flags = it->get<uint32_t>();
    } else if (it->is_array()) {
      for (const auto& f : *it) {
        if (!f.is_string()) return DataLoss(std::string(kHsmXattr) + ": flags: not a string");
        const auto& s = f.get_ref<const std::string&>();
        if (s == "exists") st.flags |= kHsmExists;
        else if (s == "archived") st.flags |= kHsmArchived;
        else if (s == "released") st.flags |= kHsmReleased;
        else if (s == "dirty") st.flags |= kHsmDirty;
        else if (s == "lost") st.flags |= kHsmLost;
        else if (s == "norelease") st.flags |= kHsmNoRelease;
        else if (s == "noarchive") st.flags |= kHsmNoArchive;
        // Unknown names are newer HSM flags; they do not change the classes here.
      }
    } else {
      return DataLoss(std::string(kHsmXattr) + ": flags: neither a number nor a list");
    }
  }
  if (auto it = j.find("archive"); it != j.end()) {
    if (!it->is_number_unsigned()) return DataLoss(std::string(kHsmXattr) + ": archive: not an unsigned number");
    st.archive_id = it->get<uint64_t>();
  }
  if (auto it = j.find("key"); it != j.end()) {
    if (!it->is_string()) return DataLoss(std::string(kHsmXattr) + ": key: not a string");
    st.key = it->get<std::string>();
  }
  return st;
}
#endif

namespace {

// A damaged value is reported with the file it is on: the walk's error lines
// must say which file an administrator has to look at.
Result<HsmState> ParseAt(const std::string& path, std::string_view value) {
  auto st = ParseHsmState(value);
  if (!st.ok()) return DataLoss(path + ": " + st.status().message(), st.status().err());
  return st;
}

}  // namespace

Result<HsmState> ReadHsmState(const std::string& path) {
  char small[512];
  ssize_t n = lgetxattr(path.c_str(), kHsmXattr, small, sizeof small);
  if (n >= 0) return ParseAt(path, std::string_view(small, static_cast<size_t>(n)));
  if (errno == ENODATA || errno == ENOTSUP) return HsmState{};
  if (errno != ERANGE) return PosixError("lgetxattr", path, errno);
  // Larger than the stack buffer: ask for the size, then read it.
  n = lgetxattr(path.c_str(), kHsmXattr, nullptr, 0);
  if (n < 0) return errno == ENODATA ? Result<HsmState>(HsmState{}) : PosixError("lgetxattr", path, errno);
  std::vector<char> buf(static_cast<size_t>(n));
  n = lgetxattr(path.c_str(), kHsmXattr, buf.data(), buf.size());
  if (n < 0) return PosixError("lgetxattr", path, errno);
  return ParseAt(path, std::string_view(buf.data(), static_cast<size_t>(n)));
}

bool ArchiveOrderLess(uint64_t archive_a, const std::string& key_a, uint64_t archive_b, const std::string& key_b) {
  // No copy (archive 0) last: nothing to read, the request only judges it.
  if ((archive_a == 0) != (archive_b == 0)) return archive_b == 0;
  if (archive_a != archive_b) return archive_a < archive_b;
  return hsm::ObjectKeyLess(key_a, key_b);
}

Result<HsmClass> ParseHsmClass(std::string_view name) {
  if (name == "none") return HsmClass::kNone;
  if (name == "archived") return HsmClass::kArchived;
  if (name == "released") return HsmClass::kReleased;
  if (name == "dirty") return HsmClass::kDirty;
  if (name == "lost") return HsmClass::kLost;
  return InvalidArgument("hsm_state: unknown '" + std::string(name) + "' (none, archived, released, dirty, lost)");
}

HsmClass ClassOf(uint32_t flags) {
  // Most specific first: a lost copy matters more than a dirty one, and a
  // released file is released whatever else is set.
  if (flags & kHsmLost) return HsmClass::kLost;
  if (flags & kHsmReleased) return HsmClass::kReleased;
  if (flags & kHsmDirty) return HsmClass::kDirty;
  if (flags & kHsmArchived) return HsmClass::kArchived;
  return HsmClass::kNone;
}

const char* HsmClassName(HsmClass c) {
  switch (c) {
    case HsmClass::kNone: return "none";
    case HsmClass::kArchived: return "archived";
    case HsmClass::kReleased: return "released";
    case HsmClass::kDirty: return "dirty";
    case HsmClass::kLost: return "lost";
  }
  return "?";
}

}  // namespace pdm::tools
