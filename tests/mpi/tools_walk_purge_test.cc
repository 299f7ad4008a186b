// pdm-walk and pdm-purge end to end: real mpirun of the executables on
// generated trees (no pdmd needed). The catalog is checked row by row
// against os.lstat by a python3 + h5py script; purge dry runs against real
// runs; protection, excludes, symlinks; a failure on purpose (chattr +i on a
// loop-mounted ext4); and the policy watermark trigger on a small ext4.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <string>

#ifdef PDM_TOOLS_WITH_HSM
#include "dm/attrs.h"
#include "hsm/state.h"
#endif
#include "tools/units.h"

namespace {

namespace fs = std::filesystem;
const std::string kBin = std::string(PDM_BINARY_DIR) + "/bin/";

std::string Mpirun(int np) {
  return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(np) + " ";
}

// Runs a shell command; returns its exit status and stdout.
int Sh(const std::string& cmd, std::string* out = nullptr) {
  std::string full = cmd + " 2>/tmp/pdm_tools_test_stderr.txt";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) s.append(buf, n);
  const int rc = pclose(p);
  if (out) *out = s;
  std::ifstream err("/tmp/pdm_tools_test_stderr.txt");
  std::stringstream es;
  es << err.rdbuf();
  if (!es.str().empty()) std::printf("[stderr of %s]\n%s", cmd.substr(0, 80).c_str(), es.str().c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

nlohmann::json LastJsonLine(const std::string& out) {
  std::istringstream in(out);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{') last = line;
  return nlohmann::json::parse(last, nullptr, false);
}

std::set<std::string> ReadLines(const std::string& file) {
  std::set<std::string> s;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) s.insert(line);
  return s;
}

std::set<std::string> ListTree(const std::string& root) {
  std::set<std::string> s;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    s.insert(it->path().string());
  return s;
}

void MakeFile(const std::string& path, size_t bytes, int64_t age_s, uid_t uid) {
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  if (bytes) {
    std::string data(bytes, 'x');
    ASSERT_EQ(write(fd, data.data(), bytes), static_cast<ssize_t>(bytes));
  }
  ASSERT_EQ(fchown(fd, uid, 100 + uid % 3), 0);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct timespec ts[2] = {{now.tv_sec - age_s, 123456789}, {now.tv_sec - age_s - 5, 987654321}};
  ASSERT_EQ(futimens(fd, ts), 0);
  close(fd);
}

class TempDir {
 public:
  // tmpfs (with trusted.* xattrs) keeps generating 100k files to seconds;
  // /var/tmp is the fallback.
  TempDir() {
    char t[] = "/dev/shm/pdm_tools_XXXXXX";
    char t2[] = "/var/tmp/pdm_tools_XXXXXX";
    if (mkdtemp(t) != nullptr) {
      path_ = t;
      return;
    }
    path_ = mkdtemp(t2);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A small ext4 file system on a loop device, for usage and failure tests.
class LoopExt4 {
 public:
  explicit LoopExt4(int mib) {
    char t[] = "/var/tmp/pdm_loop_XXXXXX";
    dir_ = mkdtemp(t);
    img_ = dir_ + ".img";
    mnt_ = dir_;
    const std::string cmd = "truncate -s " + std::to_string(mib) + "M " + img_ + " && mkfs.ext4 -q -F -m 0 " + img_ +
                            " >/dev/null 2>&1 && mount -o loop " + img_ + " " + mnt_;
    ok_ = std::system(cmd.c_str()) == 0;
  }
  ~LoopExt4() {
    if (ok_) std::system(("chattr -R -i " + mnt_ + " 2>/dev/null; umount " + mnt_).c_str());
    std::remove(img_.c_str());
    rmdir(mnt_.c_str());
  }
  bool ok() const { return ok_; }
  const std::string& mnt() const { return mnt_; }
  double used() const {
    struct statvfs sv;
    statvfs(mnt_.c_str(), &sv);
    const double used = double(sv.f_blocks - sv.f_bfree), avail = double(sv.f_bavail);
    return used / (used + avail);
  }

 private:
  std::string dir_, img_, mnt_;
  bool ok_ = false;
};

std::string Python() {
  if (std::system("/usr/bin/python3 -c 'import h5py' 2>/dev/null") == 0) return "/usr/bin/python3";
  if (std::system("python3 -c 'import h5py' 2>/dev/null") == 0) return "python3";
  return "";
}

// Marks `path` as an archived file in archive 7, the way the HSM does. With
// the HSM library: hsm::Encode's value through dm::SetDmAttr, decoded by the
// tools with hsm::Decode. Without it: the same JSON members the tools' own
// reader takes. Either way the catalog must show flags 3 (exists|archived)
// and archive id 7.
void MarkArchived(const std::string& path) {
#ifdef PDM_TOOLS_WITH_HSM
  pdm::hsm::FileState s;
  s.flags = pdm::hsm::kExists | pdm::hsm::kArchived;
  s.archive_id = 7;
  s.key = "2a00/42.1/v1";
  struct stat st;
  ASSERT_EQ(lstat(path.c_str(), &st), 0) << path;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  s.sum.hi = 0x1111222233334444ULL;
  s.sum.lo = 0x5555666677778888ULL;
  s.ver = 1;
  auto value = pdm::hsm::Encode(s);
  ASSERT_TRUE(value.ok()) << value.status().ToString();
  auto name = pdm::dm::AttrName::FromString(pdm::hsm::kStateAttrName);
  ASSERT_TRUE(name.ok());
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  pdm::Status set =
      pdm::dm::SetDmAttr(fd, *name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(value->data()), value->size()));
  close(fd);
  ASSERT_TRUE(set.ok()) << set.ToString();
#else
  ASSERT_EQ(Sh("setfattr -n trusted.pdm.dm.pdmhsm -v '{\"v\":1,\"flags\":[\"exists\",\"archived\"],\"archive\":7}' " +
               path),
            0);
#endif
}

// Deep and wide: 262 dirs x 380 files, one directory of 4,000 files, a
// 60-level chain, symlinks; ages 0-100 days; five owners.
size_t MakeBigTree(const std::string& root) {
  std::mt19937 rng(42);
  size_t n = 1;  // the root
  for (int d = 0; d < 262; ++d) {
    const std::string dir = root + "/d" + std::to_string(d);
    mkdir(dir.c_str(), 0755);
    ++n;
    for (int f = 0; f < 380; ++f) {
      MakeFile(dir + "/f" + std::to_string(f), rng() % 3, static_cast<int64_t>(rng() % (100 * 86400)),
               1000 + rng() % 5);
      ++n;
    }
  }
  const std::string wide = root + "/wide";
  mkdir(wide.c_str(), 0755);
  ++n;
  for (int f = 0; f < 4000; ++f, ++n) MakeFile(wide + "/w" + std::to_string(f), 0, rng() % 86400, 1001);
  std::string deep = root + "/deep";
  for (int l = 0; l < 60; ++l, ++n) {
    mkdir(deep.c_str(), 0755);
    MakeFile(deep + "/leaf", 10, l * 3600, 1002);
    ++n;
    deep += "/l" + std::to_string(l);
  }
  symlink("/etc", (root + "/link_out").c_str());
  symlink("d0/f0", (root + "/link_in").c_str());
  n += 2;
  return n;
}

TEST(ToolsWalk, CatalogHasOneRightRowPerEntryOf100k) {
  const std::string py = Python();
  TempDir tmp;
  const std::string root = tmp.path() + "/tree";
  mkdir(root.c_str(), 0755);
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n = MakeBigTree(root);
  // One managed file, so the HSM columns are checked too.
  MarkArchived(root + "/d1/f1");
  std::printf("generated %zu entries in %.1f s\n", n,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  ASSERT_GE(n, 100000u);

  const std::string cat = tmp.path() + "/scan.h5", list = tmp.path() + "/scan.txt";
  std::string out;
  ASSERT_EQ(Sh(Mpirun(4) + kBin + "pdm-walk --json --progress 1 -o " + cat + " --list " + list + " " + root, &out), 0);
  auto j = LastJsonLine(out);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["entries"], n);
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["ranks"], 4);
  EXPECT_EQ(j["types"]["l"], 2);
  std::printf("pdm-walk -np 4: %.0f items/s\n", j["items_per_second"].get<double>());
  EXPECT_EQ(ReadLines(list).size(), n);

  // The catalog read back by pdm-walk itself (-i CATALOG) on 3 ranks.
  ASSERT_EQ(Sh(Mpirun(3) + kBin + "pdm-walk --json -i " + cat, &out), 0);
  EXPECT_EQ(LastJsonLine(out)["entries"], n);
  // A text list as input: every path lstat'ed again, split over 2 ranks.
  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-walk --json -i " + list, &out), 0);
  EXPECT_EQ(LastJsonLine(out)["entries"], n);

  if (py.empty()) GTEST_SKIP() << "no h5py: row check skipped";
  const std::string script = tmp.path() + "/check.py";
  {
    std::ofstream s(script);
    s << R"PY(
import os, stat, sys, h5py
cat, root = sys.argv[1], sys.argv[2]
f = h5py.File(cat, "r")
rows = f["entries"][:]
paths = [p.decode() for p in f["path"][:]]
assert f.attrs["entries"] == len(rows) == len(paths), "row counts"
assert f.attrs["root"] == root, f.attrs["root"]
assert f.attrs["ranks"] == 4
assert len(set(paths)) == len(paths), "duplicate rows"
want = {root}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        want.add(os.path.join(d, n))
assert set(paths) == want, "missing %d extra %d" % (len(want - set(paths)), len(set(paths) - want))
letters = {stat.S_IFREG: b"f", stat.S_IFDIR: b"d", stat.S_IFLNK: b"l"}
bad = 0
for p, r in zip(paths, rows):
    st = os.lstat(p)
    exp = dict(type=letters[stat.S_IFMT(st.st_mode)], size=st.st_size, blocks=st.st_blocks, uid=st.st_uid,
               gid=st.st_gid, mode=st.st_mode, mtime=st.st_mtime_ns, ctime=st.st_ctime_ns)
    if stat.S_ISREG(st.st_mode):  # reading a directory or a link may move its atime
        exp["atime"] = st.st_atime_ns
    for k, v in exp.items():
        if r[k] != v:
            bad += 1
            if bad < 10: print("mismatch", p, k, r[k], v)
    if p.endswith("/d1/f1"):
        assert r["hsm_flags"] == 3 and r["archive_id"] == 7, (r["hsm_flags"], r["archive_id"])
    elif r["hsm_flags"] != 0:
        bad += 1
assert bad == 0, "%d mismatches" % bad
print("ok", len(rows))
)PY";
  }
  ASSERT_EQ(Sh(py + " " + script + " " + cat + " " + root, &out), 0) << out;
  EXPECT_NE(out.find("ok " + std::to_string(n)), std::string::npos) << out;
}

// A small tree with one file the HSM manages: its catalog row carries the
// state's flags and archive id, the other rows none; a damaged state value is
// an error (exit 1), not a guess.
TEST(ToolsWalk, CatalogShowsTheHsmStateOfManagedFiles) {
  const std::string py = Python();
  if (py.empty()) GTEST_SKIP() << "no h5py";
  TempDir tmp;
  const std::string root = tmp.path() + "/tree";
  mkdir(root.c_str(), 0755);
  MakeFile(root + "/managed", 5, 0, 0);
  MakeFile(root + "/plain", 5, 0, 0);
  MarkArchived(root + "/managed");
  const std::string cat = tmp.path() + "/scan.h5";
  std::string out;
  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-walk --json -o " + cat + " " + root, &out), 0) << out;
  const std::string script = tmp.path() + "/hsm.py";
  std::ofstream(script) << R"PY(
import sys, h5py
f = h5py.File(sys.argv[1], "r")
for p, r in zip(f["path"][:], f["entries"][:]):
    print(p.decode(), int(r["hsm_flags"]), int(r["archive_id"]))
)PY";
  ASSERT_EQ(Sh(py + " " + script + " " + cat, &out), 0);
  EXPECT_NE(out.find(root + "/managed 3 7\n"), std::string::npos) << out;
  EXPECT_NE(out.find(root + "/plain 0 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find(root + " 0 0\n"), std::string::npos) << out;

  ASSERT_EQ(Sh("setfattr -n trusted.pdm.dm.pdmhsm -v '{\"v\":1,\"flags\":[\"bogus\"]}' " + root + "/plain"), 0);
  EXPECT_EQ(Sh(Mpirun(2) + kBin + "pdm-walk --json " + root, &out), 1) << "a damaged state is an entry error";
  EXPECT_EQ(LastJsonLine(out)["errors"], 1);
}

TEST(ToolsWalk, OneRankAndUsageErrors) {
  TempDir tmp;
  MakeFile(tmp.path() + "/a", 5, 0, 0);
  std::string out;
  ASSERT_EQ(Sh(kBin + "pdm-walk " + tmp.path(), &out), 0);
  EXPECT_NE(out.find("2 entries: 1 files, 1 dirs"), std::string::npos) << out;
  EXPECT_EQ(Sh(kBin + "pdm-walk --bogus " + tmp.path()), 2);
  EXPECT_EQ(Sh(kBin + "pdm-walk"), 2);
  EXPECT_EQ(Sh(kBin + "pdm-walk --version", &out), 0);
  EXPECT_NE(out.find("0.1.0"), std::string::npos);
  // A missing root is an entry error: exit 1.
  EXPECT_EQ(Sh(kBin + "pdm-walk " + tmp.path() + "/nope"), 1);
}

// A scratch tree for purges: old and new files of three users, an excluded
// name, a protected subtree, a symlink to an outside directory full of old
// files.
struct PurgeTree {
  std::string root, outside;
  std::set<std::string> old_files;
};

PurgeTree MakePurgeTree(const std::string& base) {
  PurgeTree t;
  t.root = base + "/scratch";
  t.outside = base + "/outside";
  mkdir(t.root.c_str(), 0755);
  mkdir(t.outside.c_str(), 0755);
  for (int i = 0; i < 50; ++i) MakeFile(t.outside + "/precious" + std::to_string(i), 10, 400 * 86400, 1000);
  for (int d = 0; d < 20; ++d) {
    const std::string dir = t.root + "/u" + std::to_string(d % 3) + "_" + std::to_string(d);
    mkdir(dir.c_str(), 0755);
    for (int f = 0; f < 150; ++f) {
      const std::string p = dir + "/f" + std::to_string(f);
      const bool old = f % 3 != 0;
      MakeFile(p, 100 + f, old ? 40 * 86400 + f : 3600, 1000 + d % 3);
      if (old) t.old_files.insert(p);
    }
    MakeFile(dir + "/x.keep", 1, 90 * 86400, 1000);
  }
  const std::string prot = t.root + "/project";
  mkdir(prot.c_str(), 0755);
  for (int f = 0; f < 30; ++f) MakeFile(prot + "/p" + std::to_string(f), 1, 90 * 86400, 1001);
  symlink(t.outside.c_str(), (t.root + "/u0_0/to_outside").c_str());
  std::ofstream(base + "/protect.txt") << "# never purge\n" << prot << "\n";
  return t;
}

TEST(ToolsPurge, DryRunListEqualsWhatTheRealRunRemoves) {
  TempDir tmp;
  PurgeTree t = MakePurgeTree(tmp.path());
  const std::string sel = "--older-than 30d --exclude '*.keep' --protect " + tmp.path() + "/protect.txt ";
  const auto before = ListTree(t.root);
  std::string out;
  ASSERT_EQ(Sh(Mpirun(3) + kBin + "pdm-purge --dryrun --json " + sel + "--list " + tmp.path() + "/dry.txt --report " +
                    tmp.path() + "/report.txt " + t.root,
                &out),
            0);
  auto dj = LastJsonLine(out);
  const auto dry = ReadLines(tmp.path() + "/dry.txt");
  EXPECT_EQ(dj["matched"], dry.size());
  EXPECT_EQ(dj["removed"], 0);
  EXPECT_EQ(ListTree(t.root), before) << "a dry run removes nothing";
  EXPECT_EQ(dry, t.old_files) << "exactly the old, unprotected, unexcluded files";
  // The report: per user, totals and lists.
  std::ifstream rin(tmp.path() + "/report.txt");
  std::stringstream rs;
  rs << rin.rdbuf();
  EXPECT_NE(rs.str().find("# pdm-purge report: 3 users, " + pdm::tools::FormatCount(dry.size()) + " files"), std::string::npos)
      << rs.str().substr(0, 300);
  EXPECT_NE(rs.str().find("(uid 1002)"), std::string::npos);
  EXPECT_NE(rs.str().find("  " + *dry.begin() + "\n"), std::string::npos);

  ASSERT_EQ(Sh(Mpirun(4) + kBin + "pdm-purge --json --progress 1 " + sel + "--list " + tmp.path() + "/real.txt " +
                    t.root,
                &out),
            0);
  auto rj = LastJsonLine(out);
  EXPECT_EQ(rj["matched"], dry.size());
  EXPECT_EQ(rj["removed"], dry.size());
  EXPECT_EQ(rj["errors"], 0);
  EXPECT_EQ(ReadLines(tmp.path() + "/real.txt"), dry);
  const auto after = ListTree(t.root);
  std::set<std::string> gone;
  for (const auto& p : before)
    if (!after.count(p)) gone.insert(p);
  EXPECT_EQ(gone, dry) << "the real run removed exactly the dry-run list";
  // Protected, excluded and outside files survive; the link was never followed.
  EXPECT_TRUE(fs::exists(t.root + "/project/p0"));
  EXPECT_TRUE(fs::exists(t.root + "/u1_1/x.keep"));
  EXPECT_TRUE(fs::is_symlink(t.root + "/u0_0/to_outside")) << "new symlink: not old enough";
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(fs::exists(t.outside + "/precious" + std::to_string(i)));
}

TEST(ToolsPurge, UsersListInputRmdirAndSymlinkInput) {
  TempDir tmp;
  PurgeTree t = MakePurgeTree(tmp.path());
  std::string out;
  // Only user 1002's old files; from a list made by pdm-walk; the list also
  // names a file through the symlink, which must be refused, never followed.
  ASSERT_EQ(Sh(kBin + "pdm-walk --list " + tmp.path() + "/all.txt " + t.root), 0);
  std::ofstream(tmp.path() + "/all.txt", std::ios::app) << t.root << "/u0_0/to_outside/precious1\n";
  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-purge --json --older-than 30d --user 1000 --rmdir -i " + tmp.path() +
                    "/all.txt " + t.root,
                &out),
            1)
      << "the path through a symlink is refused, and that is a failure";
  auto j = LastJsonLine(out);
  EXPECT_EQ(j["errors"], 1);
  size_t want = 0;
  for (const auto& p : t.old_files)
    if (p.find("/u0_") != std::string::npos) ++want;
  EXPECT_EQ(j["removed"], want + 20) << "plus the 20 x.keep files of uid 1000 (not excluded here)";
  EXPECT_TRUE(fs::exists(t.outside + "/precious1"));
  EXPECT_TRUE(fs::exists(t.root + "/u1_1/f1"));
  EXPECT_FALSE(fs::exists(t.root + "/u0_3/f1"));
  EXPECT_TRUE(fs::exists(t.root + "/u0_3")) << "still has its new files";

