// The HSM state of one file as the tools read it: which flags the HSM has set
// (archived, released, dirty, ...) and which archive holds the copy.
//
// Source: the DM attribute the HSM keeps on every file it manages,
// trusted.pdm.dm.pdmhsm (docs/architecture.md, "Persistent per-file DM
// state"), a JSON object. Only its "flags" and "archive" members are read
// here; "flags" is an array of flag names (src/hsm/state.h) or, from older
// writers, a number of HsmFlag bits. This file is the one place that knows
// the encoding: when the HSM library is built (PDM_TOOLS_WITH_HSM), the value
// is decoded by hsm::Decode instead, so the two can never disagree.
//
// The bits are the HSM's own (hsm::Flag), so a catalog's hsm_flags column
// means the same thing as `pdm-state` output.
//
// Thread-safety: reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pdm::tools {

enum HsmFlag : uint32_t {
  kHsmExists = 1u << 0,     // an archive copy (maybe partial or old) exists
  kHsmArchived = 1u << 1,   // the archive copy is complete and verified
  kHsmReleased = 1u << 2,   // the data was punched out; reads recall it
  kHsmDirty = 1u << 3,      // written since the copy was taken
  kHsmLost = 1u << 4,       // the archive copy is gone or corrupt
  kHsmNoRelease = 1u << 5,  // an administrator forbids releasing it
  kHsmNoArchive = 1u << 6,  // an administrator forbids archiving it
};

// The xattr name (trusted.* needs CAP_SYS_ADMIN to read).
inline constexpr const char kHsmXattr[] = "trusted.pdm.dm.pdmhsm";

struct HsmState {
  uint32_t flags = 0;
  uint64_t archive_id = 0;
  std::string key;  // the object key of the copy in that archive; "" = none
};

// Decodes the attribute value. Malformed JSON or members of the wrong type
// are DataLoss: a damaged value is reported, never guessed.
Result<HsmState> ParseHsmState(std::string_view json);

// Reads the state of the object at `path` without following a symlink
// (lgetxattr). No attribute, or a file system without xattrs: the empty state
// (the file is not managed). Other failures are returned.
Result<HsmState> ReadHsmState(const std::string& path);

// Archive locality: true when the copy (archive_a, key_a) sits before
// (archive_b, key_b) in the order a bulk recall should read them: by
// archive id (none, 0, last), then by hsm::ObjectKeyLess (hsm/key_order.h:
// numeric key order, which pdm_prestage uses too).
bool ArchiveOrderLess(uint64_t archive_a, const std::string& key_a, uint64_t archive_b, const std::string& key_b);

// Policy "hsm_state" names: none (no archive copy), archived (a verified,
// clean copy and resident data: releasable unless norelease), released,
// dirty, lost.
enum class HsmClass : unsigned char { kNone, kArchived, kReleased, kDirty, kLost };
Result<HsmClass> ParseHsmClass(std::string_view name);
HsmClass ClassOf(uint32_t flags);
const char* HsmClassName(HsmClass c);

}  // namespace pdm::tools
