// pdm-purge: parallel scratch purge.
//
//   mpirun -np 4 pdm-purge --older-than 30d [--by atime|mtime|ctime]
//       [--larger-than SIZE] [--user U]... [--group G]... [--exclude GLOB]...
//       [--protect FILE]... [--rmdir] [--dryrun] [--list FILE] [--report FILE]
//       [--order atime|mtime|ctime|size] [--limit-count N] [--limit-bytes SIZE]
//       [--json] [--progress N] [-i LIST|CATALOG] PATH...
//   mpirun -np 4 pdm-purge --policy FILE PATH...
//   pdm-purge --release-only ...    (needs the HSM: free the space, keep the file)
//
// Exit: 0 ok, 1 some entries failed, 2 usage error or the purge was refused
// (a root that is / or a mount root without --force, release without HSM).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#ifdef PDM_PURGE_WITH_HSM
#include <memory>

#include "tools/hsm_client.h"
#endif
#include "tools/mpi_util.h"
#include "tools/policy.h"
#include "tools/purge.h"
#include "tools/units.h"

namespace {

constexpr const char kVersion[] = "0.1.0";

struct Args {
  std::vector<std::string> paths, users, groups, excludes, protects;
  std::string input, older, newer, larger, smaller, by = "atime", types = "fl", policy, list, report;
  std::string order, limit_bytes;
  uint64_t limit_count = 0;
  bool has_limit_count = false;
  bool dryrun = false, json = false, rmdir = false, force = false, release_only = false, no_hsm = false, all = false;
  double progress = 0;
};

int Usage(int rank, const std::string& msg) {
  if (rank == 0) std::fprintf(stderr, "pdm-purge: %s\n", msg.c_str());
  return 2;
}

// Returns -1 to go on, else the exit code.
int Parse(int argc, char** argv, int rank, Args* a) {
  CLI::App app{"pdm-purge: parallel purge of old files from scratch file systems"};
  app.set_version_flag("--version", kVersion);
  app.add_option("paths", a->paths, "Trees to purge (never / or a mount root without --force)");
  app.add_option("-i,--input", a->input, "Take candidates from a text list or catalog (each re-checked)");
  app.add_option("--older-than", a->older, "Age above this (30d, 12h, ...), by --by");
  app.add_option("--newer-than", a->newer, "Age below this");
  app.add_option("--by", a->by, "Time the age is taken from")->check(CLI::IsMember({"atime", "mtime", "ctime"}));
  app.add_option("--larger-than", a->larger, "Size above this (10M, 1G, ...)");
  app.add_option("--smaller-than", a->smaller, "Size below this");
  app.add_option("--user", a->users, "Owner (name or uid); repeatable")
      ->expected(1)
      ->allow_extra_args(false);  // one value per flag, so "--exclude X PATH" leaves PATH alone
  app.add_option("--group", a->groups, "Group (name or gid); repeatable")
      ->expected(1)
      ->allow_extra_args(false);  // one value per flag, so "--exclude X PATH" leaves PATH alone
  app.add_option("--exclude", a->excludes, "Never touch entries matching this glob; repeatable")
      ->expected(1)
      ->allow_extra_args(false);  // one value per flag, so "--exclude X PATH" leaves PATH alone
  app.add_option("--protect", a->protects, "File listing paths never touched (dirs: their subtrees); repeatable")
      ->expected(1)
      ->allow_extra_args(false);  // one value per flag, so "--exclude X PATH" leaves PATH alone
  app.add_option("--type", a->types, "Entry types to purge, find -type letters (default fl)");
  app.add_option("--policy", a->policy, "TOML policy file: purge / release rules, limits, watermarks");
  app.add_option("--order", a->order, "With a limit: take candidates oldest first by this time, or largest first")
      ->check(CLI::IsMember({"atime", "mtime", "ctime", "size"}));
  CLI::Option* limit_count =
      app.add_option("--limit-count", a->limit_count, "Act on at most N files (in --order; default: --by)");
  app.add_option("--limit-bytes", a->limit_bytes, "Stop once the files taken free this much (1T, 500G, ...)");
  app.add_flag("--all", a->all, "Purge everything under PATH (required when no criterion is given)");
  app.add_flag("--release-only", a->release_only, "Release archived files (keep them, free the space) instead");
  app.add_flag("--rmdir", a->rmdir, "Also remove directories the purge emptied, deepest first");
  app.add_flag("--force", a->force, "Allow / and mount roots");
  app.add_flag("--dryrun", a->dryrun, "Select only: list what a real run would remove");
  app.add_option("--list", a->list, "Write the selected (dry run) or removed paths here");
  app.add_option("--report", a->report, "Write a per-user report (files, bytes, list) of the selection");
  app.add_flag("--json", a->json, "Print a JSON summary");
  app.add_option("--progress", a->progress, "Print progress every N seconds on rank 0 (0 = off)");
  app.add_flag("--no-hsm", a->no_hsm, "Do not read HSM state");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    if (rank == 0) app.exit(e);
    return 0;
  } catch (const CLI::ParseError& e) {
    if (rank == 0) app.exit(e);
    return 2;
  }
  if (a->paths.empty() && a->input.empty()) return Usage(rank, "give PATH... (the tree) or -i FILE");
  const bool criterion = !a->older.empty() || !a->newer.empty() || !a->larger.empty() || !a->smaller.empty() ||
                         !a->users.empty() || !a->groups.empty();
  if (!a->policy.empty() && criterion) return Usage(rank, "--policy and selection options exclude each other");
  a->has_limit_count = limit_count->count() > 0;
  const bool limited = a->has_limit_count || !a->limit_bytes.empty();
  if (!a->policy.empty() && (limited || !a->order.empty()))
    return Usage(rank, "--order and --limit-* are the policy's rules' order / max_count / max_volume: not with --policy");
  if (!a->order.empty() && !limited) return Usage(rank, "--order orders candidates for --limit-count / --limit-bytes");
  if (a->policy.empty() && !criterion && !a->all)
    return Usage(rank, "no selection criterion: give --older-than, --larger-than, --user, ... or --all");
  return -1;
}