  // --rmdir: a directory whose every entry goes is removed, deepest first;
  // the root never, nor a directory that keeps an entry (u*_*: new files;
  // empty/: had nothing removed; mixed/: a new file). No --protect here, so
  // project/ (30 old files of uid 1001) is emptied and goes too: four.
  const std::string emptyish = t.root + "/gone/a/b";
  fs::create_directories(emptyish);
  MakeFile(emptyish + "/old", 1, 50 * 86400, 1000);
  MakeFile(t.root + "/gone/old2", 1, 50 * 86400, 1000);
  fs::create_directories(t.root + "/empty");
  fs::create_directories(t.root + "/mixed/sub");
  MakeFile(t.root + "/mixed/sub/old", 1, 50 * 86400, 1001);
  MakeFile(t.root + "/mixed/new", 1, 60, 1001);
  const std::set<std::string> want_dirs = {t.root + "/gone/a/b", t.root + "/gone/a", t.root + "/gone",
                                           t.root + "/project", t.root + "/mixed/sub"};
  const std::string sel = "--json --older-than 30d --rmdir --exclude '*.keep' ";
  const auto before = ListTree(t.root);
  // The dry run lists the directories too, decided by the same rounds.
  ASSERT_EQ(Sh(Mpirun(3) + kBin + "pdm-purge --dryrun " + sel + "--list " + tmp.path() + "/dry.txt " + t.root, &out),
            0);
  auto dj = LastJsonLine(out);
  EXPECT_EQ(dj["dirs_matched"], want_dirs.size());
  EXPECT_EQ(dj["dirs_removed"], 0) << "a dry run removes nothing";
  EXPECT_EQ(ListTree(t.root), before);
  const auto dry = ReadLines(tmp.path() + "/dry.txt");
  for (const auto& d : want_dirs) EXPECT_EQ(dry.count(d), 1u) << d;

  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-purge " + sel + "--list " + tmp.path() + "/real.txt " + t.root, &out), 0);
  j = LastJsonLine(out);
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["dirs_removed"], want_dirs.size());
  EXPECT_EQ(j["dirs_matched"], want_dirs.size());
  const auto after = ListTree(t.root);
  std::set<std::string> gone, gone_dirs;
  for (const auto& p : before)
    if (!after.count(p)) gone.insert(p);
  for (const auto& p : want_dirs)
    if (!after.count(p)) gone_dirs.insert(p);
  EXPECT_EQ(gone_dirs, want_dirs);
  EXPECT_EQ(gone, dry) << "the dry run listed exactly what the real run removed, directories included";
  EXPECT_EQ(ReadLines(tmp.path() + "/real.txt"), dry);
  EXPECT_FALSE(fs::exists(t.root + "/gone"));
  EXPECT_TRUE(fs::exists(t.root + "/empty")) << "nothing was removed from it";
  EXPECT_TRUE(fs::exists(t.root + "/mixed/new"));
  EXPECT_TRUE(fs::exists(t.root + "/u2_2"));
  EXPECT_TRUE(fs::exists(t.root));
}

