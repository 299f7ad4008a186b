// The HSM tools' command line where no HSM has to run: usage errors exit 2,
// --version and --help, --dryrun lists the files a real run would send (walked
// recursively, symlinks never followed, lists and catalogs too), and against
// a cluster started without --archive, pdm-migrate says "no HSM coordinator"
// and exits 2 while pdm-state shows files the HSM never touched. The tools
// run as real executables; the end-to-end HSM tests are with the coordinator's.
// With a posix archive: pdm-migrate --policy sends exactly the policy's files
// (classes, order, max_count; the dry run's list is what the real run sends;
// each file of a mixed policy gets its rule's action), a purge rule is
// refused, and pdm-recall sends recalls in archive key order.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "hsm/state.h"
#include "local_cluster.h"

namespace {

namespace fs = std::filesystem;
const std::string kBin = std::string(PDM_BINARY_DIR) + "/bin/";

struct Ran {
  int rc = -1;
  std::string out, err;
};

// Runs a shell command with stdout and stderr captured apart.
Ran Sh(const std::string& cmd) {
  char errfile[] = "/tmp/pdm_hsm_tools_err_XXXXXX";
  const int efd = mkstemp(errfile);
  if (efd >= 0) close(efd);
  Ran r;
  FILE* p = popen((cmd + " 2>" + errfile).c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  std::ifstream e(errfile);
  std::stringstream es;
  es << e.rdbuf();
  r.err = es.str();
  std::remove(errfile);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::set<std::string> Lines(const std::string& s) {
  std::set<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.insert(l);
  return out;
}

void Write(const std::string& path, size_t bytes) {
  std::ofstream f(path, std::ios::binary);
  f << std::string(bytes, 'x');
}

class Tree {
 public:
  Tree() {
    char t[] = "/dev/shm/pdm_hsm_tools_XXXXXX";
    char t2[] = "/var/tmp/pdm_hsm_tools_XXXXXX";
    const char* d = mkdtemp(t);
    path_ = d ? d : mkdtemp(t2);
  }
  ~Tree() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const char* const kTools[] = {"migrate", "archive", "release", "recall", "remove", "state"};

TEST(HsmToolsCli, UsageErrorsExit2) {
  for (const char* t : kTools) {
    const std::string tool = kBin + "pdm-" + t;
    SCOPED_TRACE(tool);
    Ran r = Sh(tool);
    EXPECT_EQ(r.rc, 2) << "no PATH and no -i";
    EXPECT_NE(r.err.find("give PATH"), std::string::npos) << r.err;
    EXPECT_EQ(Sh(tool + " --no-such-option /tmp").rc, 2);
    EXPECT_EQ(Sh(tool + " -i /dev/null /tmp").rc, 2) << "PATH and -i together";
  }
  EXPECT_EQ(Sh(kBin + "pdm-migrate --requests 0 /tmp").rc, 2);
  EXPECT_EQ(Sh(kBin + "pdm-migrate --batch-bytes lots --dryrun /tmp").rc, 2);
  // pdm-state changes nothing, so it has no --dryrun.
  EXPECT_EQ(Sh(kBin + "pdm-state --dryrun /tmp").rc, 2);
}

TEST(HsmToolsCli, VersionAndHelp) {
  for (const char* t : kTools) {
    const std::string tool = kBin + "pdm-" + t;
    Ran v = Sh(tool + " --version");
    EXPECT_EQ(v.rc, 0) << tool;
    EXPECT_NE(v.out.find("0.1.0"), std::string::npos) << v.out;
    Ran h = Sh(tool + " --help");
    EXPECT_EQ(h.rc, 0) << tool;
    EXPECT_NE(h.out.find(std::string("pdm-") + t), std::string::npos) << h.out;
    EXPECT_NE(h.out.find("--json"), std::string::npos) << h.out;
    EXPECT_NE(h.out.find("--progress"), std::string::npos) << h.out;
  }
  EXPECT_NE(Sh(kBin + "pdm-migrate --help").out.find("--dryrun"), std::string::npos);
}

TEST(HsmToolsCli, DryrunWalksRecursivelyWithoutFollowingSymlinks) {
  Tree t, outside;
  const std::string d = t.path();
  fs::create_directories(d + "/a/b/c");
  fs::create_directories(d + "/empty");
  std::set<std::string> want;
  for (const std::string rel : {"/top", "/a/one", "/a/b/two", "/a/b/c/three", "/a/b/c/zero"}) {
    Write(d + rel, rel == "/a/b/c/zero" ? 0 : 1000);
    want.insert(d + rel);
  }
  Write(outside.path() + "/secret", 10);
  fs::create_directory_symlink(outside.path(), d + "/a/link-to-dir");
  fs::create_symlink(outside.path() + "/secret", d + "/a/link-to-file");
  ASSERT_EQ(mkfifo((d + "/a/fifo").c_str(), 0600), 0);

  for (const char* tool : {"migrate", "archive", "release", "recall", "remove"}) {
    SCOPED_TRACE(tool);
    Ran r = Sh(kBin + "pdm-" + tool + " --dryrun " + d);
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(Lines(r.out), want);
    EXPECT_NE(r.err.find("would send 5 files"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("3 skipped"), std::string::npos) << r.err;  // two symlinks and the FIFO
  }

  // A root that is itself a symlink is the link, not its target.
  Ran l = Sh(kBin + "pdm-migrate --dryrun " + d + "/a/link-to-dir");
  EXPECT_EQ(l.rc, 0) << l.err;
  EXPECT_TRUE(Lines(l.out).empty()) << l.out;

  // Under mpirun the files are split over the ranks; together they are the same set.
  Ran m = Sh("mpirun --allow-run-as-root --oversubscribe -np 2 " + kBin + "pdm-migrate --dryrun " + d);
  EXPECT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(Lines(m.out), want);

  // The JSON summary counts them and sends nothing.
  Ran j = Sh(kBin + "pdm-migrate --dryrun --json " + d);
  ASSERT_EQ(j.rc, 0) << j.err;
  auto js = nlohmann::json::parse(j.out, nullptr, false);
  ASSERT_TRUE(js.is_object()) << j.out;
  EXPECT_EQ(js["files"], 5u);
  EXPECT_EQ(js["bytes"], 4000u);
  EXPECT_EQ(js["skipped"], 3u);
  EXPECT_EQ(js["requests"], 1u);
  EXPECT_EQ(js["dryrun"], true);

  // Small batches: 5 files of 1000 bytes (and one empty) at 1500 bytes a request.
  Ran b = Sh(kBin + "pdm-migrate --dryrun --json --batch-bytes 1500 " + d);
  ASSERT_EQ(b.rc, 0) << b.err;
  EXPECT_EQ(nlohmann::json::parse(b.out, nullptr, false)["requests"], 4u) << b.out;
}

TEST(HsmToolsCli, DryrunFromAListAndACatalog) {
  Tree t;
  const std::string d = t.path();
  fs::create_directories(d + "/dir");
  Write(d + "/f1", 10);
  Write(d + "/dir/f2", 20);
  fs::create_symlink(d + "/f1", d + "/sym");
  {
    std::ofstream list(d + "/list.txt");
    list << d << "/f1\n" << d << "/dir/f2\n" << d << "/sym\n" << d << "/dir\n";
  }
  Ran r = Sh(kBin + "pdm-recall --dryrun -i " + d + "/list.txt");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(Lines(r.out), (std::set<std::string>{d + "/f1", d + "/dir/f2"}));
  EXPECT_NE(r.err.find("2 skipped"), std::string::npos) << r.err;  // the symlink and the directory

  // A listed path that does not exist is a failure, named on stderr.
  {
    std::ofstream list(d + "/list.txt", std::ios::app);
    list << d << "/missing\n";
  }
  Ran m = Sh(kBin + "pdm-recall --dryrun -i " + d + "/list.txt");
  EXPECT_EQ(m.rc, 1);
  EXPECT_NE(m.err.find(d + "/missing"), std::string::npos) << m.err;

  // A pdm-walk catalog is an input too (rows re-checked with lstat).
  ASSERT_EQ(Sh(kBin + "pdm-walk -o " + d + "/scan.h5 " + d + "/dir").rc, 0);
  Ran c = Sh(kBin + "pdm-migrate --dryrun -i " + d + "/scan.h5");
  EXPECT_EQ(c.rc, 0) << c.err;
  EXPECT_EQ(Lines(c.out), (std::set<std::string>{d + "/dir/f2"}));
}

TEST(HsmToolsCli, NoNodeAgentExits2) {
  Tree t;
  Write(t.path() + "/f", 10);
  Ran r = Sh("DMAPI_SOCKET=" + t.path() + "/no.sock " + kBin + "pdm-migrate " + t.path());
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("cannot reach the pdm node agent"), std::string::npos) << r.err;
  Ran s = Sh("DMAPI_SOCKET=" + t.path() + "/no.sock " + kBin + "pdm-state " + t.path());
  EXPECT_EQ(s.rc, 2);
  EXPECT_NE(s.err.find("cannot reach the pdm node agent"), std::string::npos) << s.err;
}

TEST(HsmToolsCli, ClusterWithoutArchiveHasNoCoordinator) {
  pdm::test::LocalCluster c(2);
  ASSERT_TRUE(c.up());
  const std::string dir = c.View(1) + "/data";
  fs::create_directories(dir);
  Write(dir + "/f1", 4096);
  Write(dir + "/f2", 10);
  const std::string env = "DMAPI_SOCKET=" + c.Socket(1) + " ";
  for (const char* tool : {"migrate", "archive", "release", "recall", "remove"}) {
    Ran r = Sh(env + kBin + "pdm-" + tool + " " + dir);
    EXPECT_EQ(r.rc, 2) << tool << ": " << r.err;
    EXPECT_NE(r.err.find("no HSM coordinator: is pdmd running with --archive?"), std::string::npos) << r.err;
  }
  // The JSON summary carries the reason too.
  Ran j = Sh(env + kBin + "pdm-migrate --json " + dir);
  EXPECT_EQ(j.rc, 2);
  EXPECT_NE(nlohmann::json::parse(j.out, nullptr, false).value("failure", "").find("no HSM coordinator"),
            std::string::npos)
      << j.out;

  // pdm-state needs only the node agent: files the HSM never touched.
  Ran s = Sh(env + kBin + "pdm-state " + dir);
  EXPECT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(Lines(s.out), (std::set<std::string>{dir + "/f1: (0x00000000)", dir + "/f2: (0x00000000)"}));
  Ran sj = Sh(env + kBin + "pdm-state --json " + dir);
  ASSERT_EQ(sj.rc, 0) << sj.err;
  auto js = nlohmann::json::parse(sj.out, nullptr, false);
  ASSERT_TRUE(js.is_object()) << sj.out;
  ASSERT_EQ(js["files"].size(), 2u);
  EXPECT_EQ(js["files"][0]["path"], dir + "/f1");
  EXPECT_EQ(js["files"][0]["flags"], nlohmann::json::array());
  EXPECT_EQ(js["files"][0]["file_size"], 4096u);
  EXPECT_EQ(js["total"], 2u);
  EXPECT_EQ(js["counts"]["none"], 2u);
  Ran sum = Sh(env + kBin + "pdm-state --summary " + dir);
  EXPECT_EQ(sum.rc, 0) << sum.err;
  EXPECT_NE(sum.out.find("2 files, 0 exists, 0 archived, 0 released"), std::string::npos) << sum.out;

  // The tool's session is gone after it exits: only the cluster's own remain.
  auto cl = c.Client(0);
  ASSERT_NE(cl, nullptr);
  auto sessions = cl->AllSessions();
  ASSERT_TRUE(sessions.ok()) << sessions.status().ToString();
  EXPECT_TRUE(sessions->empty()) << sessions->size() << " sessions left behind";
}


// ---- policies and recall order (a real cluster with an archive) ------------------

std::vector<std::string> OrderedLines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

// Bytes that differ per file and per offset, so a recall that put back the
// wrong data (or another file's) is seen.
std::string Pattern(size_t n, unsigned seed) {
  std::string b(n, '\0');
  uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = static_cast<char>(x);
  }
  return b;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The file's HSM state, from its attribute (no data access, no event).
pdm::hsm::FileState StateOf(const std::string& path) {
  char buf[4096];
  const std::string name = "trusted.pdm.dm." + std::string(pdm::hsm::kStateAttrName);
  const ssize_t n = ::getxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  if (n < 0) return {};
  auto s = pdm::hsm::Decode({reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n)});
  return s.ok() ? *s : pdm::hsm::FileState{};
}

uint64_t Allocated(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : ~uint64_t{0};
}

std::string PolicyFile(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string p = dir + "/" + name;
  std::ofstream(p) << text;
  return p;
}

// A policy's purge rule is refused by every HSM tool, whole and before
// anything is walked or sent, as are a tool with no rule of its own and
// --policy where the tool has no policy action.
TEST(HsmToolsPolicy, PurgeRulesAndMisfitsAreRefused) {
  Tree t;
  const std::string d = t.path();
  fs::create_directories(d + "/data");
  Write(d + "/data/f", 1000);
  const std::string purge = PolicyFile(d, "purge.toml", R"(
[[class]]
name = "all"
[[rule]]
name = "archive_all"
action = "archive"
class = "all"
[[rule]]
name = "scratch_clean"
action = "purge"
class = "all"
)");
  for (const char* tool : {"migrate", "archive", "release", "recall"}) {
    SCOPED_TRACE(tool);
    for (const char* dry : {"", "--dryrun "}) {
      Ran r = Sh(kBin + "pdm-" + tool + " " + dry + "--policy " + purge + " " + d + "/data");
      EXPECT_EQ(r.rc, 2) << r.err;
      EXPECT_NE(r.err.find("rule 'scratch_clean' has action purge: refused"), std::string::npos) << r.err;
      EXPECT_TRUE(r.out.empty()) << "nothing listed: " << r.out;
    }
  }
  EXPECT_TRUE(fs::exists(d + "/data/f"));
  const std::string archive_only = PolicyFile(d, "archive.toml", R"(
[[class]]
name = "all"
[[rule]]
name = "archive_all"
action = "archive"
class = "all"
)");
  Ran r = Sh(kBin + "pdm-recall --dryrun --policy " + archive_only + " " + d + "/data");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("no recall rule"), std::string::npos) << r.err;
  EXPECT_EQ(Sh(kBin + "pdm-remove --dryrun --policy " + archive_only + " " + d + "/data").rc, 2);
  EXPECT_EQ(Sh(kBin + "pdm-migrate --dryrun --policy " + d + "/missing.toml " + d + "/data").rc, 2);
  // ... while the archive rule itself is fine for pdm-archive and pdm-migrate.
  Ran a = Sh(kBin + "pdm-archive --dryrun --policy " + archive_only + " " + d + "/data");
  EXPECT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(Lines(a.out), (std::set<std::string>{"archive " + d + "/data/f"}));
}

class HsmToolsArchive : public ::testing::Test {
 protected:
  HsmToolsArchive() : lc_(2, "--archive posix:%D/archive --hsm-chunk-mib 1") {}
  void SetUp() override {
    ASSERT_TRUE(lc_.up());
    env_ = "DMAPI_SOCKET=" + lc_.Socket(1) + " ";
  }
  std::string Data(int node) const { return lc_.View(node) + "/data"; }
  pdm::test::LocalCluster lc_;
  std::string env_;
};

// pdm-migrate --policy: larger_than + an exclude glob + order size +
// max_count pick exactly three files; the dry run lists them, the real run
// releases exactly those (read back right through the other node), every
// other file stays resident and untouched. A second dry run does not spend
// the limit on files already migrated. Then a mixed policy: each file gets
// its rule's action (recall one, archive the small ones), in one run.
TEST_F(HsmToolsArchive, PolicyMigrateSendsExactlyThePolicysFiles) {
  const std::string d = Data(1);
  fs::create_directories(d + "/sub");
  std::map<std::string, std::string> content;  // relative path -> bytes
  const std::pair<const char*, size_t> files[] = {
      {"big0", 300 << 10}, {"sub/big1", 400 << 10}, {"big2", 500 << 10}, {"sub/big3", 600 << 10},
      {"huge.keep", 900 << 10}, {"s0", 1000}, {"sub/s1", 2000}, {"s2", 3000}};
  unsigned seed = 0;
  for (const auto& [rel, n] : files) {
    content[rel] = Pattern(n, seed++);
    WriteBytes(d + "/" + rel, content[rel]);
  }
  Sh("sync");
  const std::string pol = PolicyFile(lc_.dir(), "big.toml", R"(
[[class]]
name = "big"
larger_than = "200K"
exclude = ["*.keep"]

[[rule]]
name = "big_first"
action = "migrate"
class = "big"
order = "size"
max_count = 3
)");
  const std::set<std::string> want{d + "/sub/big3", d + "/big2", d + "/sub/big1"};

  Ran dry = Sh(env_ + kBin + "pdm-migrate --dryrun --policy " + pol + " " + d);
  ASSERT_EQ(dry.rc, 0) << dry.err;
  std::set<std::string> listed;
  for (const std::string& l : Lines(dry.out)) {
    ASSERT_EQ(l.rfind("migrate ", 0), 0u) << l;
    listed.insert(l.substr(8));
  }
  EXPECT_EQ(listed, want);
  // Two processes walk shares of the tree; the limit is cut over both, so
  // together they list the same three.
  Ran dry2 = Sh(env_ + "mpirun --allow-run-as-root --oversubscribe -np 2 " + kBin + "pdm-migrate --dryrun --policy " +
                pol + " " + d);
  ASSERT_EQ(dry2.rc, 0) << dry2.err;
  EXPECT_EQ(Lines(dry2.out), Lines(dry.out));
  for (const auto& [rel, bytes] : content) EXPECT_EQ(StateOf(d + "/" + rel).flags, 0u) << "a dry run sends nothing";

  // The trigger, as pdm-purge has it: below the high watermark nothing; at
  // it, migrate rules take files (allocated bytes, largest first here) until
  // the low watermark is reached — set so ~700 KiB must go: sub/big3
  // (600 KiB) is not enough, big2 gets there, nothing more.
  struct statvfs sv;
  ASSERT_EQ(::statvfs(d.c_str(), &sv), 0);
  const double used = double(sv.f_blocks - sv.f_bfree) * double(sv.f_frsize),
               total = used + double(sv.f_bavail) * double(sv.f_frsize);
  // Fractions, not "NN%": percentages would round the budget.
  auto trig = [&](const std::string& name, double high, double low) {
    char high_s[64], low_s[64];
    std::snprintf(high_s, sizeof high_s, "%.10f", high);
    std::snprintf(low_s, sizeof low_s, "%.10f", low);
    return PolicyFile(lc_.dir(), name, std::string("[trigger]\npath = \"") + d + "\"\nhigh = " + high_s + "\nlow = " + low_s +
                                           "\n[[class]]\nname = \"big\"\nlarger_than = \"200K\"\nexclude = \"*.keep\"\n"
                                           "[[rule]]\nname = \"m\"\naction = \"migrate\"\nclass = \"big\"\n"
                                           "order = \"size\"\n");
  };
  Ran quiet = Sh(env_ + kBin + "pdm-migrate --dryrun --json --policy " + trig("quiet.toml", (used + 4096 * 1024) / total, 0.01) + " " + d);
  ASSERT_EQ(quiet.rc, 0) << quiet.err;
  auto qj = nlohmann::json::parse(quiet.out, nullptr, false);
  EXPECT_EQ(qj["triggered"], false) << quiet.out;
  EXPECT_EQ(qj["files"], 0u) << quiet.out;
  const double low = (used - 700 * 1024) / total;  // at or above high runs, so high = low
  Ran busy = Sh(env_ + kBin + "pdm-migrate --dryrun --policy " + trig("busy.toml", low, low) + " " + d);
  ASSERT_EQ(busy.rc, 0) << busy.err;
  EXPECT_EQ(Lines(busy.out), (std::set<std::string>{"migrate " + d + "/sub/big3", "migrate " + d + "/big2"}));

  Ran run = Sh(env_ + kBin + "pdm-migrate --json --policy " + pol + " " + d);
  ASSERT_EQ(run.rc, 0) << run.err;
  auto j = nlohmann::json::parse(run.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << run.out;
  EXPECT_EQ(j["files"], 3u);
  EXPECT_EQ(j["ok"], 3u);
  EXPECT_EQ(j["failed"], 0u);
  EXPECT_EQ(j["bytes"], uint64_t{(400 + 500 + 600) << 10});
  EXPECT_EQ(j["scanned"], 10u);  // 8 files, sub/ and the root
  ASSERT_EQ(j["rules"].size(), 1u);
  EXPECT_EQ(j["rules"][0]["name"], "big_first");
  EXPECT_EQ(j["rules"][0]["files"], 3u);
  EXPECT_EQ(j["rules"][0]["ok"], 3u);

  // What was sent is what the dry run listed: exactly those are released.
  std::set<std::string> released;
  for (const auto& [rel, bytes] : content) {
    const std::string p = d + "/" + rel;
    const auto s = StateOf(p);
    if (s.Has(pdm::hsm::kReleased)) {
      released.insert(p);
      EXPECT_LT(Allocated(p), bytes.size() / 4) << p << ": released, its space freed";
    } else {
      EXPECT_EQ(s.flags, 0u) << p << ": not selected, never touched";
      EXPECT_GE(Allocated(p), bytes.size()) << p << ": stays resident";
    }
  }
  EXPECT_EQ(released, listed);

  // Already migrated files are no longer candidates: the limit now takes the
  // one big file left.
  Ran again = Sh(env_ + kBin + "pdm-migrate --dryrun --policy " + pol + " " + d);
  ASSERT_EQ(again.rc, 0) << again.err;
  EXPECT_EQ(Lines(again.out), (std::set<std::string>{"migrate " + d + "/big0"}));

  // Every byte reads back right through the other node (recalled on read).
  for (const auto& [rel, bytes] : content) EXPECT_TRUE(ReadAll(Data(0) + "/" + rel) == bytes) << rel;

  // Migrate again, then a mixed policy through pdm-migrate: recall big2,
  // archive the small files; sub/big1 and big3 stay released.
  ASSERT_EQ(Sh(env_ + kBin + "pdm-migrate --policy " + pol + " " + d).rc, 0);
  ASSERT_TRUE(StateOf(d + "/big2").Has(pdm::hsm::kReleased));
  const std::string mixed = PolicyFile(lc_.dir(), "mixed.toml", R"(
[[class]]
name = "want_back"
path = "big2"
hsm_state = "released"
[[class]]
name = "small"
smaller_than = "10K"
[[rule]]
name = "bring_back"
action = "recall"
class = "want_back"
[[rule]]
name = "copy_small"
action = "archive"
class = "small"
)");
  Ran mdry = Sh(env_ + kBin + "pdm-migrate --dryrun --policy " + mixed + " " + d);
  ASSERT_EQ(mdry.rc, 0) << mdry.err;
  // Archives before recalls (what takes space goes last), each group sorted.
  EXPECT_EQ(OrderedLines(mdry.out), (std::vector<std::string>{"archive " + d + "/s0", "archive " + d + "/s2",
                                                              "archive " + d + "/sub/s1", "recall " + d + "/big2"}));
  Ran mrun = Sh(env_ + kBin + "pdm-migrate --json --policy " + mixed + " " + d);
  ASSERT_EQ(mrun.rc, 0) << mrun.err;
  auto mj = nlohmann::json::parse(mrun.out, nullptr, false);
  EXPECT_EQ(mj["files"], 4u) << mrun.out;
  EXPECT_EQ(mj["ok"], 4u) << mrun.out;
  EXPECT_FALSE(StateOf(d + "/big2").Has(pdm::hsm::kReleased));
  EXPECT_GE(Allocated(d + "/big2"), content["big2"].size());
  for (const char* rel : {"s0", "sub/s1", "s2"}) {
    const auto s = StateOf(d + "/" + rel);
    EXPECT_TRUE(s.Has(pdm::hsm::kArchived) && !s.Has(pdm::hsm::kReleased)) << rel << ": " << s.flags;
  }
  for (const char* rel : {"sub/big1", "sub/big3"}) EXPECT_TRUE(StateOf(d + "/" + rel).Has(pdm::hsm::kReleased)) << rel;
  EXPECT_EQ(StateOf(d + "/huge.keep").flags, 0u);
  EXPECT_EQ(StateOf(d + "/big0").flags, 0u);
  for (const auto& [rel, bytes] : content) EXPECT_TRUE(ReadAll(Data(0) + "/" + rel) == bytes) << rel;
}

// (fsid, ino, igen, ver) of an HSM key, for the expected order.
std::tuple<uint64_t, uint64_t, uint64_t, uint64_t> KeyNumbers(const std::string& key) {
  unsigned long long fsid = 0, ino = 0, ver = 0;
  unsigned igen = 0;
  EXPECT_EQ(std::sscanf(key.c_str(), "%llx/%llu.%u/v%llu", &fsid, &ino, &igen, &ver), 4) << key;
  return {fsid, ino, igen, ver};
}

// pdm-recall of a list orders the recalls by archive locality: by the copies'
// keys taken as numbers, not by the list's (or the paths') order. The files
// are written in reverse name order, so the two orders differ; the dry run
// shows the order the real run sends, and the real run brings every byte back.
TEST_F(HsmToolsArchive, RecallFollowsTheArchiveKeyOrder) {
  const std::string d = Data(1);
  fs::create_directories(d + "/a");
  fs::create_directories(d + "/b");
  std::vector<std::string> paths;
  std::map<std::string, std::string> content;
  for (int i = 11; i >= 0; --i) {  // created z-to-a: inode order is not name order
    const std::string p = d + (i % 2 ? "/a/f" : "/b/f") + std::to_string(100 + i);
    content[p] = Pattern(5000 + static_cast<size_t>(i) * 100, static_cast<unsigned>(i));
    WriteBytes(p, content[p]);
    paths.push_back(p);
  }
  Sh("sync");
  ASSERT_EQ(Sh(env_ + kBin + "pdm-migrate " + d).rc, 0);
  std::vector<std::pair<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>, std::string>> by_key;
  for (const std::string& p : paths) {
    const auto s = StateOf(p);
    ASSERT_TRUE(s.Has(pdm::hsm::kReleased)) << p;
    by_key.emplace_back(KeyNumbers(s.key), p);
  }
  std::sort(by_key.begin(), by_key.end());
  std::vector<std::string> want;
  for (const auto& [k, p] : by_key) want.push_back(p);
  std::vector<std::string> by_path = want;
  std::sort(by_path.begin(), by_path.end());
  ASSERT_NE(want, by_path) << "the key order must differ from the path order for this test to mean anything";

  // The list in path order; the recalls go in key order.
  const std::string list = lc_.dir() + "/recall.txt";
  {
    std::ofstream l(list);
    for (const std::string& p : by_path) l << p << "\n";
  }
  Ran dry = Sh(env_ + kBin + "pdm-recall --dryrun -i " + list);
  ASSERT_EQ(dry.rc, 0) << dry.err;
  EXPECT_EQ(OrderedLines(dry.out), want);
  // Small requests: still one order across them.
  Ran small = Sh(env_ + kBin + "pdm-recall --dryrun --batch-bytes 12K -i " + list);
  ASSERT_EQ(small.rc, 0) << small.err;
  EXPECT_EQ(OrderedLines(small.out), want);
  // A walk of the tree is ordered the same way.
  Ran walk = Sh(env_ + kBin + "pdm-recall --dryrun " + d);
  EXPECT_EQ(OrderedLines(walk.out), want);
  // Under mpirun rank 0 orders everything and deals the requests; together
  // the processes send every file once.
  Ran m = Sh(env_ + "mpirun --allow-run-as-root --oversubscribe -np 2 " + kBin +
             "pdm-recall --dryrun --batch-bytes 12K -i " + list);
  ASSERT_EQ(m.rc, 0) << m.err;
  EXPECT_EQ(Lines(m.out), std::set<std::string>(want.begin(), want.end()));
  EXPECT_EQ(OrderedLines(m.out).size(), want.size());

  Ran run = Sh(env_ + kBin + "pdm-recall --json -i " + list);
  ASSERT_EQ(run.rc, 0) << run.err;
  auto j = nlohmann::json::parse(run.out, nullptr, false);
  EXPECT_EQ(j["ok"], 12u) << run.out;
  for (const std::string& p : paths) {
    EXPECT_FALSE(StateOf(p).Has(pdm::hsm::kReleased)) << p;
    EXPECT_TRUE(ReadAll(p) == content[p]) << p;
  }
}

}  // namespace

namespace {
void SetAtimeDaysAgo(const std::string& path, int days) {
  struct timespec t[2];
  clock_gettime(CLOCK_REALTIME, &t[0]);
  t[0].tv_sec -= days * 86400L;
  t[1].tv_nsec = UTIME_OMIT;
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), t, 0), 0) << path;
}
blkcnt_t Blocks(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_blocks : -1;
}
}  // namespace

