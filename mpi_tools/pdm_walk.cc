// pdm-walk: MPI-parallel walk of a tree (lstat of every entry and its HSM
// state) into an HDF5 catalog and/or a text list, with a summary.
//
//   mpirun -np 4 pdm-walk [-o scan.h5] [--list FILE] [--progress N] [--json] PATH...
//   mpirun -np 4 pdm-walk -i LIST|CATALOG [-o scan.h5] [--list FILE]
//
// With -i LIST every listed path is lstat'ed; with -i CATALOG the rows are
// taken as they are (a summary of an old scan, or a conversion to a list).
// Exit: 0 ok, 1 some entries failed, 2 usage error or nothing could be done.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "tools/catalog.h"
#include "tools/mpi_util.h"
#include "tools/progress.h"
#include "tools/summary.h"
#include "tools/units.h"
#include "tools/walk.h"

namespace {

constexpr const char kVersion[] = "0.1.0";

struct Args {
  std::vector<std::string> paths;
  std::string input, output, list;
  double progress = 0;
  bool json = false, no_hsm = false;
  size_t chunk = 256;
};

// Returns -1 to go on, else the exit code (help/version: 0, usage: 2).
int Parse(int argc, char** argv, int rank, Args* a) {
  CLI::App app{"pdm-walk: parallel walk of a tree into an HDF5 catalog (docs/catalog.md)"};
  app.set_version_flag("--version", kVersion);
  app.add_option("paths", a->paths, "Trees to walk");
  app.add_option("-i,--input", a->input, "Text list (one path per line) or catalog instead of walking");
  app.add_option("-o,--output", a->output, "Write the HDF5 catalog here");
  app.add_option("--list", a->list, "Write the paths, one per line, here");
  app.add_option("--progress", a->progress, "Print progress every N seconds on rank 0 (0 = off)");
  app.add_flag("--json", a->json, "Print a JSON summary instead of the human one");
  app.add_flag("--no-hsm", a->no_hsm, "Do not read the HSM state (trusted.pdm.dm.pdmhsm)");
  app.add_option("--chunk", a->chunk, "Names per lstat work item (load balancing grain)")->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    if (rank == 0) app.exit(e);
    return 0;
  } catch (const CLI::ParseError& e) {
    if (rank == 0) app.exit(e);
    return 2;
  }
  if (a->paths.empty() == a->input.empty()) {
    if (rank == 0) std::fprintf(stderr, "pdm-walk: give PATH... or -i FILE (one of the two)\n");
    return 2;
  }
  return -1;
}

int Run(int argc, char** argv) {
  pdm::tools::MpiSession mpi(&argc, &argv);
  const MPI_Comm comm = MPI_COMM_WORLD;
  Args a;
  if (int rc = Parse(argc, argv, mpi.rank(), &a); rc >= 0) return rc;
  using namespace pdm::tools;

  const double t0 = MPI_Wtime();
  int64_t start_s = static_cast<int64_t>(std::time(nullptr));
  MPI_Bcast(&start_s, 1, MPI_INT64_T, 0, comm);
  const bool spool = !a.output.empty() || !a.list.empty();
  RowSpool rows;
  Summary sum;
  pdm::Status local_st;
  uint64_t errors = 0, vanished = 0;
  auto keep = [&](Entry&& e) {
    sum.Add(e);
    if (spool && local_st.ok()) local_st = rows.Add(e);
  };
  CatalogInfo info;
  info.time_s = start_s;
  info.tool = std::string("pdm-walk ") + kVersion;
  pdm::Status st;
  {
    Progress prog(comm, a.progress, "pdm-walk", "items");
    if (a.input.empty()) {
      WalkOptions w;
      w.roots = a.paths;
      w.read_hsm = !a.no_hsm;
      w.chunk = a.chunk;
      w.progress = &prog;
      for (const auto& p : a.paths) info.roots.push_back(AbsolutePath(p));
      WalkStats ws;
      st = Walk(comm, w, keep, &ws);
      errors = ws.errors;
      vanished = ws.vanished;
    } else if (IsCatalogFile(a.input)) {
      CatalogInfo in;
      st = ForEachCatalogRow(
          comm, a.input, 1 << 16,
          [&](Entry&& e) {
            prog.Add(1, e.size);
            prog.Tick();
            keep(std::move(e));
            return pdm::Status::Ok();
          },
          &in);
      info.roots = in.roots;
      info.time_s = in.time_s;  // the rows are the old scan's
    } else {
      info.roots.push_back("list:" + a.input);
      st = ForEachListLine(comm, a.input, [&](std::string&& line) {
        Entry e;
        pdm::Status s = StatEntry(AbsolutePath(line), !a.no_hsm, &e);
        prog.Tick();
        if (!s.ok()) {
          if (s.err() == ENOENT) ++vanished;
          else if (++errors <= 20) std::fprintf(stderr, "pdm-walk[%d]: %s\n", mpi.rank(), s.ToString().c_str());
          return pdm::Status::Ok();
        }
        prog.Add(1, e.size);
        keep(std::move(e));
        return pdm::Status::Ok();
      });
    }
    uint64_t items = 0, bytes = 0;
    prog.Finish(&items, &bytes);
  }
  const double walk_s = MPI_Wtime() - t0;
  st = AgreeStatus(comm, st.ok() ? local_st : st);
  if (st.ok() && !a.output.empty()) st = WriteCatalog(comm, a.output, info, &rows);
  if (st.ok() && !a.list.empty()) st = WriteListFromSpool(comm, a.list, &rows);
  const double total_s = MPI_Wtime() - t0;
  sum.Reduce(comm);
  const uint64_t all_errors = SumAll(comm, errors), all_vanished = SumAll(comm, vanished);
  if (mpi.rank() == 0) {
    const double rate = walk_s > 0 ? static_cast<double>(sum.entries()) / walk_s : 0;
    if (a.json) {
      nlohmann::json j = sum.Json();
      j["errors"] = all_errors;
      j["vanished"] = all_vanished;
      j["ranks"] = mpi.size();
      j["walk_seconds"] = walk_s;
      j["seconds"] = total_s;
      j["items_per_second"] = rate;
      if (!a.output.empty()) j["catalog"] = a.output;
      if (!st.ok()) j["failure"] = st.ToString();
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("pdm-walk: %s entries in %s with %d ranks (%s items/s)%s\n", FormatCount(sum.entries()).c_str(),
                  FormatDuration(walk_s).c_str(), mpi.size(), FormatCount(static_cast<uint64_t>(rate)).c_str(),
                  a.output.empty() ? "" : (", catalog " + a.output).c_str());
      std::printf("%s", sum.Human().c_str());
      if (all_errors || all_vanished)
        std::printf("errors: %s, vanished during the walk: %s\n", FormatCount(all_errors).c_str(),
                    FormatCount(all_vanished).c_str());
    }
    if (!st.ok()) std::fprintf(stderr, "pdm-walk: %s\n", st.ToString().c_str());
  }
  if (!st.ok()) return st.code() == pdm::Code::kInvalidArgument || st.code() == pdm::Code::kNotFound ? 2 : 1;
  return all_errors > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
