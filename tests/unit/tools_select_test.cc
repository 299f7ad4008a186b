// Globs, selection criteria, protection, HSM state decoding and the purge
// report (src/tools/glob.h, select.h, hsm_state.h, report.h).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <span>

#ifdef PDM_TOOLS_WITH_HSM
#include "dm/attrs.h"
#include "hsm/state.h"
#endif
#include "tools/glob.h"
#include "tools/hsm_state.h"
#include "tools/report.h"
#include "tools/select.h"
#include "tools/units.h"

namespace pdm::tools {
namespace {

TEST(ToolsGlob, SingleStarStaysInOneComponent) {
  EXPECT_TRUE(GlobMatch("*.tmp", "a.tmp"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_FALSE(GlobMatch("*.tmp", "a.tmp.x"));
  EXPECT_FALSE(GlobMatch("/a/*", "/a/b/c"));
  EXPECT_TRUE(GlobMatch("/a/*/c", "/a/b/c"));
  EXPECT_TRUE(GlobMatch("f?o", "foo"));
  EXPECT_FALSE(GlobMatch("f?o", "f/o"));
  EXPECT_TRUE(GlobMatch("core.[0-9]*", "core.123"));
  EXPECT_FALSE(GlobMatch("core.[!0-9]*", "core.123"));
  EXPECT_TRUE(GlobMatch("core.[^0-9]*", "core.x"));
  EXPECT_TRUE(GlobMatch("a\\*b", "a*b"));
  EXPECT_FALSE(GlobMatch("a\\*b", "axb"));
}

TEST(ToolsGlob, DoubleStarCrossesDirectories) {
  EXPECT_TRUE(GlobMatch("/s/**/core", "/s/a/b/core"));
  EXPECT_TRUE(GlobMatch("/s/**/core", "/s/core"));  // zero directories
  EXPECT_TRUE(GlobMatch("/s/**", "/s/a/b"));
  EXPECT_FALSE(GlobMatch("/s/**", "/t/a"));
  // A '*' after a '**' must not lose the '**' backtrack point.
  EXPECT_TRUE(GlobMatch("/a/**/x*", "/a/xq/b/xz"));
  EXPECT_FALSE(GlobMatch("/a/**/x*", "/a/xq/b/yz"));
}

TEST(ToolsGlob, NameOrWholePath) {
  auto name = Glob::Make("*.keep");
  ASSERT_TRUE(name.ok());
  EXPECT_TRUE(name->Matches("/scratch/u/deep/x.keep"));
  EXPECT_FALSE(name->Matches("/scratch/u.keep/x"));
  auto whole = Glob::Make("/scratch/proj/**");
  ASSERT_TRUE(whole.ok());
  EXPECT_TRUE(whole->Matches("/scratch/proj/a/b"));
  EXPECT_FALSE(whole->Matches("/scratch/other/proj/a"));
  EXPECT_FALSE(Glob::Make("").ok());
  EXPECT_FALSE(Glob::Make("a[bc").ok());
  EXPECT_FALSE(Glob::Make("ab\\").ok());
}

Entry File(const std::string& path, uint64_t size, int64_t atime_s, uint32_t uid = 1000) {
  Entry e;
  e.path = path;
  e.type = 'f';
  e.size = size;
  e.uid = uid;
  e.gid = 100;
  e.atime_ns = atime_s * 1000000000;
  e.mtime_ns = e.ctime_ns = 0;
  return e;
}

constexpr int64_t kNow = 1000LL * 86400 * 1000000000;  // day 1000

TEST(ToolsSelect, AgeSizeOwnerAreAnded) {
  Criteria c;
  c.older_than_s = 30 * 86400;
  c.larger_than = 100;
  c.uids = {1000};
  EXPECT_TRUE(Matches(c, File("/s/a", 101, 900 * 86400), kNow));
  EXPECT_FALSE(Matches(c, File("/s/a", 100, 900 * 86400), kNow)) << "larger-than is strict";
  EXPECT_FALSE(Matches(c, File("/s/a", 101, 980 * 86400), kNow)) << "too young";
  EXPECT_FALSE(Matches(c, File("/s/a", 101, 900 * 86400, 1001), kNow)) << "other owner";
  Entry d = File("/s/d", 4096, 0);
  d.type = 'd';
  EXPECT_FALSE(Matches(c, d, kNow)) << "directories are not in the default types";
}

// Ages are nanoseconds: an age limit past ~292 years and times at the int64
// ends (saturated by FillFromStat) must compare, not overflow (UBSan aborts
// on the overflow).
TEST(ToolsSelect, ExtremeAgesAndTimesSaturate) {
  Criteria c;
  c.older_than_s = *ParseDuration("1000y");
  EXPECT_FALSE(Matches(c, File("/s/a", 1, 0), kNow)) << "nothing is that old";
  c.older_than_s = 30 * 86400;
  Entry ancient = File("/s/a", 1, 0);
  ancient.atime_ns = std::numeric_limits<int64_t>::min();
  EXPECT_TRUE(Matches(c, ancient, kNow));
  Entry future = File("/s/b", 1, 0);
  future.atime_ns = std::numeric_limits<int64_t>::max();
  EXPECT_FALSE(Matches(c, future, -kNow));
  c.older_than_s.reset();
  c.newer_than_s = *ParseDuration("1000y");
  EXPECT_TRUE(Matches(c, future, -kNow)) << "a future time is younger than any limit";

  struct stat st {};
  st.st_mode = S_IFREG | 0644;
  st.st_atim.tv_sec = 20000000000;  // year 2603: tmpfs stores it
  st.st_mtim.tv_sec = -20000000000;
  st.st_ctim.tv_sec = 1700000000;
  st.st_ctim.tv_nsec = 5;
  Entry e;
  FillFromStat(st, &e);
  EXPECT_EQ(e.atime_ns, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(e.mtime_ns, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(e.ctime_ns, 1700000000000000005);
}

TEST(ToolsSelect, ByChoosesTheTime) {
  Criteria c;
  c.older_than_s = 10 * 86400;
  c.by = TimeField::kMtime;
  Entry e = File("/s/a", 1, 999 * 86400);  // recently read...
  e.mtime_ns = 100LL * 86400 * 1000000000;  // ...but written long ago
  EXPECT_TRUE(Matches(c, e, kNow));
  c.by = TimeField::kAtime;
  EXPECT_FALSE(Matches(c, e, kNow));
  EXPECT_EQ(*ParseTimeField("ctime"), TimeField::kCtime);
  EXPECT_FALSE(ParseTimeField("btime").ok());
}

TEST(ToolsSelect, ExcludeAndIncludeGlobs) {
  Criteria c;
  c.include.push_back(*Glob::Make("*.dat"));
  c.exclude.push_back(*Glob::Make("keep*"));
  EXPECT_TRUE(Matches(c, File("/s/x.dat", 1, 0), kNow));
  EXPECT_FALSE(Matches(c, File("/s/x.txt", 1, 0), kNow));
  EXPECT_FALSE(Matches(c, File("/s/keep.dat", 1, 0), kNow));
  Entry dir = File("/s/keepme", 0, 0);
  dir.type = 'd';
  ProtectSet none;
  EXPECT_TRUE(Prunes(c, none, dir));
}

TEST(ToolsSelect, HsmStateClasses) {
  Criteria c;
  c.hsm = {HsmClass::kArchived};
  Entry e = File("/s/a", 1, 0);
  EXPECT_FALSE(Matches(c, e, kNow));
  e.hsm_flags = kHsmExists | kHsmArchived;
  EXPECT_TRUE(Matches(c, e, kNow));
  e.hsm_flags |= kHsmReleased;
  EXPECT_FALSE(Matches(c, e, kNow)) << "already released";
  EXPECT_EQ(ClassOf(kHsmExists | kHsmArchived | kHsmDirty), HsmClass::kDirty);
  EXPECT_EQ(ClassOf(kHsmExists | kHsmArchived | kHsmReleased | kHsmLost), HsmClass::kLost);
  EXPECT_EQ(*ParseHsmClass("released"), HsmClass::kReleased);
  EXPECT_FALSE(ParseHsmClass("migrated").ok());
}

TEST(ToolsSelect, ProtectCoversSubtrees) {
  const std::string f = ::testing::TempDir() + "/pdm_protect_list.txt";
  {
    std::ofstream out(f);
    out << "# comment\n\n/scratch/keep/\n/scratch/u/one.dat\n";
  }
  auto p = ProtectSet::Load(f);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->size(), 2u);
  EXPECT_TRUE(p->Covers("/scratch/keep"));
  EXPECT_TRUE(p->Covers("/scratch/keep/a/b"));
  EXPECT_TRUE(p->Covers("/scratch/u/one.dat"));
  EXPECT_FALSE(p->Covers("/scratch/u/one.dat2"));
  EXPECT_FALSE(p->Covers("/scratch/keeper/x"));
  EXPECT_FALSE(p->Covers("/scratch"));
  std::remove(f.c_str());
  EXPECT_EQ(ProtectSet::Load("/nonexistent/pdm/list").status().code(), Code::kNotFound);
}

#ifdef PDM_TOOLS_WITH_HSM
// With the HSM linked in, the tools decode the attribute with hsm::Decode: a
// value hsm::Encode wrote gives its flags and archive id, and anything the HSM
// itself would refuse (here: a value without key, sum, ver) is DataLoss.
hsm::FileState ArchivedState() {
  hsm::FileState s;
  s.flags = hsm::kExists | hsm::kArchived | hsm::kNoRelease;
  s.archive_id = 7;
  s.key = "2a00/1234.5678/v1";
  s.size = 5;
  s.mtime_ns = 1700000000123456789;
  s.sum.hi = 0x0123456789abcdefULL;
  s.sum.lo = 0xfedcba9876543210ULL;
  s.ver = 1;
  return s;
}

TEST(ToolsHsmState, DecodesWhatTheHsmEncodesAndRefusesGarbage) {
  auto enc = hsm::Encode(ArchivedState());
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  auto s = ParseHsmState(*enc);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->flags, kHsmExists | kHsmArchived | kHsmNoRelease);
  EXPECT_EQ(s->archive_id, 7u);
  EXPECT_EQ(s->key, "2a00/1234.5678/v1");  // what a bulk recall orders by
  EXPECT_EQ(ClassOf(s->flags), HsmClass::kArchived);
  for (const char* bad : {"not json", "[]", R"({"flags":"archived"})", R"({"archive":-1})",
                          R"({"v":1,"flags":["exists","archived"],"archive":3,"key":"k","size":1})"}) {
    auto r = ParseHsmState(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kDataLoss) << bad;
    }
  }
}

// The attribute as the HSM writes it (dm::SetDmAttr under its DM name), read
// back the way the walk reads it (lgetxattr by path). tmpfs keeps trusted.*.
TEST(ToolsHsmState, ReadsTheAttributeTheHsmSets) {
  char dir[] = "/dev/shm/pdm_tools_hsm_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string f = std::string(dir) + "/managed";
  const int fd = open(f.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  auto enc = hsm::Encode(ArchivedState());
  ASSERT_TRUE(enc.ok());
  auto name = dm::AttrName::FromString(hsm::kStateAttrName);
  ASSERT_TRUE(name.ok());
  Status st = dm::SetDmAttr(fd, *name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(enc->data()), enc->size()));
  close(fd);
  if (!st.ok() && st.err() == EPERM) {
    std::remove(f.c_str());
    rmdir(dir);
    GTEST_SKIP() << "trusted.* needs CAP_SYS_ADMIN";
  }
  ASSERT_TRUE(st.ok()) << st.ToString();
  auto s = ReadHsmState(f);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->flags, kHsmExists | kHsmArchived | kHsmNoRelease);
  EXPECT_EQ(s->archive_id, 7u);
  // A damaged value names the file it is on.
  ASSERT_EQ(lsetxattr(f.c_str(), kHsmXattr, "{", 1, 0), 0);
  auto bad = ReadHsmState(f);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kDataLoss);
  EXPECT_NE(bad.status().message().find(f), std::string::npos) << bad.status().ToString();
  std::remove(f.c_str());
  rmdir(dir);
}
#else
// Without the HSM library the tools carry their own reader of the same JSON:
// flag names or (older writers) a number of bits, and the archive id.
TEST(ToolsHsmState, DecodesNamesAndNumbersAndRefusesGarbage) {
  auto s = ParseHsmState(R"({"v":1,"flags":["exists","archived"],"archive":3,"key":"k","size":1})");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->flags, kHsmExists | kHsmArchived);
  EXPECT_EQ(s->archive_id, 3u);
  EXPECT_EQ(s->key, "k");
  for (const char* bad : {"not json", "[]", R"({"flags":"archived"})", R"({"archive":-1})", R"({"key":5})"}) {
    auto r = ParseHsmState(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kDataLoss) << bad;
    }
  }
}
#endif