// pdm-purge --release-only on a cluster with an archive: the old archived
// files are released (their blocks go), the young one and the old one with
// no archive copy keep theirs, nothing is removed, and a released file reads
// back byte for byte through the other node's view (a transparent recall).
TEST_F(HsmToolsArchive, PurgeReleaseOnlyFreesSpaceAndKeepsFilesReadable) {
  const std::string d = Data(1);
  fs::create_directories(d);
  std::map<std::string, std::string> content;
  for (const char* name : {"old1", "old2", "young", "old_unarchived"}) {
    content[name] = Pattern(3u << 20, static_cast<unsigned>(content.size() + 7));
    WriteBytes(d + "/" + name, content[name]);
  }
  Sh("sync");
  ASSERT_EQ(Sh(env_ + kBin + "pdm-archive " + d + "/old1 " + d + "/old2 " + d + "/young").rc, 0);
  for (const char* name : {"old1", "old2", "old_unarchived"}) SetAtimeDaysAgo(d + "/" + name, 90);
  Sh("sync");
  std::map<std::string, blkcnt_t> before;
  for (const auto& [name, bytes] : content) {
    before[name] = Blocks(d + "/" + name);
    ASSERT_GE(before[name] * 512, static_cast<blkcnt_t>(bytes.size())) << name;
  }

  Ran r = Sh(env_ + kBin + "pdm-purge --json --release-only --older-than 30d " + d);
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = nlohmann::json::parse(r.out.substr(r.out.rfind('{')), nullptr, false);
  EXPECT_EQ(j["released"], 2) << r.out;
  EXPECT_EQ(j["removed"], 0) << r.out;
  EXPECT_EQ(j["errors"], 0) << r.out;
  Sh("sync");
  for (const char* name : {"old1", "old2"}) {
    EXPECT_TRUE(StateOf(d + "/" + name).Has(pdm::hsm::kReleased)) << name;
    EXPECT_LT(Blocks(d + "/" + name), before[name] / 8) << name << ": its blocks were freed";
  }
  for (const char* name : {"young", "old_unarchived"}) {
    EXPECT_FALSE(StateOf(d + "/" + name).Has(pdm::hsm::kReleased)) << name;
    EXPECT_EQ(Blocks(d + "/" + name), before[name]) << name;
  }
  // Every file is still there and reads back right through node 0.
  for (const auto& [name, bytes] : content) EXPECT_EQ(ReadAll(Data(0) + "/" + name), bytes) << name;
  EXPECT_GE(Blocks(d + "/old1") * 512, static_cast<blkcnt_t>(content["old1"].size())) << "recalled: blocks back";
}
