// The HSM tools: pdm-migrate, pdm-archive, pdm-release, pdm-recall,
// pdm-remove and pdm-state, one source (the tool is chosen by
// pdm_hsm_main.cc's PDM_HSM_TOOL). docs/hsm-tools.md is the manual.
//
//   pdm-migrate [--dryrun] [--progress N] [--json] [--requests K]
//               [--batch-bytes SIZE] [--policy FILE] (PATH... | -i LIST|CATALOG)
//   (pdm-archive, pdm-release, pdm-recall: the same options; pdm-remove,
//   pdm-cancel: the same without --policy)
//   pdm-state [--json] [--summary] (PATH... | -i LIST|CATALOG)
//
// --policy FILE selects the files with the policy engine (tools/policy.h:
// RuleTaking per file, then CutToPolicy for order, limits and the trigger —
// the code pdm-purge runs) and sends each with its rule's action: pdm-migrate
// runs every HSM rule (release, migrate, archive, recall), the others only
// the rules of their own action. A policy with a purge rule is refused.
// Recalls are sent in archive order (ArchiveOrderLess), dealt from rank 0.
//
// Each is a DMAPI client of the local node agent (DMAPI_SOCKET). Directories
// are walked recursively with the parallel walk (src/tools/walk.h), which
// never follows a symlink; symlinks and other non-regular files are skipped.
// Files are sent to the coordinator in Requests of at most
// hsm::kMaxFilesPerRequest files and --batch-bytes bytes, K requests in flight
// per process, and every file is judged afterwards by the state the HSM left
// on it. Run alone, or under mpirun to split a big list over several
// processes.
//
// Exit: 0 every file reached its state, 1 anything failed, 2 usage error or
// the HSM cannot be reached.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "hsm/protocol.h"
#include "hsm/state.h"
#include "tools/catalog.h"
#include "tools/hsm_client.h"
#include "tools/hsm_state.h"
#include "tools/mpi_util.h"
#include "tools/policy.h"
#include "tools/progress.h"
#include "tools/units.h"
#include "tools/walk.h"

