// The HSM tools: pdm-migrate, pdm-archive, pdm-release, pdm-recall,
// pdm-remove and pdm-state, one source (the tool is chosen by
// pdm_hsm_main.cc's PDM_HSM_TOOL). docs/hsm-tools.md is the manual.
//
//   pdm-migrate [--dryrun] [--progress N] [--json] [--requests K]
//               [--batch-bytes SIZE] (PATH... | -i LIST|CATALOG)
//   (pdm-archive, pdm-release, pdm-recall, pdm-remove: the same options)
//   pdm-state [--json] [--summary] (PATH... | -i LIST|CATALOG)
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
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "hsm/protocol.h"
#include "hsm/state.h"
#include "tools/catalog.h"
#include "tools/hsm_client.h"
#include "tools/mpi_util.h"
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
};

constexpr ToolKind kKinds[] = {
    {"migrate", false, hsm::Op::kMigrate, "migrated", "copy files to the archive and free their space"},
    {"archive", false, hsm::Op::kArchive, "archived", "copy files to the archive; they stay resident"},
    {"release", false, hsm::Op::kRelease, "released", "free the space of archived, unmodified files"},
    {"recall", false, hsm::Op::kRecall, "recalled", "bring released files back from the archive"},
    {"remove", false, hsm::Op::kRemove, "removed from the archive", "drop the archive copies of files"},
    {"cancel", false, hsm::Op::kCancel, "cancelled", "stop the archive or release of files still in flight"},
    {"state", true, hsm::Op::kMigrate, "", "show the HSM state of files (like lfs hsm_state)"},
};

struct Args {
  std::vector<std::string> paths;
  std::string input, batch_bytes = "64M";
  bool dryrun = false, json = false, summary = false;
  double progress = 0;
  unsigned requests = 4;
};

