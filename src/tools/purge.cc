#include "tools/purge.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>

#include "common/posix.h"
#include "tools/catalog.h"
#include "tools/hsm_state.h"
#include "tools/mpi_util.h"
#include "tools/progress.h"
#include "tools/report.h"
#include "tools/walk.h"

namespace pdm::tools {

Result<std::string> CheckPurgeRoot(const std::string& root, bool force) {
  char buf[PATH_MAX];
  if (realpath(root.c_str(), buf) == nullptr) return PosixError("realpath", root, errno);
  std::string real(buf);
  struct stat st, up;
  if (lstat(real.c_str(), &st) != 0) return PosixError("lstat", real, errno);
  if (!S_ISDIR(st.st_mode)) return InvalidArgument(real + " is not a directory");
  if (force) return real;
  if (real == "/") return FailedPrecondition("refusing to purge / (use --force)");
  const std::string parent = real.substr(0, std::max<size_t>(1, real.rfind('/')));
  if (lstat(parent.c_str(), &up) != 0) return PosixError("lstat", parent, errno);
  // A mount root sits on another device than its parent (or is its own
  // parent, for a bind of /): purging it empties a whole file system.
  if (up.st_dev != st.st_dev || (up.st_ino == st.st_ino && up.st_dev == st.st_dev))
    return FailedPrecondition("refusing to purge the mount root " + real + " (use --force)");
  return real;
}

namespace {

struct Selected {
  std::string path;
  uint64_t size = 0;
  uint32_t uid = 0;
  int rule = -1;  // policy rule, -1 without a policy
  int64_t key = 0;
  uint64_t weight = 0;  // what a volume limit counts (VolumeOf)
};

// Opens directories without following any symlink on the way, and keeps the
// last one open: the balanced list is mostly grouped by directory.
class ParentCache {
 public:
  ~ParentCache() { Reset(); }
  // The fd of `dir`, or -errno.
  int Open(const std::string& dir) {
    if (fd_ >= 0 && dir == dir_) return fd_;
    Reset();
    struct open_how how;
    std::memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd = syscall(SYS_openat2, AT_FDCWD, dir.c_str(), &how, sizeof how);
    if (fd < 0) return -errno;
    fd_ = static_cast<int>(fd);
    dir_ = dir;
    return fd_;
  }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    dir_.clear();
  }

 private:
  int fd_ = -1;
  std::string dir_;
};

void SplitPath(const std::string& path, std::string* dir, std::string* name) {
  const size_t slash = path.rfind('/');
  *dir = slash == 0 ? "/" : path.substr(0, slash);
  *name = path.substr(slash + 1);
}

bool StrictlyUnder(const std::string& path, const std::vector<std::string>& roots) {
  for (const auto& r : roots) {
    if (r == "/") {
      if (path.size() > 1) return true;
    } else if (path.size() > r.size() && path.compare(0, r.size(), r) == 0 && path[r.size()] == '/') {
      return true;
    }
  }
  return false;
}

bool UnderOrAt(const std::string& path, const std::vector<std::string>& roots) {
  return std::find(roots.begin(), roots.end(), path) != roots.end() || StrictlyUnder(path, roots);
}

// In input mode nothing was pruned, so an ancestor excluded by a name glob
// ("--exclude keep") must be checked here.
bool UnderExcludedDir(const Criteria& c, const std::string& path) {
  if (c.exclude.empty()) return false;
  std::string dir = path;
  for (;;) {
    const size_t slash = dir.rfind('/');
    if (slash == std::string::npos || slash == 0) return false;
    dir.resize(slash);
    for (const auto& g : c.exclude)
      if (g.Matches(dir)) return true;
  }
}

// A clean, verified copy, resident data, and no administrator veto: what a
// policy's release rule takes too.
bool Releasable(const Entry& e) { return ActionApplies(Action::kRelease, e); }

// The policy actions a purge does; the others are the HSM tools'.
constexpr uint32_t kPurgeActions = ActionBit(Action::kPurge) | ActionBit(Action::kRelease);

class Purger {
 public:
  Purger(MPI_Comm comm, const PurgeOptions& o, PurgeResult* r) : comm_(comm), o_(o), res_(r) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  Status Run() {
    const double t0 = MPI_Wtime();
    now_ = o_.now_ns;
    if (now_ == 0) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      now_ = int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
      // Every rank judges ages against rank 0's clock.
      MPI_Bcast(&now_, 1, MPI_INT64_T, 0, comm_);
    }
    PDM_RETURN_IF_ERROR(Prepare());
    PDM_RETURN_IF_ERROR(Select());
    PDM_RETURN_IF_ERROR(ApplyPolicyLimits());
    PDM_RETURN_IF_ERROR(ApplyOptionLimits());
    PDM_RETURN_IF_ERROR(WriteReport());
    std::vector<std::string> work = Balance();
    std::string done_list;
    Act(work, &done_list);
    // A dry run decides the directories too, with the same code: the list it
    // writes is the list of everything a real run removes.
    if (o_.rmdir) RemoveEmptiedDirs(&done_list);
    Status st = WriteLists(done_list);
    Finish(MPI_Wtime() - t0);
    return st;
  }