// --limit-count / --limit-bytes with --order: the first candidates in that
// order, cut like a policy rule's max_count / max_volume; the dry run (3
// ranks) lists what the real run (2 ranks) removes.
TEST(ToolsPurge, LimitsTakeTheOldestOrTheLargestFirst) {
  TempDir tmp;
  const std::string root = tmp.path() + "/scratch";
  mkdir(root.c_str(), 0755);
  for (int d = 0; d < 4; ++d) mkdir((root + "/d" + std::to_string(d)).c_str(), 0755);
  // 40 files: f<i> is (i + 2) days old and (i % 13 + 1) * 4 KiB big.
  std::vector<std::string> files;
  for (int i = 0; i < 40; ++i) {
    files.push_back(root + "/d" + std::to_string(i % 4) + "/f" + std::to_string(i));
    MakeFile(files.back(), static_cast<size_t>(i % 13 + 1) * 4096, (i + 2) * 86400, 1000);
  }
  std::string out;
  const std::string lim = "--json --older-than 1d --limit-count 10 ";
  ASSERT_EQ(Sh(Mpirun(3) + kBin + "pdm-purge --dryrun " + lim + "--list " + tmp.path() + "/dry.txt " + root, &out), 0);
  EXPECT_EQ(LastJsonLine(out)["matched"], 10);
  const std::set<std::string> oldest(files.begin() + 30, files.end());  // default order: --by atime
  EXPECT_EQ(ReadLines(tmp.path() + "/dry.txt"), oldest);
  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-purge " + lim + "--list " + tmp.path() + "/real.txt " + root, &out), 0);
  auto j = LastJsonLine(out);
  EXPECT_EQ(j["removed"], 10);
  EXPECT_EQ(ReadLines(tmp.path() + "/real.txt"), oldest);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(fs::exists(files[static_cast<size_t>(i)]), i < 30) << i;

  // Largest first until the space taken (st_blocks) reaches the limit: the
  // file that reaches it is the last one taken. Expected set from lstat.
  std::vector<std::pair<uint64_t, std::string>> by_size;
  for (int i = 0; i < 30; ++i) {
    struct stat st;
    ASSERT_EQ(lstat(files[static_cast<size_t>(i)].c_str(), &st), 0);
    by_size.emplace_back(static_cast<uint64_t>(st.st_size), files[static_cast<size_t>(i)]);
  }
  std::stable_sort(by_size.begin(), by_size.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  const uint64_t limit = 100 * 1024;
  std::set<std::string> largest;
  uint64_t taken = 0;
  for (const auto& [size, path] : by_size) {
    if (taken >= limit) break;
    struct stat st;
    lstat(path.c_str(), &st);
    taken += static_cast<uint64_t>(st.st_blocks) * 512;
    largest.insert(path);
  }
  // Sizes repeat (i % 13), so only a cut between two sizes is order-exact.
  ASSERT_NE(by_size[largest.size() - 1].first, by_size[largest.size()].first) << "test data: cut inside a tie";
  const std::string big = "--json --older-than 1d --order size --limit-bytes 100K ";
  ASSERT_EQ(Sh(Mpirun(3) + kBin + "pdm-purge --dryrun " + big + "--list " + tmp.path() + "/dry2.txt " + root, &out),
            0);
  EXPECT_EQ(ReadLines(tmp.path() + "/dry2.txt"), largest);
  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-purge " + big + root, &out), 0);
  EXPECT_EQ(LastJsonLine(out)["removed"], largest.size());
  for (const auto& p : largest) EXPECT_FALSE(fs::exists(p)) << p;

  EXPECT_EQ(Sh(kBin + "pdm-purge --older-than 1d --order size " + root), 2) << "--order without a limit";
  EXPECT_EQ(Sh(kBin + "pdm-purge --older-than 1d --limit-bytes 3q " + root), 2);
}

TEST(ToolsPurge, RefusesRootsAndMissingCriteriaAndReleaseWithoutHsm) {
  TempDir tmp;
  MakeFile(tmp.path() + "/old", 1, 90 * 86400, 0);
  std::string out;
  EXPECT_EQ(Sh(kBin + "pdm-purge --older-than 1d --dryrun /"), 2);
  EXPECT_EQ(Sh(kBin + "pdm-purge " + tmp.path()), 2) << "no criterion and no --all";
  EXPECT_EQ(Sh(kBin + "pdm-purge --older-than 3q " + tmp.path()), 2);
#ifdef PDM_TOOLS_WITH_HSM
  // Built with the HSM, pdm-purge has its release hook (mpi_tools/hsm.cmake,
  // same condition as this define). A file without a verified archive copy is
  // never releasable, so nothing is selected and no node agent is needed.
  ASSERT_EQ(Sh(kBin + "pdm-purge --json --release-only --older-than 1d " + tmp.path(), &out), 0);
  auto j = LastJsonLine(out);
  EXPECT_EQ(j["matched"], 0);
  EXPECT_EQ(j["released"], 0);
#else
  EXPECT_EQ(Sh(kBin + "pdm-purge --release-only --older-than 1d " + tmp.path() + " 2>&1", &out), 2);
#endif
  EXPECT_TRUE(fs::exists(tmp.path() + "/old"));
}

TEST(ToolsPurge, ExitStatusIsNonZeroWhenOneEntryFails) {
  LoopExt4 lo(32);
  if (!lo.ok()) GTEST_SKIP() << "no loop device / mkfs.ext4";
  std::string out;
  EXPECT_EQ(Sh(kBin + "pdm-purge --older-than 1d --dryrun " + lo.mnt()), 2) << "a mount root needs --force";
  const std::string dir = lo.mnt() + "/scratch";
  mkdir(dir.c_str(), 0755);
  for (int i = 0; i < 40; ++i) MakeFile(dir + "/f" + std::to_string(i), 10, 10 * 86400, 0);
  ASSERT_EQ(Sh("chattr +i " + dir + "/f7"), 0);
  ASSERT_EQ(Sh(Mpirun(2) + kBin + "pdm-purge --json --older-than 1d " + dir, &out), 1);
  auto j = LastJsonLine(out);
  EXPECT_EQ(j["errors"], 1);
  EXPECT_EQ(j["removed"], 39);
  EXPECT_TRUE(fs::exists(dir + "/f7"));
  Sh("chattr -i " + dir + "/f7");
}

TEST(ToolsPolicy, WatermarkPurgeStartsAboveHighAndStopsAtLow) {
  LoopExt4 lo(64);
  if (!lo.ok()) GTEST_SKIP() << "no loop device / mkfs.ext4";
  const std::string dir = lo.mnt() + "/scratch";
  mkdir(dir.c_str(), 0755);
  // 1 MiB files with distinct ages until usage passes 90%.
  int n = 0;
  while (lo.used() < 0.92) {
    MakeFile(dir + "/f" + std::to_string(n), 1 << 20, 1000 + 3600 * (200 - n), 0);
    ++n;
    ASSERT_LT(n, 200);
  }
  sync();
  const double start = lo.used();
  const std::string pol = lo.mnt() + "/../pdm_policy_" + std::to_string(getpid()) + ".toml";
  std::ofstream(pol) << "[trigger]\npath = \"" << lo.mnt() << "\"\nhigh = \"90%\"\nlow = \"60%\"\n\n"
                     << "[[class]]\nname = \"all\"\n\n[[rule]]\nname = \"lru\"\naction = \"purge\"\n"
                     << "class = [\"all\"]\norder = \"atime\"\n";
  std::string out;
  ASSERT_EQ(Sh(Mpirun(3) + kBin + "pdm-purge --json --policy " + pol + " " + dir, &out), 0);
  sync();
  auto j = LastJsonLine(out);
  EXPECT_EQ(j["triggered"], true);
  const double end = lo.used();
  std::printf("usage %.1f%% -> %.1f%% (removed %d of %d)\n", start * 100, end * 100, j["removed"].get<int>(), n);
  EXPECT_LE(end, 0.60 + 0.001);
  EXPECT_GT(end, 0.55) << "stopped at the low watermark, not beyond";
  // Least recently used first: the survivors are the youngest files.
  for (int i = 0; i < j["removed"].get<int>(); ++i) EXPECT_FALSE(fs::exists(dir + "/f" + std::to_string(i))) << i;
  EXPECT_TRUE(fs::exists(dir + "/f" + std::to_string(n - 1)));
  // Below high now: the next run does nothing.
  ASSERT_EQ(Sh(kBin + "pdm-purge --json --policy " + pol + " " + dir, &out), 0);
  j = LastJsonLine(out);
  EXPECT_EQ(j["triggered"], false);
  EXPECT_EQ(j["removed"], 0);
  std::remove(pol.c_str());
}

}  // namespace