namespace pdm::tools {

int HsmToolMain(std::string_view tool, int argc, char** argv);

namespace {

constexpr const char kVersion[] = "0.1.0";

struct ToolKind {
  std::string_view name;  // "migrate", ..., "state"
  bool is_state = false;
  hsm::Op op = hsm::Op::kMigrate;
  const char* done;   // past tense for the summary
  const char* about;  // --help headline
  // The policy rule actions the tool does with --policy (ActionBit()s); 0:
  // no --policy (remove and cancel are no policy actions).
  uint32_t policy_actions = 0;
};

constexpr uint32_t kHsmActions = ActionBit(Action::kRelease) | ActionBit(Action::kMigrate) |
                                 ActionBit(Action::kArchive) | ActionBit(Action::kRecall);

constexpr ToolKind kKinds[] = {
    {"migrate", false, hsm::Op::kMigrate, "migrated", "copy files to the archive and free their space", kHsmActions},
    {"archive", false, hsm::Op::kArchive, "archived", "copy files to the archive; they stay resident",
     ActionBit(Action::kArchive)},
    {"release", false, hsm::Op::kRelease, "released", "free the space of archived, unmodified files",
     ActionBit(Action::kRelease)},
    {"recall", false, hsm::Op::kRecall, "recalled", "bring released files back from the archive",
     ActionBit(Action::kRecall)},
    {"remove", false, hsm::Op::kRemove, "removed from the archive", "drop the archive copies of files"},
    {"cancel", false, hsm::Op::kCancel, "cancelled", "stop the archive or release of files still in flight"},
    {"state", true, hsm::Op::kMigrate, "", "show the HSM state of files (like lfs hsm_state)"},
};

// The request a policy rule's action becomes (never called for purge: such
// a policy is refused before anything is selected).
hsm::Op OpOf(Action a) {
  switch (a) {
    case Action::kRelease: return hsm::Op::kRelease;
    case Action::kArchive: return hsm::Op::kArchive;
    case Action::kRecall: return hsm::Op::kRecall;
    case Action::kMigrate:
    case Action::kPurge: break;
  }
  return hsm::Op::kMigrate;
}

// The order the groups of a run are sent in: what frees space first
// (release, migrate), then archive, and recalls, which take space, last.
int SendRank(hsm::Op op) {
  switch (op) {
    case hsm::Op::kRelease: return 0;
    case hsm::Op::kMigrate: return 1;
    case hsm::Op::kArchive: return 2;
    case hsm::Op::kRecall: return 3;
    case hsm::Op::kRemove: return 4;
    case hsm::Op::kCancel: return 5;
  }
  return 6;
}

struct Args {
  std::vector<std::string> paths;
  std::string input, batch_bytes = "64M", policy;
  bool dryrun = false, json = false, summary = false;
  double progress = 0;
  unsigned requests = 4;
};

// Returns -1 to go on, else the exit code (help/version 0, usage 2).
int Parse(const ToolKind& k, int argc, char** argv, int rank, Args* a) {
  const std::string tool = "pdm-" + std::string(k.name);
  CLI::App app{tool + ": " + k.about};
  app.name(tool);
  app.set_version_flag("--version", kVersion);
  app.add_option("paths", a->paths, "Files and directories (walked recursively; symlinks are never followed)");
  app.add_option("-i,--input", a->input, "Take the files from a text list (one path per line) or a pdm-walk catalog");
  app.add_flag("--json", a->json, k.is_state ? "Per file: path, states, archive id, object key, size (JSON)"
                                             : "Print a JSON summary");
  app.add_option("--progress", a->progress, "Print progress every N seconds (0 = off)");
  if (k.is_state) {
    app.add_flag("--summary", a->summary, "Print only the number of files in each state");
  } else {
    app.add_flag("--dryrun", a->dryrun, "List the files that would be sent; send nothing");
    app.add_option("--requests", a->requests, "Requests in flight per process (default 4)")
        ->check(CLI::Range(1u, 64u));
    app.add_option("--batch-bytes", a->batch_bytes,
                   "A request closes at this many bytes of files (default 64M; a bigger file goes alone)");
    if (k.policy_actions != 0)
      app.add_option("--policy", a->policy,
                     k.policy_actions == kHsmActions
                         ? "Select with a TOML policy; each file gets its rule's action (release, migrate, archive, "
                           "recall)"
                         : "Select with a TOML policy; only its " + std::string(k.name) + " rules are run");
  }
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
    if (rank == 0) std::fprintf(stderr, "%s: give PATH... or -i FILE (one of the two)\n", tool.c_str());
    return 2;
  }
  return -1;
}

struct File {
  std::string path;
  uint64_t size = 0;
  hsm::Op op = hsm::Op::kMigrate;
  int rule = -1;  // the policy rule that took it; -1 without a policy
};

// A policy run: the policy, its clock, and what it took on this rank.
struct PolicyRun {
  const Policy* policy = nullptr;
  uint32_t actions = 0;  // the rule actions this tool does
  int64_t now_ns = 0;    // rank 0's clock, for ages
  std::vector<PolicyCandidate> candidates;  // parallel to Collected::files until the cut
  PolicyCut cut;
};

struct Collected {
  std::vector<File> files;  // this rank's regular files to send
  uint64_t scanned = 0;     // entries looked at
  uint64_t skipped = 0;     // symlinks and other non-regular files
  uint64_t errors = 0;      // paths that could not be looked at
};

// COLLECTIVE. This rank's share of the regular files named by the paths (a
// walk) or the input (each line or catalog row lstat'ed afresh: a catalog
// may be old). With a policy, only the files a rule takes, each with its
// rule, cut to the policy's limits and trigger; the same selection for a
// dry run and a real run.
Status Collect(MPI_Comm comm, const std::string& tool, const ToolKind& k, const Args& a, PolicyRun* pol,
               Collected* c) {
  auto keep = [&](const Entry& e) {
    ++c->scanned;
    if (!e.is_file()) {
      if (!e.is_dir()) ++c->skipped;
      return;
    }
    if (pol == nullptr) {
      c->files.push_back({e.path, e.size, k.op, -1});
      return;
    }
    const int r = pol->policy->RuleTaking(e, pol->now_ns, pol->actions);
    if (r < 0) return;
    const Rule& rule = pol->policy->rules[static_cast<size_t>(r)];
    c->files.push_back({e.path, e.size, OpOf(rule.action), r});
    pol->candidates.push_back(PolicyCandidate{r, OrderKeyOf(rule.order, e), VolumeOf(rule.action, e)});
  };
  // A policy judges HSM states (its classes' hsm_state, whether an action
  // applies), so the walk reads them; without one the state is read through
  // the DMAPI after each request.
  const bool read_hsm = pol != nullptr;
  Status st;
  if (a.input.empty()) {
    WalkOptions w;
    w.roots = a.paths;
    w.read_hsm = read_hsm;
    WalkStats ws;
    st = Walk(comm, w, [&](Entry&& e) { keep(e); }, &ws);
    c->errors += ws.errors + ws.vanished;
  } else {
    auto one = [&](const std::string& path) {
      Entry e;
      Status s = StatEntry(path, read_hsm, &e);
      if (!s.ok()) {
        ++c->errors;
        std::fprintf(stderr, "%s: %s\n", tool.c_str(), s.ToString().c_str());
      } else if (e.is_dir()) {
        ++c->scanned;
        ++c->skipped;  // a list names files; walking a listed directory would surprise
      } else {
        keep(e);
      }
      return Status::Ok();
    };
    if (IsCatalogFile(a.input))
      st = ForEachCatalogRow(comm, a.input, 1 << 16, [&](Entry&& e) { return one(e.path); });
    else
      st = ForEachListLine(comm, a.input, [&](std::string&& line) { return one(line); });
  }
  PDM_RETURN_IF_ERROR(AgreeStatus(comm, st));
  if (pol == nullptr) return Status::Ok();
  // Order, limits, trigger: the policy engine's cut, shared with pdm-purge.
  const std::string fs_path = a.paths.empty() ? std::string("/") : AbsolutePath(a.paths[0]);
  PDM_RETURN_IF_ERROR(CutToPolicy(comm, *pol->policy, fs_path, pol->candidates, &pol->cut));
  std::vector<File> kept;
  kept.reserve(pol->cut.keep.size());
  for (size_t i : pol->cut.keep) kept.push_back(std::move(c->files[i]));
  c->files = std::move(kept);
  return Status::Ok();
}

// One request: files of one op.
struct Batch {
  hsm::Op op = hsm::Op::kMigrate;
  std::vector<File> files;
};

// Appends the requests for `files` (all of one op, in send order): at most
// kMaxFilesPerRequest files, and closed before it would pass max_bytes (a
// file bigger than that goes alone), so big files are spread over the
// requests in flight and progress moves often. `cut_at` (may be null) says
// where a request must close anyway (recalls: a new archive).
void Batches(const std::vector<File>& files, uint64_t max_bytes, const std::vector<bool>* cut_at,
             std::vector<Batch>* out) {
  uint64_t bytes = 0;
  bool open = false;
  for (size_t i = 0; i < files.size(); ++i) {
    const File& f = files[i];
    if (!open || out->back().files.size() >= hsm::kMaxFilesPerRequest ||
        (!out->back().files.empty() && bytes + f.size > max_bytes) || (cut_at && (*cut_at)[i])) {
      out->push_back(Batch{f.op, {}});
      bytes = 0;
      open = true;
    }
    out->back().files.push_back(f);
    bytes += f.size;
  }
}

// A recall candidate on its way to rank 0: where its copy sits.
struct Located {
  uint64_t archive = 0;
  std::string key;
  File file;
};

// COLLECTIVE. The recall requests of the whole run, in archive order: every
// rank reads the state of its files (the xattr, as the walk does: the same
// in a dry run, and no node agent needed for it) and sends (archive, key) to
// rank 0, which sorts them (ArchiveOrderLess, then path), cuts them into
// requests (a new archive starts a new one) and deals request b to rank
// b % P — as pdm_prestage does — so that at any moment the requests in
// flight over all processes read neighbouring keys and the run sweeps the
// archive in order. Returns this rank's requests, in that order.
std::vector<Batch> RecallBatches(MPI_Comm comm, std::vector<File> files, uint64_t max_bytes) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  std::vector<std::vector<std::string>> to_root(static_cast<size_t>(size));
  for (File& f : files) {
    auto hs = ReadHsmState(f.path);
    // An unreadable state sorts last; its request judges (and reports) it.
    const uint64_t archive = hs.ok() ? hs->archive_id : 0;
    const std::string key = hs.ok() ? hs->key : std::string();
    // archive, size, rule, key, path: the key has no tab, the path comes last.
    to_root[0].push_back(std::to_string(archive) + "\t" + std::to_string(f.size) + "\t" + std::to_string(f.rule) +
                         "\t" + key + "\t" + f.path);
  }
  files.clear();
  const std::vector<std::string> got = ExchangeStrings(comm, to_root);
  std::vector<std::vector<std::string>> dealt(static_cast<size_t>(size));
  if (rank == 0) {
    std::vector<Located> all;
    all.reserve(got.size());
    for (const std::string& line : got) {
      const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1), t3 = line.find('\t', t2 + 1),
                   t4 = line.find('\t', t3 + 1);
      Located l;
      l.archive = std::strtoull(line.c_str(), nullptr, 10);
      l.file.size = std::strtoull(line.c_str() + t1 + 1, nullptr, 10);
      l.file.rule = std::atoi(line.c_str() + t2 + 1);
      l.file.op = hsm::Op::kRecall;
      l.key = line.substr(t3 + 1, t4 - t3 - 1);
      l.file.path = line.substr(t4 + 1);
      all.push_back(std::move(l));
    }
    std::sort(all.begin(), all.end(), [](const Located& x, const Located& y) {
      if (x.archive != y.archive || x.key != y.key) return ArchiveOrderLess(x.archive, x.key, y.archive, y.key);
      return x.file.path < y.file.path;
    });
    std::vector<File> sorted;
    std::vector<bool> cut_at;
    for (size_t i = 0; i < all.size(); ++i) {
      cut_at.push_back(i > 0 && all[i].archive != all[i - 1].archive);
      sorted.push_back(std::move(all[i].file));
    }
    std::vector<Batch> batches;
    Batches(sorted, max_bytes, &cut_at, &batches);
    for (size_t b = 0; b < batches.size(); ++b)
      for (const File& f : batches[b].files)
        dealt[b % static_cast<size_t>(size)].push_back(std::to_string(b) + "\t" + std::to_string(f.size) + "\t" +
                                                       std::to_string(f.rule) + "\t" + f.path);
  }
  std::vector<Batch> mine;
  uint64_t current = UINT64_MAX;
  for (const std::string& line : ExchangeStrings(comm, dealt)) {
    const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1), t3 = line.find('\t', t2 + 1);
    const uint64_t b = std::strtoull(line.c_str(), nullptr, 10);
    if (b != current) {
      mine.push_back(Batch{hsm::Op::kRecall, {}});
      current = b;
    }
    mine.back().files.push_back(File{line.substr(t3 + 1), std::strtoull(line.c_str() + t1 + 1, nullptr, 10),
                                     hsm::Op::kRecall, std::atoi(line.c_str() + t2 + 1)});
  }
  return mine;
}

