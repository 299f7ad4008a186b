#include "tools/report.h"

#include <algorithm>

#include "tools/units.h"

namespace pdm::tools {

std::string FormatReportHeader(uint64_t users, uint64_t files, uint64_t bytes, const std::vector<std::string>& roots,
                               bool dryrun) {
  std::string s = "# pdm-purge report: " + FormatCount(users) + (users == 1 ? " user, " : " users, ") +
                  FormatCount(files) + (files == 1 ? " file, " : " files, ") + FormatBytes(bytes) +
                  (dryrun ? " (dry run: nothing removed)" : "") + "\n";
  for (const auto& r : roots) s += "# root: " + r + "\n";
  return s;
}

std::string FormatUserSection(uint32_t uid, const std::string& name, std::vector<ReportItem> items) {
  std::sort(items.begin(), items.end(), [](const ReportItem& a, const ReportItem& b) { return a.path < b.path; });
  uint64_t bytes = 0;
  for (const auto& i : items) bytes += i.size;
  std::string s = "user " + name + " (uid " + std::to_string(uid) + "): " + FormatCount(items.size()) +
                  (items.size() == 1 ? " file, " : " files, ") + FormatBytes(bytes) + "\n";
  for (const auto& i : items) s += "  " + i.path + "\n";
  return s;
}

}  // namespace pdm::tools