// MPI with MPI_THREAD_FUNNELED: the request threads never call MPI, but the
// main thread keeps the progress reporter's collectives going while they
// block in dm_send_msg, and that needs more than MPI_THREAD_SINGLE.
class MpiFunneled {
 public:
  MpiFunneled(int* argc, char*** argv) {
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided_);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiFunneled() { MPI_Finalize(); }
  MpiFunneled(const MpiFunneled&) = delete;
  MpiFunneled& operator=(const MpiFunneled&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool threads_ok() const { return provided_ >= MPI_THREAD_FUNNELED; }

 private:
  int provided_ = MPI_THREAD_SINGLE, rank_ = 0, size_ = 1;
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
};

struct Collected {
  std::vector<File> files;  // this rank's regular files, sorted by path
  uint64_t skipped = 0;     // symlinks and other non-regular files
  uint64_t errors = 0;      // paths that could not be looked at
};

// COLLECTIVE. This rank's share of the regular files named by the paths (a
// walk) or the input (each line or catalog row lstat'ed afresh: a catalog
// may be old).
Status Collect(MPI_Comm comm, const std::string& tool, const Args& a, Collected* c) {
  auto keep = [c](const Entry& e) {
    if (e.is_file()) c->files.push_back({e.path, e.size});
    else if (!e.is_dir()) ++c->skipped;
  };
  Status st;
  if (a.input.empty()) {
    WalkOptions w;
    w.roots = a.paths;
    w.read_hsm = false;  // the state is read through the DMAPI afterwards
    WalkStats ws;
    st = Walk(comm, w, [&](Entry&& e) { keep(e); }, &ws);
    c->errors += ws.errors + ws.vanished;
  } else {
    auto one = [&](const std::string& path) {
      Entry e;
      Status s = StatEntry(path, false, &e);
      if (!s.ok()) {
        ++c->errors;
        std::fprintf(stderr, "%s: %s\n", tool.c_str(), s.ToString().c_str());
      } else if (e.is_dir()) {
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
  // Sorted by path: neighbours in a directory travel in one request, which
  // is what the HSM batches into one archive container.
  std::sort(c->files.begin(), c->files.end(), [](const File& x, const File& y) { return x.path < y.path; });
  return AgreeStatus(comm, st);
}

// Splits files into requests: at most kMaxFilesPerRequest files, and closed
// before it would pass max_bytes (a file bigger than that goes alone), so big
// files are spread over the requests in flight and progress moves often.
std::vector<std::vector<File>> Batches(const std::vector<File>& files, uint64_t max_bytes) {
  std::vector<std::vector<File>> out;
  uint64_t bytes = 0;
  for (const File& f : files) {
    if (out.empty() || out.back().size() >= hsm::kMaxFilesPerRequest ||
        (!out.back().empty() && bytes + f.size > max_bytes)) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(f);
    bytes += f.size;
  }
  return out;
}

struct Totals {
  uint64_t files = 0, bytes = 0, ok = 0, failed = 0, skipped = 0, requests = 0;
};

// Sends this rank's batches with `threads` request threads while the calling
// thread drives the progress reporter. COLLECTIVE (the reporter).
void SendAll(MPI_Comm comm, const HsmClient& hsm, const ToolKind& k, const std::string& tool,
             const std::vector<std::vector<File>>& batches, unsigned threads, double progress_s, Totals* t) {
  Progress prog(comm, progress_s, tool, std::string("files ") + k.done);
  prog.SetTotal(SumAll(comm, t->files));
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_files{0}, done_bytes{0}, ok{0}, failed{0};
  std::mutex mu;
  std::condition_variable cv;
  unsigned running = 0;
  auto work = [&] {
    for (size_t b; (b = next.fetch_add(1)) < batches.size();) {
      std::vector<std::string> paths;
      for (const File& f : batches[b]) paths.push_back(f.path);
      const auto outcomes = hsm.Run(k.op, paths);
      uint64_t bytes = 0;
      for (size_t i = 0; i < outcomes.size(); ++i) {
        bytes += batches[b][i].size;
        if (outcomes[i].ok) {
          ++ok;
        } else {
          ++failed;
          std::lock_guard<std::mutex> l(mu);  // whole lines, never interleaved
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

int RunAction(const ToolKind& k, const MpiFunneled& mpi, const Args& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const std::string tool = "pdm-" + std::string(k.name);
  auto max_bytes = ParseSize(a.batch_bytes);
  if (!max_bytes.ok() || *max_bytes == 0) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: --batch-bytes: give a size such as 64M\n", tool.c_str());
    return 2;
  }
  const double t0 = MPI_Wtime();
  Collected c;
  if (Status st = Collect(comm, tool, a, &c); !st.ok()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.ToString().c_str());
    return 2;
  }
  Totals t;
  t.files = c.files.size();
  for (const File& f : c.files) t.bytes += f.size;
  const auto batches = Batches(c.files, *max_bytes);

  Status st;
  std::unique_ptr<HsmClient> hsm;
  if (a.dryrun) {
    std::string list;
    for (const File& f : c.files) list += f.path + "\n";
    if (!a.json) st = WriteRankOrdered(comm, list, stdout);
    t.requests = batches.size();
  } else {
    auto h = HsmClient::Open(tool, true);
    st = AgreeStatus(comm, h.ok() ? Status::Ok() : h.status());
    if (st.ok()) {
      hsm = std::move(*h);
      SendAll(comm, *hsm, k, tool, batches, mpi.threads_ok() ? a.requests : 0, a.progress, &t);
    }
  }
  const double secs = MPI_Wtime() - t0;
  const uint64_t files = SumAll(comm, t.files), bytes = SumAll(comm, t.bytes), ok = SumAll(comm, t.ok),
                 failed = SumAll(comm, t.failed), skipped = SumAll(comm, c.skipped),
                 errors = SumAll(comm, c.errors), requests = SumAll(comm, t.requests);
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
      if (!st.ok()) j["failure"] = st.message();
      std::fprintf(out, "%s\n", j.dump().c_str());
    } else if (st.ok()) {
      if (a.dryrun)
        std::fprintf(out, "%s: dry run: would send %s files (%s) in %s requests; %s skipped (not regular files)\n",
                     tool.c_str(), FormatCount(files).c_str(), FormatBytes(bytes).c_str(),
                     FormatCount(requests).c_str(), FormatCount(skipped).c_str());
      else
        std::fprintf(out, "%s: %s of %s files %s (%s) in %s, %s/s, %s files/s; %s failed, %s skipped\n",
                     tool.c_str(), FormatCount(ok).c_str(), FormatCount(files).c_str(), k.done,
                     FormatBytes(bytes).c_str(), FormatDuration(secs).c_str(),
                     FormatBytes(static_cast<uint64_t>(bps)).c_str(), FormatCount(static_cast<uint64_t>(fps)).c_str(),
                     FormatCount(failed + errors).c_str(), FormatCount(skipped).c_str());
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

int RunState(const ToolKind& k, const MpiFunneled& mpi, const Args& a) {
  const MPI_Comm comm = MPI_COMM_WORLD;
  const std::string tool = "pdm-" + std::string(k.name);
  Collected c;
  if (Status st = Collect(comm, tool, a, &c); !st.ok()) {
    if (mpi.rank() == 0) std::fprintf(stderr, "%s: %s\n", tool.c_str(), st.ToString().c_str());
    return 2;
  }
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
  MpiFunneled mpi(&argc, &argv);
  Args a;
  if (int rc = Parse(*k, argc, argv, mpi.rank(), &a); rc >= 0) return rc;
  return k->is_state ? RunState(*k, mpi, a) : RunAction(*k, mpi, a);
}

}  // namespace pdm::tools