// COLLECTIVE (the recalls). This rank's requests, in the order they are
// sent — and a dry run lists: one group per op in SendRank order, each
// sorted by path (neighbours in a directory travel in one request, which
// the HSM batches into one archive container) except recalls, which go in
// archive order (RecallBatches).
std::vector<Batch> Plan(MPI_Comm comm, std::vector<File> files, uint64_t max_bytes) {
  std::sort(files.begin(), files.end(), [](const File& x, const File& y) {
    if (x.op != y.op) return SendRank(x.op) < SendRank(y.op);
    return x.path < y.path;
  });
  std::vector<Batch> out;
  std::vector<File> recalls, group;
  for (size_t i = 0; i <= files.size(); ++i) {
    if (i == files.size() || (!group.empty() && files[i].op != group.front().op)) {
      if (!group.empty()) Batches(group, max_bytes, nullptr, &out);
      group.clear();
      if (i == files.size()) break;
    }
    if (files[i].op == hsm::Op::kRecall) recalls.push_back(std::move(files[i]));
    else group.push_back(std::move(files[i]));
  }
  // Every rank takes part, with recalls or not: rank 0 orders them all.
  const bool any_recall = AnyAll(comm, !recalls.empty());
  if (any_recall) {
    std::vector<Batch> r = RecallBatches(comm, std::move(recalls), max_bytes);
    for (Batch& b : r) out.push_back(std::move(b));
  }
  return out;
}

