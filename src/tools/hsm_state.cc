#include "tools/hsm_state.h"

#include <sys/xattr.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <vector>

#include "common/posix.h"
#ifdef PDM_TOOLS_WITH_HSM
#include "hsm/state.h"
#endif

namespace pdm::tools {

Result<HsmState> ParseHsmState(std::string_view json) {
#ifdef PDM_TOOLS_WITH_HSM
  auto fs = hsm::Decode(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(json.data()), json.size()));
  if (!fs.ok()) return fs.status();
  return HsmState{fs->flags, fs->archive_id};
#endif
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
  return st;
}

Result<HsmState> ReadHsmState(const std::string& path) {
  char small[512];
  ssize_t n = lgetxattr(path.c_str(), kHsmXattr, small, sizeof small);
  if (n >= 0) return ParseHsmState(std::string_view(small, static_cast<size_t>(n)));
  if (errno == ENODATA || errno == ENOTSUP) return HsmState{};
  if (errno != ERANGE) return PosixError("lgetxattr", path, errno);
  // Larger than the stack buffer: ask for the size, then read it.
  n = lgetxattr(path.c_str(), kHsmXattr, nullptr, 0);
  if (n < 0) return errno == ENODATA ? Result<HsmState>(HsmState{}) : PosixError("lgetxattr", path, errno);
  std::vector<char> buf(static_cast<size_t>(n));
  n = lgetxattr(path.c_str(), kHsmXattr, buf.data(), buf.size());
  if (n < 0) return PosixError("lgetxattr", path, errno);
  return ParseHsmState(std::string_view(buf.data(), static_cast<size_t>(n)));
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
