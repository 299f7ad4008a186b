// The HSM tools' command line where no HSM has to run: usage errors exit 2,
// --version and --help, --dryrun lists the files a real run would send (walked
// recursively, symlinks never followed, lists and catalogs too), and against
// a cluster started without --archive, pdm-migrate says "no HSM coordinator"
// and exits 2 while pdm-state shows files the HSM never touched. The tools
// run as real executables; the end-to-end HSM tests are with the coordinator's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

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

}  // namespace