// Per-rule counts of a policy run.
struct RuleTally {
  uint64_t files = 0, bytes = 0, ok = 0, failed = 0;
};

struct Totals {
  uint64_t files = 0, bytes = 0, ok = 0, failed = 0, skipped = 0, requests = 0;
  std::vector<RuleTally> rules;  // with a policy: one per rule
};

// Sends this rank's batches with `threads` request threads while the calling
// thread drives the progress reporter. COLLECTIVE (the reporter).
void SendAll(MPI_Comm comm, const HsmClient& hsm, const std::string& what, const std::string& tool,
             const std::vector<Batch>& batches, unsigned threads, double progress_s, Totals* t) {
  Progress prog(comm, progress_s, tool, what);
  prog.SetTotal(SumAll(comm, t->files));
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_files{0}, done_bytes{0}, ok{0}, failed{0};
  std::mutex mu;
  std::condition_variable cv;
  unsigned running = 0;
  auto work = [&] {
    for (size_t b; (b = next.fetch_add(1)) < batches.size();) {
      const std::vector<File>& files = batches[b].files;
      std::vector<std::string> paths;
      for (const File& f : files) paths.push_back(f.path);
      const auto outcomes = hsm.Run(batches[b].op, paths);
      uint64_t bytes = 0;
      for (size_t i = 0; i < outcomes.size(); ++i) {
        bytes += files[i].size;
        std::lock_guard<std::mutex> l(mu);  // whole lines, never interleaved; the tallies
        if (files[i].rule >= 0) {
          RuleTally& r = t->rules[static_cast<size_t>(files[i].rule)];
          ++(outcomes[i].ok ? r.ok : r.failed);
        }
        if (outcomes[i].ok) {
          ++ok;
        } else {
          ++failed;
          std::fprintf(stderr, "%s: %s\n", tool.c_str(), outcomes[i].error.c_str());
        }
      }
      done_bytes += bytes;
      done_files += outcomes.size();
      cv.notify_all();
    }
    std::lock_guard<std::mutex> l(mu);
    --running;
    cv.notify_all();
  };
  std::vector<std::thread> pool;
  if (threads == 0) {
    running = 1;
    work();  // MPI without thread support: no progress lines while a request is out
  } else {
    running = threads;
    for (unsigned i = 0; i < threads; ++i) pool.emplace_back(work);
  }
  uint64_t added_files = 0, added_bytes = 0;
  for (;;) {
    bool finished;
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait_for(l, std::chrono::milliseconds(100));
      finished = running == 0;
    }
    const uint64_t f = done_files.load(), by = done_bytes.load();
    prog.Add(f - added_files, by - added_bytes);
    added_files = f;
    added_bytes = by;
    prog.Tick();
    if (finished) break;
  }
  for (auto& th : pool) th.join();
  uint64_t items = 0, bytes = 0;
  prog.Finish(&items, &bytes);
  t->ok = ok.load();
  t->failed = failed.load();
  t->requests = batches.size();
}

