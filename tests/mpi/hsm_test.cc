// The HSM end to end on a 4-node cluster: pdmd --archive runs the
// coordinator on rank 0 and workers on every rank; requests go to it as
// DMAPI user events (what the pdm-* tools send); unmodified programs
// (sha256sum, cat) read released files back through other nodes' views.
#include <dmapi.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "dmapi_child.h"
#include "hsm/protocol.h"
#include "hsm/state.h"

namespace pdm::test {
namespace {

namespace fs = std::filesystem;

std::pair<int, std::string> Sh(const std::string& cmd) { return RunShell(cmd, true); }

uint64_t DuBytes(const std::string& dir) {
  auto [rc, out] = Sh("du -sB1 " + dir + " | cut -f1");
  return rc == 0 ? std::stoull(out) : 0;
}

// The file's HSM state, read from its attribute (no data access, no event).
hsm::FileState StateOf(const std::string& path) {
  char buf[4096];
  const std::string name = "trusted.pdm.dm." + std::string(hsm::kStateAttrName);
  ssize_t n = ::getxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  if (n < 0) return {};
  auto s = hsm::Decode({reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n)});
  return s.ok() ? *s : hsm::FileState{};
}

// A child on `node` sends `op` for `paths` to the coordinator, in requests
// of at most kMaxFilesPerRequest; exits with the first errno (0 = all done).
int Request(const LocalCluster& lc, int node, hsm::Op op, const std::vector<std::string>& paths) {
  return RunOn(lc, node, [&](FILE*, FILE*) {
    auto sid = hsm::FindCoordinator();
    CHILD_CHECK(sid.ok());
    int first = 0;
    for (size_t i = 0; i < paths.size(); i += hsm::kMaxFilesPerRequest) {
      hsm::Request r;
      r.op = op;
      for (size_t k = i; k < std::min(paths.size(), i + hsm::kMaxFilesPerRequest); ++k) {
        void* h;
        size_t hl;
        CHILD_CHECK(dm_path_to_handle(const_cast<char*>(paths[k].c_str()), &h, &hl) == 0);
        r.handles.emplace_back(static_cast<char*>(h), hl);
        dm_handle_free(h, hl);
      }
      const std::string msg = hsm::EncodeRequest(r);
      if (dm_send_msg(*sid, DM_MSGTYPE_SYNC, msg.size(), const_cast<char*>(msg.data())) != 0 && first == 0)
        first = errno;
    }
    return first;
  });
}

class Hsm : public ::testing::TestWithParam<std::string> {
 protected:
  Hsm()
      : lc_(4, "--archive " + GetParam() + ":%D/archive --hsm-chunk-mib 4 --session-failure-timeout-ms 5000") {}
  void SetUp() override { ASSERT_TRUE(lc_.up()); }