 private:
  void Error(const std::string& msg) {
    ++errors_;
    if (static_cast<int>(errors_) <= o_.max_error_lines) std::fprintf(stderr, "pdm-purge[%d]: %s\n", rank_, msg.c_str());
  }

  Status Prepare() {
    Status st;
    for (const auto& r : o_.roots) {
      auto real = CheckPurgeRoot(r, o_.force);
      if (!real.ok()) {
        st = real.status();
        break;
      }
      roots_.push_back(*real);
    }
    if (st.ok() && roots_.empty() && o_.input.empty()) st = InvalidArgument("no PATH and no -i input");
    const bool needs_hook = o_.release_only ||
                            (o_.policy && std::any_of(o_.policy->rules.begin(), o_.policy->rules.end(),
                                                      [](const Rule& r) { return r.action == Action::kRelease; }));
    if (st.ok() && needs_hook && !o_.release && !o_.dryrun)
      st = Unimplemented("release is not supported without the HSM (no release hook)");
    return AgreeStatus(comm_, st);
  }

  // The decision for one entry; the same in the dry run and the real run.
  int Judge(const Entry& e) const {
    if (o_.protect.Covers(e.path)) return -2;
    int rule = -1;
    if (o_.policy) {
      // Migrate / archive / recall rules keep their files from the purge
      // rules below them, and leave them to the HSM tools.
      rule = o_.policy->RuleTaking(e, now_, kPurgeActions);
      if (rule < 0) return -2;
    } else {
      if (!Matches(o_.criteria, e, now_)) return -2;
      if (o_.release_only && !Releasable(e)) return -2;
    }
    return rule;
  }

  bool Releases(int rule) const {
    return rule >= 0 ? o_.policy->rules[static_cast<size_t>(rule)].action == Action::kRelease : o_.release_only;
  }

  void Consider(Entry&& e) {
    ++scanned_;
    const int rule = Judge(e);
    if (rule == -2) return;
    Selected s;
    s.rule = rule;
    s.size = e.size;
    s.uid = e.uid;
    s.key = OrderKeyOf(rule >= 0 ? o_.policy->rules[static_cast<size_t>(rule)].order : o_.order, e);
    s.weight = rule >= 0 ? VolumeOf(o_.policy->rules[static_cast<size_t>(rule)].action, e) : e.allocated();
    s.path = std::move(e.path);
    sel_.push_back(std::move(s));
  }

  Status Select() {
    Progress prog(comm_, o_.progress_s, "pdm-purge", "entries scanned");
    if (o_.input.empty()) {
      WalkOptions w;
      w.roots = roots_;
      w.read_hsm = o_.read_hsm;
      w.progress = &prog;
      w.max_error_lines = o_.max_error_lines;
      // Excluded (CLI) and protected directories are not read at all.
      w.prune = [this](const Entry& d) {
        return o_.protect.Covers(d.path) || (!o_.policy && Prunes(o_.criteria, o_.protect, d));
      };
      WalkStats ws;
      Status st = Walk(comm_, w, [this](Entry&& e) { Consider(std::move(e)); }, &ws);
      errors_ += ws.errors;
      uint64_t i = 0, b = 0;
      prog.Finish(&i, &b);
      return AgreeStatus(comm_, st);
    }
    // Input mode: every listed path is lstat'ed now; the list may be old.
    auto one = [&](const std::string& raw) -> Status {
      prog.Add(1, 0);
      prog.Tick();
      const std::string path = AbsolutePath(raw);
      if (!roots_.empty() && !UnderOrAt(path, roots_)) {
        ++skipped_;
        return Status::Ok();
      }
      if (!o_.policy && UnderExcludedDir(o_.criteria, path)) return Status::Ok();
      Entry e;
      Status st = StatEntry(path, o_.read_hsm, &e);
      if (!st.ok()) {
        if (st.err() == ENOENT) ++skipped_;
        else Error(st.ToString());
        return Status::Ok();
      }
      Consider(std::move(e));
      return Status::Ok();
    };
    Status st;
    if (IsCatalogFile(o_.input))
      st = ForEachCatalogRow(comm_, o_.input, 1 << 16, [&](Entry&& e) { return one(e.path); });
    else
      st = ForEachListLine(comm_, o_.input, [&](std::string&& line) { return one(line); });
    uint64_t i = 0, b = 0;
    prog.Finish(&i, &b);
    return st;
  }

