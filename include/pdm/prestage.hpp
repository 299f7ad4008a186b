// C++ interface to pdm_prestage (pdm/prestage.h); header only, over the C
// API, so it works with any C++ compiler and standard library the
// application uses.
//
//   pdm::Prestage(MPI_COMM_WORLD, {"/scratch/run7/mesh.h5", "/scratch/run7/bc.dat"});
//
// Collective, like the C call. On failure every rank throws PrestageError
// (a std::system_error with the C call's errno), which carries the report:
// the per-path results of this rank and the totals of all ranks.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "pdm/prestage.h"

namespace pdm {

struct PrestageReport {
  std::vector<pdm_prestage_result> results;  // results[i] for paths[i] of this rank
  pdm_prestage_stats stats{};                // all ranks
};

class PrestageError : public std::system_error {
 public:
  PrestageError(int err, PrestageReport report, const std::string& what)
      : std::system_error(err, std::generic_category(), what), report_(std::move(report)) {}
  const PrestageReport& report() const { return report_; }

 private:
  PrestageReport report_;
};

// Throws PrestageError on every rank when any path of any rank failed (see
// pdm_prestage for the errno values); otherwise returns the report.
inline PrestageReport Prestage(MPI_Comm comm, const std::vector<std::string>& paths,
                               const pdm_prestage_options* opts = nullptr) {
  std::vector<const char*> c;
  c.reserve(paths.size());
  for (const std::string& p : paths) c.push_back(p.c_str());
  PrestageReport r;
  r.results.resize(paths.size());
  if (pdm_prestage_ex(comm, c.data(), c.size(), opts, r.results.data(), &r.stats) != 0) {
    const int err = errno;
    // Name the first failed path of this rank: that is what a user fixes.
    std::string what = "pdm::Prestage";
    for (size_t i = 0; i < paths.size(); ++i)
      if (r.results[i].error != 0) {
        what += ": " + paths[i];
        break;
      }
    throw PrestageError(err, std::move(r), what);
  }
  return r;
}

}  // namespace pdm