  // Writes through node 0: `big` files of 16 MiB + `small` of 1-8 KiB, and
  // their sha256sums (paths relative to the data dir) outside the cluster.
  std::vector<std::string> MakeDataset(int big, int small) {
    const std::string d = lc_.View(0) + "/data";
    fs::create_directories(d + "/small");
    std::vector<std::string> rel;
    for (int i = 0; i < big; ++i) {
      rel.push_back("big" + std::to_string(i));
      EXPECT_EQ(Sh("head -c 16777216 /dev/urandom > " + d + "/" + rel.back()).first, 0);
    }
    for (int i = 0; i < small; ++i) {
      rel.push_back("small/f" + std::to_string(i));
      std::ofstream f(d + "/" + rel.back(), std::ios::binary);
      const size_t n = 1024 + (i * 977) % 7168;
      for (size_t k = 0; k < n; ++k) f.put(static_cast<char>('a' + (i + k) % 26));
    }
    EXPECT_EQ(Sh("cd " + d + " && sha256sum " + [&] {
                std::string all;
                for (auto& r : rel) all += r + " ";
                return all;
              }() + "> " + lc_.dir() + "/sums").first,
              0);
    Sh("sync");
    return rel;
  }
  std::vector<std::string> On(int node, const std::vector<std::string>& rel) {
    std::vector<std::string> out;
    for (auto& r : rel) out.push_back(lc_.View(node) + "/data/" + r);
    return out;
  }
  LocalCluster lc_;
};

TEST_P(Hsm, MigrateFreesTheSpaceAndEveryFileReadsBackThroughAnotherNode) {
  auto rel = MakeDataset(3, 300);
  const uint64_t before = DuBytes(lc_.dir() + "/backing/data");
  ASSERT_EQ(Request(lc_, 1, hsm::Op::kMigrate, On(1, rel)), 0);
  const uint64_t after = DuBytes(lc_.dir() + "/backing/data");
  EXPECT_LT(after, before / 10) << "before " << before << " after " << after;
  for (auto& p : On(3, rel)) {
    hsm::FileState s = StateOf(p);
    ASSERT_TRUE(s.Has(hsm::kExists | hsm::kArchived | hsm::kReleased)) << p << ": " << hsm::FlagsString(s.flags);
    EXPECT_EQ(s.archive_id, 1u);
  }
  // Transparent recall: an unmodified program on another node.
  auto [rc, out] = Sh("cd " + lc_.View(2) + "/data && sha256sum -c --quiet " + lc_.dir() + "/sums");
  EXPECT_EQ(rc, 0) << out;
  struct stat st;
  ASSERT_EQ(stat((lc_.View(0) + "/data/big0").c_str(), &st), 0);
  EXPECT_GE(st.st_blocks * 512, 16 << 20) << "the recalled file has its blocks back";
  EXPECT_FALSE(StateOf(lc_.View(0) + "/data/big1").Has(hsm::kReleased));
  EXPECT_TRUE(StateOf(lc_.View(0) + "/data/big1").Has(hsm::kArchived));
  // A recalled, unmodified file releases again without a new copy (its
  // chunks came back from several nodes at once).
  const std::string key = StateOf(lc_.View(0) + "/data/big1").key;
  {
    // A release and a recall are not changes: the file keeps its mtime.
    struct stat b1;
    ASSERT_EQ(stat((lc_.View(0) + "/data/big1").c_str(), &b1), 0);
    EXPECT_EQ(b1.st_mtim.tv_sec * 1000000000LL, StateOf(lc_.View(0) + "/data/big1").mtime_ns);
  }
  EXPECT_EQ(Request(lc_, 1, hsm::Op::kRelease, On(1, {"big1", "big2"})), 0);
  EXPECT_TRUE(StateOf(lc_.View(0) + "/data/big1").Has(hsm::kReleased));
  EXPECT_EQ(StateOf(lc_.View(0) + "/data/big1").key, key);
}

TEST_P(Hsm, CorruptCopyFailsWithEioAndTheFileIsLostDirtyFilesAreNotReleased) {
  auto rel = MakeDataset(1, 2);
  const auto paths = On(1, rel);
  ASSERT_EQ(Request(lc_, 1, hsm::Op::kMigrate, paths), 0);
  // Damage every object of the archive (one byte each in the middle of the
  // data files / containers).
  const std::string key = StateOf(paths[0]).key;
  ASSERT_FALSE(key.empty());
  int damaged = 0;
  for (auto& e : fs::recursive_directory_iterator(lc_.dir() + "/archive")) {
    if (!e.is_regular_file() || e.file_size() < 1000000) continue;
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(e.file_size() / 2));
    char c;
    f.seekg(static_cast<std::streamoff>(e.file_size() / 2));
    f.get(c);
    f.seekp(static_cast<std::streamoff>(e.file_size() / 2));
    f.put(static_cast<char>(c ^ 0x5a));
    ++damaged;
  }
  ASSERT_GE(damaged, 1) << Sh("find " + lc_.dir() + "/archive -ls; grep -h 'hsm\\|archive' " + lc_.dir() +
                              "/state/pdmd.log | head -20; ps aux | grep pdmd | head -3").second;
  auto [rc, out] = Sh("(cat " + lc_.View(3) + "/data/big0 >/dev/null)");
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("Input/output error"), std::string::npos) << "rc " << rc << ": " << out;
  hsm::FileState s = StateOf(paths[0]);
  EXPECT_TRUE(s.Has(hsm::kLost)) << hsm::FlagsString(s.flags);
  EXPECT_TRUE(s.Has(hsm::kReleased)) << "still a stub";
  struct stat st;
  ASSERT_EQ(stat((lc_.View(0) + "/data/big0").c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, 1 << 20) << "no garbage was written into the stub";
  // A lost stub is not archived again: that would copy its holes as data.
  EXPECT_EQ(Request(lc_, 1, hsm::Op::kArchive, {paths[0]}), EIO);
  EXPECT_EQ(Request(lc_, 1, hsm::Op::kMigrate, {paths[0]}), EIO);
  EXPECT_TRUE(StateOf(paths[0]).Has(hsm::kLost));
  EXPECT_EQ(StateOf(paths[0]).key, key) << "no new copy replaced the damaged one";

  // Dirty: an archived file written since is never released.
  const std::string small = lc_.View(2) + "/data/" + rel[1];
  EXPECT_EQ(Sh("cat " + small + " > /dev/null").first, 0) << "recalled";
  EXPECT_TRUE(StateOf(small).Has(hsm::kArchived));
  EXPECT_FALSE(StateOf(small).Has(hsm::kDirty)) << "reading a recalled file does not make it dirty";
  EXPECT_EQ(Sh("echo more >> " + small).first, 0);
  // CLOSE reaches the coordinator asynchronously.
  for (int i = 0; i < 50 && !StateOf(small).Has(hsm::kDirty); ++i) ::usleep(100000);
  EXPECT_TRUE(StateOf(small).Has(hsm::kDirty)) << hsm::FlagsString(StateOf(small).flags);
  EXPECT_EQ(Request(lc_, 1, hsm::Op::kRelease, {small}), EBUSY);
  EXPECT_FALSE(StateOf(small).Has(hsm::kReleased));
  // Archiving it again makes it clean, and then it releases.
  EXPECT_EQ(Request(lc_, 1, hsm::Op::kMigrate, {small}), 0);
  EXPECT_TRUE(StateOf(small).Has(hsm::kReleased));
  auto [crc, cout] = Sh("cat " + lc_.View(3) + "/data/" + rel[1]);
  EXPECT_NE(cout.find("more"), std::string::npos) << "rc " << crc << ": " << cout.substr(0, 200) << "\n" << Sh("grep -v ' info ' " + lc_.dir() + "/state/pdmd.log | tail -20").second;
}