  // Orders each rule's candidates and cuts them to its limits and the
  // trigger's budget (the policy engine's CutToPolicy, shared with the HSM
  // tools). Without a policy there is nothing to cut.
  Status ApplyPolicyLimits() {
    if (!o_.policy) return Status::Ok();
    std::vector<PolicyCandidate> c;
    c.reserve(sel_.size());
    for (const Selected& s : sel_) c.push_back(PolicyCandidate{s.rule, s.key, s.weight});
    PolicyCut cut;
    PDM_RETURN_IF_ERROR(CutToPolicy(comm_, *o_.policy, roots_.empty() ? std::string("/") : roots_[0], c, &cut));
    res_->triggered = cut.triggered;
    res_->to_free = cut.to_free;
    std::vector<Selected> kept;
    kept.reserve(cut.keep.size());
    for (size_t i : cut.keep) kept.push_back(std::move(sel_[i]));
    sel_ = std::move(kept);
    return Status::Ok();
  }

  // --limit-count / --limit-bytes without a policy: the whole selection is
  // one rule's candidates, cut by the same PrefixSelect (and so with the same
  // tie rules) as a policy rule's.
  Status ApplyOptionLimits() {
    if (o_.policy || (!o_.max_count && !o_.max_volume)) return Status::Ok();
    std::vector<Candidate> c;
    c.reserve(sel_.size());
    for (size_t i = 0; i < sel_.size(); ++i) c.push_back(Candidate{sel_[i].key, sel_[i].weight, i});
    const size_t take = PrefixSelect(comm_, &c, o_.max_count, o_.max_volume);
    std::vector<Selected> kept;
    kept.reserve(take);
    for (size_t i = 0; i < take; ++i) kept.push_back(std::move(sel_[c[i].index]));
    sel_ = std::move(kept);
    return Status::Ok();
  }

  Status WriteReport() {
    matched_ = sel_.size();
    for (const auto& s : sel_) selected_bytes_ += s.size;
    if (o_.report_file.empty()) return Status::Ok();
    // Group by user on owner rank uid % P, so each user's section is whole.
    std::vector<std::vector<std::string>> out(static_cast<size_t>(size_));
    for (const auto& s : sel_)
      out[s.uid % static_cast<uint32_t>(size_)].push_back(std::to_string(s.uid) + "\t" + std::to_string(s.size) + "\t" +
                                                          s.path);
    std::map<uint32_t, std::vector<ReportItem>> users;
    for (auto& line : ExchangeStrings(comm_, out)) {
      const size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
      const uint32_t uid = static_cast<uint32_t>(std::strtoul(line.c_str(), nullptr, 10));
      users[uid].push_back(ReportItem{line.substr(t2 + 1), std::strtoull(line.c_str() + t1 + 1, nullptr, 10)});
    }
    const uint64_t nusers = SumAll(comm_, users.size());
    const uint64_t files = SumAll(comm_, matched_), bytes = SumAll(comm_, selected_bytes_);
    std::string text;
    if (rank_ == 0) text = FormatReportHeader(nusers, files, bytes, roots_, o_.dryrun);
    for (auto& [uid, items] : users) text += FormatUserSection(uid, UserName(uid), std::move(items));
    return WriteFileOrdered(comm_, o_.report_file, text);
  }

  // Spreads the selection evenly: global position i goes to rank i*P/N.
  std::vector<std::string> Balance() {
    unsigned long long n = sel_.size(), before = 0, total = 0;
    MPI_Exscan(&n, &before, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm_);
    if (rank_ == 0) before = 0;
    MPI_Allreduce(&n, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm_);
    std::vector<std::vector<std::string>> out(static_cast<size_t>(size_));
    for (size_t i = 0; i < sel_.size(); ++i) {
      const unsigned long long g = before + i;
      const size_t to = static_cast<size_t>(g * static_cast<unsigned long long>(size_) / std::max(total, 1ULL));
      out[to].push_back(std::to_string(sel_[i].rule) + "\t" + sel_[i].path);
    }
    sel_.clear();
    sel_.shrink_to_fit();
    return ExchangeStrings(comm_, out);
  }