// Loads --policy and checks it fits the tool. A purge rule is refused
// whole, not skipped: the HSM tools only send HSM requests, and running the
// rest of a policy that also means to delete files would apply half of it.
// A tool with none of its own rules in the policy has nothing to do, which
// is a mistake worth saying (pdm-migrate runs every HSM rule). Usage errors:
// InvalidArgument / NotFound.
Status LoadPolicy(const ToolKind& k, const std::string& file, Policy* p) {
  PDM_ASSIGN_OR_RETURN(*p, Policy::Load(file));
  for (const Rule& r : p->rules)
    if (r.action == Action::kPurge)
      return InvalidArgument("policy " + file + ": rule '" + r.name +
                             "' has action purge: refused (the HSM tools send HSM requests only; purge rules are "
                             "pdm-purge's)");
  const bool any = std::any_of(p->rules.begin(), p->rules.end(),
                               [&](const Rule& r) { return (ActionBit(r.action) & k.policy_actions) != 0; });
  if (!any)
    return InvalidArgument("policy " + file + ": no " + std::string(k.name) + " rule: nothing for pdm-" +
                           std::string(k.name) + " to do (pdm-migrate --policy runs every HSM rule)");
  return Status::Ok();
}

int RunAction(const ToolKind& k, const MpiSession& mpi, const Args& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const std::string tool = "pdm-" + std::string(k.name);
  auto max_bytes = ParseSize(a.batch_bytes);
  if (!max_bytes.ok() || *max_bytes == 0) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: --batch-bytes: give a size such as 64M\n", tool.c_str());
    return 2;
  }
  const double t0 = MPI_Wtime();
  Policy policy;
  PolicyRun pol;
  const bool with_policy = !a.policy.empty();
  if (with_policy) {
    // Every rank reads the file; they agree on one verdict.
    Status ps = AgreeStatus(comm, LoadPolicy(k, a.policy, &policy));
    if (!ps.ok()) {
      if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), ps.message().c_str());
      return 2;
    }
    pol.policy = &policy;
    pol.actions = k.policy_actions;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pol.now_ns = int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
    MPI_Bcast(&pol.now_ns, 1, MPI_INT64_T, 0, comm);  // every rank judges ages against rank 0's clock
  }
  Collected c;
  if (Status st = Collect(comm, tool, k, a, with_policy ? &pol : nullptr, &c); !st.ok()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.ToString().c_str());
    return 2;
  }
  Totals t;
  t.files = c.files.size();
  t.rules.resize(policy.rules.size());
  for (const File& f : c.files) {
    t.bytes += f.size;
    if (f.rule >= 0) {
      ++t.rules[static_cast<size_t>(f.rule)].files;
      t.rules[static_cast<size_t>(f.rule)].bytes += f.size;
    }
  }
  // One plan for both runs: a dry run lists exactly the requests a real run sends.
  const std::vector<Batch> batches = Plan(comm, std::move(c.files), *max_bytes);

  Status st;
  std::unique_ptr<HsmClient> hsm;
  if (a.dryrun) {
    // With a policy each line says which action the file gets: "migrate /p".
    std::string list;
    for (const Batch& b : batches)
      for (const File& f : b.files)
        list += (with_policy ? std::string(hsm::OpName(b.op)) + " " : std::string()) + f.path + "\n";
    if (!a.json) st = WriteRankOrdered(comm, list, stdout);
    t.requests = batches.size();
  } else {
    auto h = HsmClient::Open(tool, true);
    st = AgreeStatus(comm, h.ok() ? Status::Ok() : h.status());
    if (st.ok()) {
      hsm = std::move(*h);
      SendAll(comm, *hsm, with_policy ? std::string("files done") : std::string("files ") + k.done, tool, batches,
              mpi.provided() >= MPI_THREAD_FUNNELED ? a.requests : 0, a.progress, &t);
    }
  }
  const double secs = MPI_Wtime() - t0;
  const uint64_t files = SumAll(comm, t.files), bytes = SumAll(comm, t.bytes), ok = SumAll(comm, t.ok),
                 failed = SumAll(comm, t.failed), skipped = SumAll(comm, c.skipped),
                 errors = SumAll(comm, c.errors), requests = SumAll(comm, t.requests),
                 scanned = SumAll(comm, c.scanned);
  std::vector<uint64_t> tally(policy.rules.size() * 4), tally_sum(tally.size());
  for (size_t r = 0; r < t.rules.size(); ++r) {
    tally[4 * r] = t.rules[r].files;
    tally[4 * r + 1] = t.rules[r].bytes;
    tally[4 * r + 2] = t.rules[r].ok;
    tally[4 * r + 3] = t.rules[r].failed;
  }
  if (!tally.empty())
    MPI_Allreduce(tally.data(), tally_sum.data(), static_cast<int>(tally.size()), MPI_UINT64_T, MPI_SUM, comm);
  if (mpi.rank() == 0) {
    FILE* out = a.dryrun && !a.json ? stderr : stdout;  // a dry-run list on stdout stays clean
    const double bps = secs > 0 ? static_cast<double>(bytes) / secs : 0;
    const double fps = secs > 0 ? static_cast<double>(files) / secs : 0;
    if (a.json) {
      nlohmann::json j{{"tool", tool},         {"op", std::string(hsm::OpName(k.op))},
                       {"files", files},       {"bytes", bytes},
                       {"ok", a.dryrun ? 0 : ok}, {"failed", failed + errors},
                       {"skipped", skipped},   {"requests", requests},
                       {"dryrun", a.dryrun},   {"ranks", mpi.size()},
                       {"seconds", secs},      {"bytes_per_second", bps},
                       {"files_per_second", fps}};
      if (with_policy) {
        j["policy"] = a.policy;
        j["scanned"] = scanned;
        nlohmann::json rules = nlohmann::json::array();
        for (size_t r = 0; r < policy.rules.size(); ++r)
          rules.push_back({{"name", policy.rules[r].name},
                           {"action", ActionName(policy.rules[r].action)},
                           {"files", tally_sum[4 * r]},
                           {"bytes", tally_sum[4 * r + 1]},
                           {"ok", tally_sum[4 * r + 2]},
                           {"failed", tally_sum[4 * r + 3]}});
        j["rules"] = rules;
        if (policy.trigger) {
          j["triggered"] = pol.cut.triggered;
          j["to_free"] = pol.cut.to_free;
        }
      }
      if (!st.ok()) j["failure"] = st.message();
      std::fprintf(out, "%s\n", j.dump().c_str());
    } else if (st.ok()) {
      if (with_policy && policy.trigger && !pol.cut.triggered)
        std::fprintf(out, "%s: usage below the high watermark: nothing to do\n", tool.c_str());
      if (a.dryrun)
        std::fprintf(out, "%s: dry run: would send %s files (%s) in %s requests; %s skipped (not regular files)\n",
                     tool.c_str(), FormatCount(files).c_str(), FormatBytes(bytes).c_str(),
                     FormatCount(requests).c_str(), FormatCount(skipped).c_str());
      else
        std::fprintf(out, "%s: %s of %s files %s (%s) in %s, %s/s, %s files/s; %s failed, %s skipped\n",
                     tool.c_str(), FormatCount(ok).c_str(), FormatCount(files).c_str(),
                     with_policy ? "done" : k.done, FormatBytes(bytes).c_str(), FormatDuration(secs).c_str(),
                     FormatBytes(static_cast<uint64_t>(bps)).c_str(), FormatCount(static_cast<uint64_t>(fps)).c_str(),
                     FormatCount(failed + errors).c_str(), FormatCount(skipped).c_str());
      for (size_t r = 0; r < policy.rules.size(); ++r) {
        if ((ActionBit(policy.rules[r].action) & k.policy_actions) == 0) continue;
        std::fprintf(out, "%s:   rule '%s' (%s): %s files (%s)", tool.c_str(), policy.rules[r].name.c_str(),
                     ActionName(policy.rules[r].action), FormatCount(tally_sum[4 * r]).c_str(),
                     FormatBytes(tally_sum[4 * r + 1]).c_str());
        if (!a.dryrun)
          std::fprintf(out, ", %s ok, %s failed", FormatCount(tally_sum[4 * r + 2]).c_str(),
                       FormatCount(tally_sum[4 * r + 3]).c_str());
        std::fprintf(out, "\n");
      }
    }
    if (!st.ok()) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.message().c_str());
  }
  if (!st.ok()) return 2;
  return failed + errors > 0 ? 1 : 0;
}