// A stub region that a release left unfinished (a crash between its
// region and its state, or a punch whose result was lost): the file's own
// bytes are never overwritten by a recall while it has no hole, and its
// copy is never removed while it has one.
TEST_P(Hsm, AnUnfinishedReleaseNeverCostsTheFilesOwnBytesOrItsCopy) {
  const std::string d = lc_.View(0) + "/data";
  fs::create_directories(d);
  ASSERT_EQ(Sh("head -c 300000 /dev/urandom > " + d + "/f && cp " + d + "/f " + lc_.dir() + "/f.orig").first, 0);
  const std::string f = d + "/f";
  ASSERT_EQ(Request(lc_, 1, hsm::Op::kArchive, {f}), 0);
  ASSERT_TRUE(StateOf(f).Has(hsm::kArchived));
  // The region a release sets first, then (second round) its punch, done
  // by hand; the state never says released.
  auto stub = [&](bool punch) {
    return RunOn(lc_, 0, [&](FILE*, FILE*) {
      dm_sessid_t sid;
      CHILD_CHECK(dm_create_session(DM_NO_SESSION, "half release", &sid) == 0);
      void* h;
      size_t hl;
      CHILD_CHECK(dm_path_to_handle(f.c_str(), &h, &hl) == 0);
      dm_region_t r{};
      r.rg_flags = DM_REGION_READ | DM_REGION_WRITE | DM_REGION_TRUNCATE;
      dm_boolean_t exact;
      CHILD_CHECK(dm_set_region(sid, h, hl, DM_NO_TOKEN, 1, &r, &exact) == 0);
      if (punch) CHILD_CHECK(dm_punch_hole(sid, h, hl, DM_NO_TOKEN, 0, 0) == 0);
      CHILD_CHECK(dm_destroy_session(sid) == 0);
      return 0;
    });
  };
  // No hole: a write raced the release (here: newer bytes) and must stay.
  // (A second later than the copy: states keep mtime in seconds.)
  ::usleep(1100000);
  ASSERT_EQ(Sh("printf newer | dd of=" + f + " bs=1 seek=100 conv=notrunc status=none").first, 0);
  for (int i = 0; i < 50 && !StateOf(f).Has(hsm::kDirty); ++i) ::usleep(100000);
  ASSERT_TRUE(StateOf(f).Has(hsm::kDirty)) << "CLOSE marked it";
  ASSERT_EQ(Sh("cp " + f + " " + lc_.dir() + "/f.newer").first, 0);
  EXPECT_CHILD_OK(stub(false));
  auto kept = Sh("cmp " + lc_.View(3) + "/data/f " + lc_.dir() + "/f.newer");
  EXPECT_EQ(kept.first, 0) << "the newer bytes stay: " << kept.second << Sh("grep -v info " + lc_.dir() + "/state/pdmd.log | tail -5").second;
  EXPECT_FALSE(StateOf(f).Has(hsm::kReleased));
  // Punched, state not released: the copy is the only one left.
  ASSERT_EQ(Request(lc_, 1, hsm::Op::kArchive, {f}), 0);  // a copy of the newer bytes
  EXPECT_CHILD_OK(stub(true));
  EXPECT_EQ(Request(lc_, 1, hsm::Op::kRemove, {f}), EBUSY);
  EXPECT_TRUE(StateOf(f).Has(hsm::kArchived)) << "the copy is kept";
  EXPECT_EQ(Sh("cmp " + lc_.View(2) + "/data/f " + lc_.dir() + "/f.newer").first, 0) << "recalled from the copy";
}