// Options -> PurgeOptions; usage errors are Status InvalidArgument.
pdm::Status Build(const Args& a, pdm::tools::Policy* policy, pdm::tools::PurgeOptions* o) {
  using namespace pdm::tools;
  Criteria& c = o->criteria;
  if (!a.older.empty()) {
    PDM_ASSIGN_OR_RETURN(c.older_than_s, ParseDuration(a.older));
  }
  if (!a.newer.empty()) {
    PDM_ASSIGN_OR_RETURN(c.newer_than_s, ParseDuration(a.newer));
  }
  if (!a.larger.empty()) {
    PDM_ASSIGN_OR_RETURN(c.larger_than, ParseSize(a.larger));
  }
  if (!a.smaller.empty()) {
    PDM_ASSIGN_OR_RETURN(c.smaller_than, ParseSize(a.smaller));
  }
  PDM_ASSIGN_OR_RETURN(c.by, ParseTimeField(a.by));
  if (a.types.empty() || a.types.find_first_not_of("fdlpscb") != std::string::npos)
    return pdm::InvalidArgument("--type: letters from f d l p s c b");
  if (a.types.find('d') != std::string::npos) return pdm::InvalidArgument("--type d: use --rmdir for directories");
  c.types = a.types;
  for (const auto& u : a.users) {
    PDM_ASSIGN_OR_RETURN(uint32_t id, ResolveUser(u));
    c.uids.push_back(id);
  }
  for (const auto& g : a.groups) {
    PDM_ASSIGN_OR_RETURN(uint32_t id, ResolveGroup(g));
    c.gids.push_back(id);
  }
  for (const auto& x : a.excludes) {
    PDM_ASSIGN_OR_RETURN(Glob g, Glob::Make(x));
    c.exclude.push_back(std::move(g));
  }
  // Several --protect files merge into one set.
  for (const auto& f : a.protects) {
    PDM_ASSIGN_OR_RETURN(ProtectSet p, ProtectSet::Load(f));
    o->protect.Merge(p);
  }
  if (!a.policy.empty()) {
    PDM_ASSIGN_OR_RETURN(*policy, Policy::Load(a.policy));
    o->policy = policy;
  }
  if (a.has_limit_count || !a.limit_bytes.empty()) {
    if (a.has_limit_count) o->max_count = a.limit_count;
    if (!a.limit_bytes.empty()) {
      PDM_ASSIGN_OR_RETURN(uint64_t v, ParseSize(a.limit_bytes));
      o->max_volume = v;
    }
    // The policy's order names; without --order the age field (--by), so
    // "--older-than 30d --limit-count N" takes the N oldest.
    PDM_ASSIGN_OR_RETURN(o->order, ParseOrderKey(a.order.empty() ? a.by : a.order));
  }
  o->roots = a.paths;
  o->input = a.input;
  o->dryrun = a.dryrun;
  o->rmdir = a.rmdir;
  o->force = a.force;
  o->release_only = a.release_only;
  o->list_file = a.list;
  o->report_file = a.report;
  o->print_list = a.dryrun && a.list.empty() && !a.json;
  o->progress_s = a.progress;
  o->read_hsm = !a.no_hsm;
#ifdef PDM_PURGE_WITH_HSM
  // One release Request per file, through a DMAPI session opened on the first
  // release (a dry run or a plain purge never needs the node agent). A failed
  // open is kept and returned for every file, so each one counts as an error.
  struct Lazy {
    bool tried = false;
    pdm::Status st;
    std::unique_ptr<HsmClient> hsm;
  };
  auto lazy = std::make_shared<Lazy>();
  o->release = [lazy](const std::string& path) -> pdm::Status {
    if (!lazy->tried) {
      lazy->tried = true;
      auto h = HsmClient::Open("pdm-purge", true);
      if (h.ok()) lazy->hsm = std::move(*h);
      else lazy->st = h.status();
    }
    if (!lazy->hsm) return lazy->st;
    auto out = lazy->hsm->Run(pdm::hsm::Op::kRelease, {path});
    return out[0].ok ? pdm::Status::Ok() : pdm::FailedPrecondition(out[0].error);
  };
#else
  // Built without the HSM: RunPurge refuses release work ("not supported
  // without the HSM").
  o->release = nullptr;
#endif
  return pdm::Status::Ok();
}

