// Small conveniences over libdmapi for the HSM's own code: one place that
// turns a failed dm_* call into a Status (errno kept) and that reads and
// writes the HSM state attribute through the DMAPI.
//
// Thread-safety: reentrant (libdmapi keeps one connection per thread).
#pragma once

#include <dmapi.h>

#include <cerrno>
#include <string>

#include "common/status.h"
#include "hsm/state.h"

namespace pdm::hsm {

inline Status DmError(const char* call) { return FromErrno(errno ? errno : EIO, call); }

inline void* H(const std::string& h) { return const_cast<char*>(h.data()); }

inline dm_attrname_t StateAttrName() {
  dm_attrname_t n{};
  std::memcpy(n.an_chars, kStateAttrName.data(), kStateAttrName.size());
  return n;
}

// The file's HSM state; no attribute → default (never touched by the HSM).
inline Result<FileState> GetState(dm_sessid_t sid, const std::string& h, dm_token_t token) {
  dm_attrname_t name = StateAttrName();
  char buf[4096];
  size_t len = 0;
  if (dm_get_dmattr(sid, H(h), h.size(), token, &name, sizeof buf, buf, &len) != 0) {
    if (errno == ENOENT) return FileState{};
    return DmError("dm_get_dmattr(pdmhsm)");
  }
  return Decode({reinterpret_cast<const uint8_t*>(buf), len});
}

inline Status PutState(dm_sessid_t sid, const std::string& h, dm_token_t token, const FileState& s) {
  dm_attrname_t name = StateAttrName();
  if (s.flags == 0 && s.key.empty()) {
    if (dm_remove_dmattr(sid, H(h), h.size(), token, 0, &name) != 0 && errno != ENOENT)
      return DmError("dm_remove_dmattr(pdmhsm)");
    return Status::Ok();
  }
  PDM_ASSIGN_OR_RETURN(std::string v, Encode(s));
  if (dm_set_dmattr(sid, H(h), h.size(), token, &name, 0, v.size(), v.data()) != 0)
    return DmError("dm_set_dmattr(pdmhsm)");
  return Status::Ok();
}

// Managed regions over the whole file (flags 0: none at all).
inline Status SetWholeRegion(dm_sessid_t sid, const std::string& h, dm_token_t token, unsigned flags) {
  dm_region_t r{};
  r.rg_offset = 0;
  r.rg_size = 0;
  r.rg_flags = flags;
  dm_boolean_t exact;
  if (dm_set_region(sid, H(h), h.size(), token, flags ? 1 : 0, flags ? &r : nullptr, &exact) != 0)
    return DmError("dm_set_region");
  return Status::Ok();
}

}  // namespace pdm::hsm