INSTANTIATE_TEST_SUITE_P(Backends, Hsm, ::testing::Values("posix", "hdf5"));

}  // namespace
}  // namespace pdm::test

namespace pdm::test {
namespace {

// Worker and coordinator deaths, a full archive: posix only (the failure
// handling is the coordinator's, the same for both back ends).
class HsmFailures : public ::testing::Test {
 protected:
  static constexpr const char* kArgs = "--archive posix:%D/archive --hsm-chunk-mib 2 --session-failure-timeout-ms 8000";
};

std::vector<std::string> BigFiles(const LocalCluster& lc, int n, const std::string& sums) {
  std::vector<std::string> rel;
  fs::create_directories(lc.View(0) + "/data");
  std::string all;
  for (int i = 0; i < n; ++i) {
    rel.push_back("f" + std::to_string(i));
    all += rel.back() + " ";
    EXPECT_EQ(Sh("head -c 25165824 /dev/urandom > " + lc.View(0) + "/data/" + rel.back()).first, 0);
  }
  EXPECT_EQ(Sh("cd " + lc.View(0) + "/data && sha256sum " + all + "> " + sums).first, 0);
  Sh("sync");
  return rel;
}

// True once a chunk is being written into the archive (a copy-out in flight).
bool WaitUntilMoving(const LocalCluster& lc) {
  for (int i = 0; i < 2000; ++i) {
    std::error_code ec;
    for (auto& e : fs::recursive_directory_iterator(lc.dir() + "/archive", ec))
      if (e.path().string().ends_with(".part")) return true;
    ::usleep(5000);
  }
  return false;
}

std::vector<std::string> Paths(const LocalCluster& lc, int node, const std::vector<std::string>& rel) {
  std::vector<std::string> out;
  for (auto& r : rel) out.push_back(lc.View(node) + "/data/" + r);
  return out;
}

TEST_F(HsmFailures, Kill9OfAWorkerRankDuringMigrateAndRecallLosesNoByte) {
  LocalCluster lc(4, kArgs);
  ASSERT_TRUE(lc.up());
  const std::string sums = lc.dir() + "/sums";
  auto rel = BigFiles(lc, 4, sums);
  auto migrate = std::async(std::launch::async, [&] { return Request(lc, 1, hsm::Op::kMigrate, Paths(lc, 1, rel)); });
  ASSERT_TRUE(WaitUntilMoving(lc));  // chunks are moving on every rank
  lc.Kill9(2);
  ASSERT_EQ(migrate.get(), 0) << "the dead worker's chunks go to other workers";
  for (auto& p : Paths(lc, 3, rel)) EXPECT_TRUE(StateOf(p).Has(hsm::kReleased)) << p;
  // Recall through node 3 while another worker rank dies.
  auto check = std::async(std::launch::async, [&] {
    return Sh("cd " + lc.View(3) + "/data && sha256sum -c --quiet " + sums);
  });
  ::usleep(300000);
  lc.Kill9(1);
  auto [rc, out] = check.get();
  EXPECT_EQ(rc, 0) << out;
}

TEST_F(HsmFailures, Kill9OfTheCoordinatorDuringMigrateLeavesEveryFileResidentOrReleasedWithItsCopy) {
  LocalCluster lc(4, kArgs);
  ASSERT_TRUE(lc.up());
  const std::string sums = lc.dir() + "/sums";
  auto rel = BigFiles(lc, 4, sums);
  auto migrate = std::async(std::launch::async, [&] { return Request(lc, 2, hsm::Op::kMigrate, Paths(lc, 2, rel)); });
  ASSERT_TRUE(WaitUntilMoving(lc));
  lc.Kill9(0);  // the coordinator (and the session manager)
  // Rank 1 assumes the session; the pending request comes back to it.
  const int rc = migrate.get();
  EXPECT_TRUE(rc == 0 || rc == EIO) << rc << Sh("grep -h 'hsm\\|assum' " + lc.dir() + "/state/pdmd.log | tail -30").second;
  for (auto& p : Paths(lc, 3, rel)) {
    hsm::FileState s = StateOf(p);
    EXPECT_TRUE(!s.Has(hsm::kReleased) || s.Has(hsm::kArchived)) << p << ": " << hsm::FlagsString(s.flags);
  }
  auto [crc, out] = Sh("cd " + lc.View(3) + "/data && sha256sum -c --quiet " + sums);
  EXPECT_EQ(crc, 0) << out;
  // And the new coordinator serves: everything migrates now.
  EXPECT_EQ(Request(lc, 3, hsm::Op::kMigrate, Paths(lc, 3, rel)), 0);
  for (auto& p : Paths(lc, 3, rel)) EXPECT_TRUE(StateOf(p).Has(hsm::kReleased)) << p;
  std::tie(crc, out) = Sh("cd " + lc.View(1) + "/data && sha256sum -c --quiet " + sums);
  EXPECT_EQ(crc, 0) << out;
}

TEST_F(HsmFailures, AFullArchiveFailsTheMigrationCleanlyAndFreesNothing) {
  char tmpl[] = "/tmp/pdm-full-XXXXXX";
  const std::string small = ::mkdtemp(tmpl);
  ASSERT_EQ(Sh("mount -t tmpfs -o size=20M tmpfs " + small).first, 0);
  {
    LocalCluster lc(4, "--archive posix:" + small + " --hsm-chunk-mib 2");
    ASSERT_TRUE(lc.up());
    const std::string sums = lc.dir() + "/sums";
    auto rel = BigFiles(lc, 2, sums);  // 48 MiB into 20 MiB
    const uint64_t before = DuBytes(lc.dir() + "/backing/data");
    EXPECT_EQ(Request(lc, 1, hsm::Op::kMigrate, Paths(lc, 1, rel)), ENOSPC);
    for (auto& p : Paths(lc, 1, rel)) EXPECT_FALSE(StateOf(p).Has(hsm::kReleased)) << p;
    EXPECT_GE(DuBytes(lc.dir() + "/backing/data"), before) << "nothing freed";
    auto [rc, out] = Sh("cd " + lc.View(2) + "/data && sha256sum -c --quiet " + sums);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(Sh("ls " + small + "/objects | grep -c json").second, "0\n") << "nothing half published";
  }
  Sh("umount " + small + " && rmdir " + small);
}

}  // namespace
}  // namespace pdm::test