int Run(int argc, char** argv) {
  pdm::tools::MpiSession mpi(&argc, &argv);
  const MPI_Comm comm = MPI_COMM_WORLD;
  Args a;
  if (int rc = Parse(argc, argv, mpi.rank(), &a); rc >= 0) return rc;
  using namespace pdm::tools;
  Policy policy;
  PurgeOptions o;
  if (pdm::Status st = Build(a, &policy, &o); !st.ok()) return Usage(mpi.rank(), st.ToString());

  PurgeResult r;
  pdm::Status st = RunPurge(comm, o, &r);
  if (mpi.rank() == 0) {
    FILE* out = o.print_list ? stderr : stdout;  // keep a printed dry-run list clean
    if (a.json) {
      nlohmann::json j{{"matched", r.matched},     {"removed", r.removed}, {"released", r.released},
                       {"bytes", r.bytes},         {"errors", r.errors},   {"skipped", r.skipped},
                       {"dirs_removed", r.dirs_removed}, {"dirs_matched", r.dirs_matched},
                       {"scanned", r.scanned},     {"dryrun", a.dryrun},
                       {"ranks", mpi.size()},      {"seconds", r.seconds}};
      if (o.policy && o.policy->trigger) {
        j["triggered"] = r.triggered;
        j["to_free"] = r.to_free;
      }
      if (!st.ok()) j["failure"] = st.ToString();
      std::fprintf(out, "%s\n", j.dump().c_str());
    } else if (st.ok()) {
      const double rate = r.seconds > 0 ? static_cast<double>(r.removed + r.released) / r.seconds : 0;
      if (o.policy && o.policy->trigger && !r.triggered)
        std::fprintf(out, "pdm-purge: usage below the high watermark: nothing to do\n");
      // A dry run's directory count is the one it would remove (dirs_matched).
      std::fprintf(out, "pdm-purge: scanned %s, %s %s (%s)%s, %s removed, %s released, %s dirs %s, "
                   "%s skipped, %s errors, %s (%s files/s, %d ranks)\n",
                   FormatCount(r.scanned).c_str(), a.dryrun ? "would act on" : "matched", FormatCount(r.matched).c_str(),
                   FormatBytes(r.bytes).c_str(), a.dryrun ? " [dry run]" : "", FormatCount(r.removed).c_str(),
                   FormatCount(r.released).c_str(), FormatCount(a.dryrun ? r.dirs_matched : r.dirs_removed).c_str(),
                   a.dryrun ? "would go" : "removed", FormatCount(r.skipped).c_str(),
                   FormatCount(r.errors).c_str(), FormatDuration(r.seconds).c_str(),
                   FormatCount(static_cast<uint64_t>(rate)).c_str(), mpi.size());
    }
    if (!st.ok()) std::fprintf(stderr, "pdm-purge: %s\n", st.ToString().c_str());
  }
  if (!st.ok()) return st.code() == pdm::Code::kInternal || st.code() == pdm::Code::kDataLoss ? 1 : 2;
  return r.errors > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