// Bulk recalls read the archive in this order: by archive, then by the
// HSM's key "<fsid>/<ino>.<igen>/v<ver>" taken as numbers (inode 10 after
// inode 9, which a string compare gets wrong), other keys after, no copy last.
TEST(ToolsHsmState, ArchiveOrderIsArchiveThenNumericKey) {
  const std::string k9 = "000000000000fd01/9.1/v1", k10 = "000000000000fd01/10.1/v1",
                    k10v2 = "000000000000fd01/10.1/v2", k10g2 = "000000000000fd01/10.2/v1",
                    other_fs = "000000000000fd02/1.1/v1";
  EXPECT_GT(k9, k10) << "the string order this test guards against";
  EXPECT_TRUE(ArchiveOrderLess(1, k9, 1, k10));
  EXPECT_FALSE(ArchiveOrderLess(1, k10, 1, k9));
  EXPECT_TRUE(ArchiveOrderLess(1, k10, 1, k10g2));
  EXPECT_TRUE(ArchiveOrderLess(1, k10, 1, k10v2));
  EXPECT_TRUE(ArchiveOrderLess(1, k10v2, 1, other_fs));
  EXPECT_TRUE(ArchiveOrderLess(1, other_fs, 2, k9)) << "archive id first";
  EXPECT_TRUE(ArchiveOrderLess(1, k10, 1, "odd/key")) << "foreign keys after the HSM's";
  EXPECT_TRUE(ArchiveOrderLess(1, "odd/a", 1, "odd/b"));
  EXPECT_TRUE(ArchiveOrderLess(2, k9, 0, "")) << "no copy last";
  EXPECT_FALSE(ArchiveOrderLess(0, "", 2, k9));
  EXPECT_FALSE(ArchiveOrderLess(1, k9, 1, k9));
  EXPECT_TRUE(ArchiveOrderLess(1, "000000000000fd01/9.1/v1x", 1, "odd")) << "a trailing byte makes a foreign key";
}

TEST(ToolsReport, SectionsArePerUserAndSorted) {
  const std::string h = FormatReportHeader(2, 3, 1536, {"/scratch"}, true);
  EXPECT_EQ(h, "# pdm-purge report: 2 users, 3 files, 1.5 KiB (dry run: nothing removed)\n# root: /scratch\n");
  const std::string s = FormatUserSection(1001, "alice", {{"/scratch/b", 1024}, {"/scratch/a", 0}});
  EXPECT_EQ(s, "user alice (uid 1001): 2 files, 1.0 KiB\n  /scratch/a\n  /scratch/b\n");
  EXPECT_EQ(FormatUserSection(7, "7", {{"/x", 5}}), "user 7 (uid 7): 1 file, 5 B\n  /x\n");
}

}  // namespace
}  // namespace pdm::tools