namespace pdm::test {
namespace {

// Claims 4-6: a worker moves data only for the coordinator's session and a
// token outstanding on it. A task from any other session, or with a token
// that is not outstanding, is refused (and logged); its result says why.
TEST(HsmWorkers, RefuseTasksWithoutTheCoordinatorsSessionAndToken) {
  LocalCluster lc(4, "--archive posix:%D/archive");
  ASSERT_TRUE(lc.up());
  fs::create_directories(lc.View(0) + "/data");
  { std::ofstream(lc.View(0) + "/data/f") << "payload"; }
  EXPECT_CHILD_OK(RunOn(lc, 3, [&](FILE*, FILE*) {
    // Find rank 2's archive worker session.
    std::vector<dm_sessid_t> sids(256);
    unsigned int n = 0;
    CHILD_CHECK(dm_getall_sessions(256, sids.data(), &n) == 0);
    dm_sessid_t worker = DM_NO_SESSION;
    for (unsigned int i = 0; i < n; ++i) {
      char info[DM_SESSION_INFO_LEN + 1] = {};
      size_t len = 0;
      if (dm_query_session(sids[i], DM_SESSION_INFO_LEN, info, &len) == 0 &&
          std::string(info) == std::string(hsm::kWorkerInfo) + " r2 archive")
        worker = sids[i];
    }
    CHILD_CHECK(worker != DM_NO_SESSION);
    dm_sessid_t mine;
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, const_cast<char*>("impostor"), &mine) == 0);
    dm_token_t tok;
    CHILD_CHECK(dm_create_userevent(mine, 0, nullptr, &tok) == 0);
    void* h;
    size_t hl;
    const std::string path = lc.View(3) + "/data/f";
    CHILD_CHECK(dm_path_to_handle(const_cast<char*>(path.c_str()), &h, &hl) == 0);
    auto expect_refused = [&](uint64_t sid, uint64_t token, int want) {
      hsm::Task t;
      t.id = 77;
      t.kind = hsm::TaskKind::kPunch;
      t.sid = sid;
      t.token = token;
      t.items.push_back({std::string(static_cast<char*>(h), hl), "k", 0, 0, 0});
      const std::string msg = hsm::EncodeTask(t);
      CHILD_CHECK(dm_send_msg(worker, DM_MSGTYPE_ASYNC, msg.size(), const_cast<char*>(msg.data())) == 0);
      if (sid != mine) return true;  // the result goes to the real coordinator
      static char buf[65536] __attribute__((aligned(8)));
      size_t rlen = 0;
      CHILD_CHECK(dm_get_events(mine, 1, DM_EV_WAIT, sizeof buf, buf, &rlen) == 0);
      auto* m = reinterpret_cast<dm_eventmsg_t*>(buf);
      auto r = hsm::DecodeResult(std::string_view(DM_GET_VALUE(m, ev_data, char*), DM_GET_LEN(m, ev_data)));
      CHILD_CHECK(r.ok() && r->id == 77 && r->err == want);
      return true;
    };
    // Our own session is not the coordinator's: EPERM, nothing punched.
    expect_refused(mine, tok, EPERM);
    // The coordinator's session with a token that is not outstanding.
    auto coord = hsm::FindCoordinator();
    CHILD_CHECK(coord.ok());
    expect_refused(*coord, 0x12345, 0);
    return 0;
  }));
  ::usleep(500000);
  std::string data;
  std::ifstream(lc.View(1) + "/data/f") >> data;
  EXPECT_EQ(data, "payload") << "no refused task touched the file";
  EXPECT_NE(Sh("grep -c 'not outstanding on the coordinator session' " + lc.dir() + "/state/pdmd.log").second, "0\n")
      << "the refusal is logged";
}

}  // namespace
}  // namespace pdm::test

