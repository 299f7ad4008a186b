// pdm_prestage end to end: a 4-node cluster with the HSM, files migrated
// out, then the example MPI application (examples/prestage_example.c) run
// with 3 ranks, each on its own node's agent and view, naming overlapping
// inputs: every file comes back once, with its bytes, and a file whose
// archive copy is gone fails the call on every rank.
#include <dmapi.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "dmapi_child.h"
#include "hsm/protocol.h"
#include "hsm/state.h"

namespace pdm::test {
namespace {

namespace fs = std::filesystem;

constexpr int kFiles = 9;
constexpr int kRanks = 3;

std::pair<int, std::string> Shell(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// Deterministic contents, so the test knows every byte without keeping them.
std::string Contents(int i) {
  const size_t n = i == 0 ? (3u << 20) + 100 : 1000u * static_cast<size_t>(i) + 70000u * static_cast<size_t>(i);
  std::string s(n, '\0');
  for (size_t k = 0; k < n; ++k) s[k] = static_cast<char>((static_cast<size_t>(i) * 131 + k * k * 7 + (k >> 9)) & 0xff);
  return s;
}

// What the example prints per file.
uint64_t Fnv1a64(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string Hex16(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

hsm::FileState StateOf(const std::string& path) {
  char buf[4096];
  const std::string name = "trusted.pdm.dm." + std::string(hsm::kStateAttrName);
  const ssize_t n = ::getxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  if (n < 0) return {};
  auto s = hsm::Decode({reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n)});
  return s.ok() ? *s : hsm::FileState{};
}

// How many recall moves the coordinator's journal(s) began, per object key:
// the archive-side proof that a file named by several ranks came back once.
std::map<std::string, int> RecallsByKey(const std::string& dir) {
  std::map<std::string, int> out;
  for (const char* sub : {"/state", "/archive"}) {
    if (!fs::exists(dir + sub)) continue;
    for (auto& e : fs::recursive_directory_iterator(dir + sub)) {
      if (!e.is_regular_file() || e.path().extension() != ".journal") continue;
      std::ifstream f(e.path(), std::ios::binary);
      std::string j((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      // [u32 magic][u32 length][u64 xxh3][payload], docs/hsm-archive.md.
      for (size_t p = 0; p + 16 <= j.size();) {
        uint32_t len;
        std::memcpy(&len, j.data() + p + 4, 4);
        if (p + 16 + len > j.size()) break;
        auto rec = nlohmann::json::parse(j.substr(p + 16, len), nullptr, false);
        if (rec.is_object() && rec.value("t", "") == "begin" && rec.value("op", "") == "recall")
          ++out[rec.value("key", "")];
        p += 16 + len;
      }
    }
  }
  return out;
}

class Prestage : public ::testing::Test {
 protected:
  Prestage() : lc_(4, "--archive posix:%D/archive --hsm-chunk-mib 2 --session-failure-timeout-ms 5000") {}

  void SetUp() override {
    ASSERT_TRUE(lc_.up());
    const std::string d = lc_.View(0) + "/data";
    fs::create_directories(d);
    for (int i = 0; i < kFiles; ++i) {
      std::ofstream f(d + "/f" + std::to_string(i), std::ios::binary);
      f << Contents(i);
    }
    Shell("sync");
    // Migrate through node 1, as pdm-migrate would: one request of handles.
    const int rc = RunOn(lc_, 1, [&](FILE*, FILE*) {
      auto sid = hsm::FindCoordinator();
      CHILD_CHECK(sid.ok());
      hsm::Request r;
      r.op = hsm::Op::kMigrate;
      for (int i = 0; i < kFiles; ++i) {
        const std::string p = Path(1, i);
        void* h;
        size_t hl;
        CHILD_CHECK(dm_path_to_handle(const_cast<char*>(p.c_str()), &h, &hl) == 0);
        r.handles.emplace_back(static_cast<char*>(h), hl);
        dm_handle_free(h, hl);
      }
      const std::string msg = hsm::EncodeRequest(r);
      CHILD_CHECK(dm_send_msg(*sid, DM_MSGTYPE_SYNC, msg.size(), const_cast<char*>(msg.data())) == 0);
      return 0;
    });
    ASSERT_EQ(rc, 0);
    for (int i = 0; i < kFiles; ++i) {
      const hsm::FileState s = StateOf(Path(0, i));
      ASSERT_TRUE(s.Has(hsm::kReleased)) << i << ": " << hsm::FlagsString(s.flags);
      struct stat st;
      ASSERT_EQ(::stat(Path(0, i).c_str(), &st), 0);
      ASSERT_LT(st.st_blocks * 512, 64 * 1024) << "f" << i << " is a stub before the prestage";
    }
    ASSERT_TRUE(RecallsByKey(lc_.dir()).empty()) << "nothing recalled yet";
  }

  std::string Path(int node, int i) const { return lc_.View(node) + "/data/f" + std::to_string(i); }

  // The example with 3 ranks, rank r on node r's agent and view.
  std::pair<int, std::string> Example() const {
    std::string files;
    for (int i = 0; i < kFiles; ++i) files += " f" + std::to_string(i);
    return Shell("timeout 60 mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(kRanks) +
               " --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo " +
               std::string(PDM_BINARY_DIR) + "/bin/prestage_example -s " + lc_.dir() + "/state/node%r.sock -d " +
               lc_.dir() + "/node%r/data" + files);
  }

  LocalCluster lc_;
};

TEST_F(Prestage, EveryRankReadsItsInputsEachFileRecalledOnce) {
  auto [rc, out] = Example();
  ASSERT_EQ(rc, 0) << out;
  // 4 + 5 + 4 paths (file 0 on every rank, neighbouring windows share one
  // file), 9 distinct files, reached through three different views.
  EXPECT_NE(out.find("prestage: paths 13 files 9 resident 0 recalled 9 failed_paths 0 failed_files 0 requests 1 "),
            std::string::npos)
      << out;
  for (int r = 0; r < kRanks; ++r)
    EXPECT_NE(out.find("rank " + std::to_string(r) + ": prestage ok"), std::string::npos) << out;

  // The bytes every rank read are the ones written.
  int lines = 0;
  std::istringstream is(out);
  for (std::string line; std::getline(is, line);) {
    const auto at = line.find(": file ");
    if (at == std::string::npos) continue;
    std::istringstream ls(line.substr(at + 7));
    std::string path, hex;
    uint64_t size = 0;
    ls >> path >> size >> hex;
    const int i = std::stoi(path.substr(path.rfind("/f") + 2));
    const std::string want = Contents(i);
    EXPECT_EQ(size, want.size()) << line;
    EXPECT_EQ(hex, Hex16(Fnv1a64(want))) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 13) << out;

  const auto recalls = RecallsByKey(lc_.dir());
  for (int i = 0; i < kFiles; ++i) {
    const hsm::FileState s = StateOf(Path(3, i));
    EXPECT_FALSE(s.Has(hsm::kReleased)) << "f" << i << ": " << hsm::FlagsString(s.flags);
    EXPECT_TRUE(s.Has(hsm::kArchived)) << "f" << i;
    struct stat st;
    ASSERT_EQ(::stat(Path(3, i).c_str(), &st), 0);
    EXPECT_GE(st.st_blocks * 512, st.st_size) << "f" << i << " has its blocks back";
    auto it = recalls.find(s.key);
    EXPECT_EQ(it == recalls.end() ? 0 : it->second, 1) << "f" << i << " (" << s.key << ") recalled once";
  }
  EXPECT_EQ(recalls.size(), static_cast<size_t>(kFiles));

  // Again: everything is resident, nothing is asked of the coordinator.
  auto [rc2, out2] = Example();
  ASSERT_EQ(rc2, 0) << out2;
  EXPECT_NE(out2.find("prestage: paths 13 files 9 resident 9 recalled 0 failed_paths 0 failed_files 0 requests 0 "),
            std::string::npos)
      << out2;
  for (auto& [key, n] : RecallsByKey(lc_.dir())) EXPECT_EQ(n, 1) << key;
}

TEST_F(Prestage, ALostArchiveCopyFailsTheCallOnEveryRankTheRestIsRecalled) {
  // f5 is in rank 1's window only; its archive object disappears.
  const std::string key = StateOf(Path(0, 5)).key;
  ASSERT_FALSE(key.empty());
  for (const char* ext : {".json", ".data"})
    ASSERT_TRUE(fs::remove(lc_.dir() + "/archive/objects/" + key + ext)) << key << ext;

  auto [rc, out] = Example();
  EXPECT_NE(rc, 0) << out;
  for (int r = 0; r < kRanks; ++r)
    EXPECT_NE(out.find("rank " + std::to_string(r) + ": prestage failed"), std::string::npos) << out;
  // Rank 1 names the file and the errno; the others learn that a remote
  // rank's path failed.
  EXPECT_NE(out.find("rank 1: prestage failed (" + std::string(std::strerror(EIO)) + ")"), std::string::npos) << out;
  EXPECT_NE(out.find("rank 1: failed " + lc_.View(1) + "/data/f5: " + std::strerror(EIO)), std::string::npos)
      << out;
  EXPECT_NE(out.find("rank 0: prestage failed (" + std::string(std::strerror(EREMOTE)) + ")"), std::string::npos)
      << out;
  EXPECT_NE(out.find("prestage: paths 13 files 9 resident 0 recalled 8 failed_paths 1 failed_files 1 "),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find(": file "), std::string::npos) << "no rank reads after a failed prestage";

  const hsm::FileState lost = StateOf(Path(0, 5));
  EXPECT_TRUE(lost.Has(hsm::kLost | hsm::kReleased)) << hsm::FlagsString(lost.flags);
  for (int i = 0; i < kFiles; ++i) {
    if (i == 5) continue;
    EXPECT_FALSE(StateOf(Path(0, i)).Has(hsm::kReleased)) << "f" << i << " was recalled all the same";
  }
}

}  // namespace
}  // namespace pdm::test
