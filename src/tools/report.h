// The purge report (--report FILE): per user, the files a purge selects and
// their bytes, so admins can warn users before a purge runs.
//
//   # pdm-purge report: 2 users, 3 files, 1.5 KiB (dry run)
//   # root: /scratch
//   user alice (uid 1001): 2 files, 1.0 KiB
//     /scratch/a/old1
//     /scratch/a/old2
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pdm::tools {

struct ReportItem {
  std::string path;
  uint64_t size = 0;
};

// The header block: totals over all users and the roots.
std::string FormatReportHeader(uint64_t users, uint64_t files, uint64_t bytes, const std::vector<std::string>& roots,
                               bool dryrun);
// One user's section; items are printed sorted by path.
std::string FormatUserSection(uint32_t uid, const std::string& name, std::vector<ReportItem> items);

}  // namespace pdm::tools