namespace pdm::test {
namespace {

// lfs hsm_cancel's counterpart: a cancel stops the archive of files still in
// flight; they stay resident, unarchived, and the migrate reports ECANCELED.
TEST(HsmCancel, CancelStopsAMigrateInFlightAndTheFilesStayResident) {
  // One archive thread per rank and many chunks: the copy-out takes a
  // while, and the cancel goes out once chunks are seen moving.
  LocalCluster lc(4, "--archive posix:%D/archive --hsm-chunk-mib 1 --hsm-archive-threads 1");
  ASSERT_TRUE(lc.up());
  const std::string sums = lc.dir() + "/sums";
  auto rel = BigFiles(lc, 8, sums);
  auto migrate = std::async(std::launch::async, [&] { return Request(lc, 1, hsm::Op::kMigrate, Paths(lc, 1, rel)); });
  ASSERT_TRUE(WaitUntilMoving(lc)) << "no chunk was seen moving";
  EXPECT_EQ(Request(lc, 2, hsm::Op::kCancel, Paths(lc, 2, rel)), 0);
  EXPECT_EQ(migrate.get(), ECANCELED);
  for (auto& p : Paths(lc, 3, rel)) {
    hsm::FileState s = StateOf(p);
    EXPECT_FALSE(s.Has(hsm::kReleased)) << p << ": " << hsm::FlagsString(s.flags);
  }
  auto [rc, out] = Sh("cd " + lc.View(3) + "/data && sha256sum -c --quiet " + sums);
  EXPECT_EQ(rc, 0) << out;
  // Nothing left in flight: a cancel now is a no-op and the next migrate works.
  EXPECT_EQ(Request(lc, 2, hsm::Op::kCancel, Paths(lc, 2, rel)), 0);
  EXPECT_EQ(Request(lc, 1, hsm::Op::kMigrate, Paths(lc, 1, rel)), 0);
  for (auto& p : Paths(lc, 3, rel)) EXPECT_TRUE(StateOf(p).Has(hsm::kReleased)) << p;
}

}  // namespace
}  // namespace pdm::test