  // Removes (or, in a dry run, only lists) the balanced work; appends what
  // was acted on to *done_list and notes the parents for --rmdir.
  void Act(const std::vector<std::string>& work, std::string* done_list) {
    Progress prog(comm_, o_.progress_s, "pdm-purge", o_.dryrun ? "selected" : "files acted on");
    prog.SetTotal(SumAll(comm_, work.size()));
    ParentCache parents;
    std::string dir, name;
    for (const auto& w : work) {
      const size_t tab = w.find('\t');
      const int rule = std::atoi(w.substr(0, tab).c_str());
      const std::string path = w.substr(tab + 1);
      prog.Tick();
      SplitPath(path, &dir, &name);
      if (o_.dryrun) {
        *done_list += path + "\n";
        if (!Releases(rule)) NoteGone(dir, name);  // a released file stays in its directory
        prog.Add(1, 0);
        continue;
      }
      const int fd = parents.Open(dir);
      if (fd < 0) {
        if (-fd == ENOENT) ++skipped_;
        else if (-fd == ELOOP) Error("refusing " + path + ": a symlink in its path (never followed)");
        else Error(PosixError("openat2", dir, -fd).ToString());
        continue;
      }
      struct stat st;
      if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) ++skipped_;
        else Error(PosixError("lstat", path, errno).ToString());
        continue;
      }
      // Judged again on what is there now: a file read, grown or replaced by
      // a directory since the selection is left alone.
      Entry e;
      e.path = path;
      FillFromStat(st, &e);
      if (o_.read_hsm && e.is_file()) {
        auto hs = ReadHsmState(path);
        if (hs.ok()) {
          e.hsm_flags = hs->flags;
          e.archive_id = hs->archive_id;
        }
      }
      if (e.is_dir() || Judge(e) != rule) {
        ++skipped_;
        continue;
      }
      if (Releases(rule)) {
        Status rs = o_.release(path);
        if (!rs.ok()) {
          Error("release " + path + ": " + rs.ToString());
          continue;
        }
        ++released_;
      } else {
        if (unlinkat(fd, name.c_str(), 0) != 0) {
          if (errno == ENOENT) ++skipped_;
          else Error(PosixError("unlink", path, errno).ToString());
          continue;
        }
        ++removed_;
        NoteGone(dir, name);
      }
      bytes_ += e.size;
      prog.Add(1, e.size);
      *done_list += path + "\n";
    }
    uint64_t i = 0, b = 0;
    prog.Finish(&i, &b);
  }

  Status WriteLists(const std::string& done_list) {
    Status st;
    if (!o_.list_file.empty()) st = WriteFileOrdered(comm_, o_.list_file, done_list);
    if (st.ok() && o_.print_list) st = WriteRankOrdered(comm_, done_list, stdout);
    return st;
  }

  // `name` left (or, dry, would leave) `dir`: dir becomes an --rmdir
  // candidate. The dry run keeps the names, since it must later compare them
  // with what the directory holds; the real run only needs the directory.
  void NoteGone(const std::string& dir, const std::string& name) {
    if (!o_.rmdir || !StrictlyUnder(dir, roots_)) return;
    auto& names = gone_[dir];
    if (o_.dryrun) names.insert(name);
  }

  static int64_t Depth(const std::string& p) { return std::count(p.begin(), p.end(), '/'); }

  // Sends each candidate directory, with the names gone from it, to its
  // owner rank (a hash of the path), so one rank alone decides a directory
  // however many ranks removed files in it. COLLECTIVE.
  void RouteCandidates(std::map<std::string, std::set<std::string>>* local) {
    std::vector<std::vector<std::string>> out(static_cast<size_t>(size_));
    for (auto& [dir, names] : *local) {
      auto& to = out[std::hash<std::string>{}(dir) % static_cast<size_t>(size_)];
      // "dir/" alone says "a child of dir went" (real run: no names kept).
      if (names.empty()) to.push_back(dir + "/");
      for (const auto& n : names) to.push_back(dir + "/" + n);
    }
    local->clear();
    std::string dir, name;
    for (const auto& child : ExchangeStrings(comm_, out)) {
      SplitPath(child, &dir, &name);
      auto& names = owned_[Depth(dir)][dir];
      if (!name.empty()) names.insert(name);
    }
  }

  // Dry run: would rmdir succeed once `gone` are gone? Only when every entry
  // the directory holds now is among them. Opened without following any
  // symlink, as the real run's unlinkat through its parent would be.
  bool WouldEmpty(const std::string& path, const std::set<std::string>& gone) {
    struct open_how how;
    std::memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
    how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const long fd = syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how);
    if (fd < 0) {
      if (errno != ENOENT && errno != ELOOP && errno != ENOTDIR) Error(PosixError("open", path, errno).ToString());
      return false;
    }
    DIR* d = fdopendir(static_cast<int>(fd));
    if (d == nullptr) {
      Error(PosixError("fdopendir", path, errno).ToString());
      close(static_cast<int>(fd));
      return false;
    }
    bool empty = true;
    while (struct dirent* de = readdir(d)) {
      const std::string_view n = de->d_name;
      if (n == "." || n == "..") continue;
      if (!gone.count(std::string(n))) {
        empty = false;
        break;
      }
    }
    closedir(d);
    return empty;
  }

  // Deepest level first. Every round routes the parents of the directories
  // removed in it to their owners; that exchange doubles as the barrier that
  // keeps a parent from being tried before all its children are decided.
  // The dry run walks the same rounds and judges with WouldEmpty instead of
  // rmdir, so its list holds the directories the real run removes.
  void RemoveEmptiedDirs(std::string* done_list) {
    RouteCandidates(&gone_);
    ParentCache parents;
    std::string dir, name;
    for (;;) {
      const int64_t d = MaxAll(comm_, owned_.empty() ? -1 : owned_.rbegin()->first);
      if (d < 0) break;
      std::map<std::string, std::set<std::string>> up;
      if (auto it = owned_.find(d); it != owned_.end()) {
        for (const auto& [p, names] : it->second) {
          if (o_.protect.Covers(p)) continue;
          SplitPath(p, &dir, &name);
          bool removed = false;
          if (o_.dryrun) {
            removed = WouldEmpty(p, names);
          } else {
            const int fd = parents.Open(dir);
            if (fd < 0) continue;
            removed = unlinkat(fd, name.c_str(), AT_REMOVEDIR) == 0;
            if (!removed && errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
              Error(PosixError("rmdir", p, errno).ToString());
          }
          if (!removed) continue;
          ++dirs_removed_;
          *done_list += p + "\n";
          if (StrictlyUnder(dir, roots_)) {
            auto& names_up = up[dir];
            if (o_.dryrun) names_up.insert(name);
          }
        }
        owned_.erase(it);
      }
      parents.Reset();
      RouteCandidates(&up);
    }
  }

  void Finish(double secs) {
    // A dry run removes no directory; dirs_matched says which it would.
    uint64_t local[9] = {scanned_, matched_, removed_, released_, o_.dryrun ? selected_bytes_ : bytes_,
                         o_.dryrun ? 0 : dirs_removed_, skipped_, errors_, dirs_removed_};
    uint64_t sums[9] = {};
    MPI_Allreduce(local, sums, 9, MPI_UINT64_T, MPI_SUM, comm_);
    res_->scanned = sums[0];
    res_->matched = sums[1];
    res_->removed = sums[2];
    res_->released = sums[3];
    res_->bytes = sums[4];
    res_->dirs_removed = sums[5];
    res_->skipped = sums[6];
    res_->errors = sums[7];
    res_->dirs_matched = sums[8];
    res_->seconds = secs;
  }

  MPI_Comm comm_;
  const PurgeOptions& o_;
  PurgeResult* res_;
  int rank_ = 0, size_ = 1;
  int64_t now_ = 0;
  std::vector<std::string> roots_;
  std::vector<Selected> sel_;
  std::map<std::string, std::set<std::string>> gone_;  // --rmdir: local dir -> names gone (dry run)
  std::map<int64_t, std::map<std::string, std::set<std::string>>> owned_;  // dirs this rank decides, by depth
  uint64_t scanned_ = 0, matched_ = 0, removed_ = 0, released_ = 0, bytes_ = 0, selected_bytes_ = 0;
  uint64_t dirs_removed_ = 0, skipped_ = 0, errors_ = 0;
};

}  // namespace

Status RunPurge(MPI_Comm comm, const PurgeOptions& opts, PurgeResult* result) {
  *result = PurgeResult{};
  Purger p(comm, opts, result);
  return p.Run();
}

}  // namespace pdm::tools