// `lfs hsm_state` style: "path: (0x0000000d) exists archived released,
// archive_id:1 key:..."; no flags: "path: (0x00000000)".
std::string HumanState(const std::string& path, const hsm::FileState& s) {
  char hex[16];
  std::snprintf(hex, sizeof hex, "0x%08x", s.flags);
  std::string line = path + ": (" + hex + ")";
  for (const auto& f : hsm::FlagNames(s.flags)) line += " " + f;
  if (s.archive_id != 0) line += ", archive_id:" + std::to_string(s.archive_id);
  if (!s.key.empty()) line += " key:" + s.key;
  return line + "\n";
}

int RunState(const ToolKind& k, const MpiSession& mpi, const Args& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const std::string tool = "pdm-" + std::string(k.name);
  Collected c;
  if (Status st = Collect(comm, tool, k, a, nullptr, &c); !st.ok()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.ToString().c_str());
    return 2;
  }
  std::sort(c.files.begin(), c.files.end(), [](const File& x, const File& y) { return x.path < y.path; });
  auto h = HsmClient::Open(tool, false);
  Status st = AgreeStatus(comm, h.ok() ? Status::Ok() : h.status());
  if (!st.ok()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.message().c_str());
    return 2;
  }
  constexpr int kNumFlags = 7;
  uint64_t counts[kNumFlags + 2] = {};  // per flag, then "none", then read errors
  std::string text;
  bool first = true;
  {
    Progress prog(comm, a.progress, tool, "files");
    for (const File& f : c.files) {
      uint64_t size = 0;
      Result<hsm::FileState> s = InvalidArgument("unread");
      auto handle = HsmClient::RegularFileHandle(f.path, &size);
      if (handle.ok()) s = (*h)->State(*handle);
      else s = handle.status();
      prog.Add(1, size);
      prog.Tick();
      if (!s.ok()) {
        ++counts[kNumFlags + 1];
        std::fprintf(stderr, "%s: %s: %s\n", tool.c_str(), f.path.c_str(), s.status().ToString().c_str());
        continue;
      }
      for (int b = 0; b < kNumFlags; ++b)
        if (s->flags & (1u << b)) ++counts[b];
      if (s->flags == 0) ++counts[kNumFlags];
      if (a.summary) continue;
      if (a.json) {
        nlohmann::json j = hsm::ToJson(*s);
        j["path"] = f.path;
        j["archive_id"] = s->archive_id;
        j["file_size"] = size;  // now; "size" is the size when the copy was taken
        text += (first ? "" : ",\n") + j.dump();
        first = false;
      } else {
        text += HumanState(f.path, *s);
      }
    }
    uint64_t items = 0, bytes = 0;
    prog.Finish(&items, &bytes);
  }
  uint64_t all[kNumFlags + 2];
  MPI_Allreduce(counts, all, kNumFlags + 2, MPI_UINT64_T, MPI_SUM, comm);
  const uint64_t files = SumAll(comm, c.files.size()), errors = SumAll(comm, c.errors) + all[kNumFlags + 1],
                 skipped = SumAll(comm, c.skipped);
  nlohmann::json counts_json;
  std::string counts_text;
  for (int b = 0; b < kNumFlags; ++b) {
    const std::string name = hsm::FlagsString(1u << b);
    counts_json[name] = all[b];
    counts_text += ", " + FormatCount(all[b]) + " " + name;
  }
  counts_json["none"] = all[kNumFlags];
  if (a.json && !a.summary) {
    // One JSON document although each rank writes its own part: every rank's
    // part but the first non-empty one starts with a comma.
    uint64_t mine = text.empty() ? 0 : 1, before = 0;
    MPI_Exscan(&mine, &before, 1, MPI_UINT64_T, MPI_SUM, comm);
    if (mpi.rank() == 0) before = 0;
    if (before > 0 && !text.empty()) text = ",\n" + text;
    if (mpi.rank() == 0) std::printf("{\"files\":[\n");
    std::fflush(stdout);
    st = WriteRankOrdered(comm, text, stdout);
    if (mpi.rank() == 0) {
      nlohmann::json tail{{"total", files}, {"errors", errors}, {"skipped", skipped}, {"counts", counts_json}};
      const std::string t = tail.dump();
      std::printf("\n],%s\n", t.substr(1).c_str());  // the tail's members continue the object
    }
  } else if (a.json) {
    if (mpi.rank() == 0) {
      nlohmann::json j{{"total", files}, {"errors", errors}, {"skipped", skipped}, {"counts", counts_json}};
      std::printf("%s\n", j.dump().c_str());
    }
  } else {
    if (!a.summary) st = WriteRankOrdered(comm, text, stdout);
    if (mpi.rank() == 0 && a.summary)
      std::printf("%s: %s files%s, %s none; %s errors, %s skipped\n", tool.c_str(), FormatCount(files).c_str(),
                  counts_text.c_str(), FormatCount(all[kNumFlags]).c_str(), FormatCount(errors).c_str(),
                  FormatCount(skipped).c_str());
  }
  std::fflush(stdout);
  if (!st.ok()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.ToString().c_str());
    return 1;
  }
  return errors > 0 ? 1 : 0;
}

}  // namespace

int HsmToolMain(std::string_view tool, int argc, char** argv) {
  const ToolKind* k = nullptr;
  for (const ToolKind& x : kKinds)
    if (x.name == tool) k = &x;
  if (k == nullptr) {
    std::fprintf(stderr, "pdm hsm tools: unknown tool '%.*s'\n", static_cast<int>(tool.size()), tool.data());
    return 2;
  }
  // MPI_THREAD_FUNNELED: the request threads never call MPI, but the main
  // thread keeps the progress reporter's collectives going while they block
  // in dm_send_msg, and that needs more than MPI_THREAD_SINGLE.
  MpiSession mpi(&argc, &argv, MPI_THREAD_FUNNELED);
  Args a;
  if (int rc = Parse(*k, argc, argv, mpi.rank(), &a); rc >= 0) return rc;
  return k->is_state ? RunState(*k, mpi, a) : RunAction(*k, mpi, a);
}

}  // namespace pdm::tools
