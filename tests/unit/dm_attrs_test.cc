#include "dm/attrs.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/posix.h"

namespace pdm::dm {
namespace {

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

AttrName Name(std::string_view s) {
  auto n = AttrName::FromString(s);
  EXPECT_TRUE(n.ok()) << s;
  return *n;
}

class DmAttrsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pdm_dm_attrs_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/f";
    fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd_.valid());
    // Probe once so a machine without trusted.* support fails loudly here
    // rather than in every assertion below.
    ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.probe", "x", 1, 0), 0)
        << "trusted.* xattrs need root on a file system that supports them: " << std::strerror(errno);
    ::fremovexattr(fd_.get(), "trusted.pdm.probe");
  }
  void TearDown() override {
    fd_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  UniqueFd Reopen() { return UniqueFd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)); }

  std::string dir_, path_;
  UniqueFd fd_;
};

TEST(DmAttrName, FromBytesStopsAtNulAndRejectsEmpty) {
  std::array<uint8_t, 8> raw{'a', 'b', 'c', 0, 'x', 'y', 0, 0};
  auto n = AttrName::FromBytes(raw);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->str(), "abc");
  std::array<uint8_t, 8> full{'1', '2', '3', '4', '5', '6', '7', '8'};
  auto f = AttrName::FromBytes(full);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->str(), "12345678");
  EXPECT_EQ(f->ToBytes(), full);
  std::array<uint8_t, 8> empty{};
  auto e = AttrName::FromBytes(empty);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().err(), EINVAL);
  EXPECT_FALSE(AttrName::FromString("").ok());
  EXPECT_FALSE(AttrName::FromString("123456789").ok());
  EXPECT_FALSE(AttrName::FromString(std::string_view("a\0b", 3)).ok());
  EXPECT_EQ(Name("abc").ToBytes(), (std::array<uint8_t, 8>{'a', 'b', 'c', 0, 0, 0, 0, 0}));
}

TEST_F(DmAttrsTest, SetGetPersistsAcrossReopen) {
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("stub"), Bytes("archive-id-17")).ok());
  fd_.reset();
  UniqueFd again = Reopen();
  ASSERT_TRUE(again.valid());
  auto v = GetDmAttr(again.get(), Name("stub"));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, Bytes("archive-id-17"));
  // Stored where the design says, so other tools and nodes find it.
  char raw[64];
  ssize_t n = ::getxattr(path_.c_str(), "trusted.pdm.dm.stub", raw, sizeof(raw));
  ASSERT_EQ(n, 13);
  EXPECT_EQ(std::string(raw, 13), "archive-id-17");
  // Replace.
  ASSERT_TRUE(SetDmAttr(again.get(), Name("stub"), Bytes("2")).ok());
  EXPECT_EQ(*GetDmAttr(again.get(), Name("stub")), Bytes("2"));
}

TEST_F(DmAttrsTest, GetReportsNeededLengthWithE2big) {
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("k"), Bytes("0123456789")).ok());
  std::vector<uint8_t> small(4);
  size_t needed = 0;
  Status s = GetDmAttr(fd_.get(), Name("k"), small, &needed);
  EXPECT_EQ(s.err(), E2BIG);
  EXPECT_EQ(needed, 10u);
  needed = 0;
  s = GetDmAttr(fd_.get(), Name("k"), std::span<uint8_t>(), &needed);
  EXPECT_EQ(s.err(), E2BIG);
  EXPECT_EQ(needed, 10u);
  std::vector<uint8_t> exact(10);
  needed = 0;
  ASSERT_TRUE(GetDmAttr(fd_.get(), Name("k"), exact, &needed).ok());
  EXPECT_EQ(needed, 10u);
  EXPECT_EQ(exact, Bytes("0123456789"));
  std::vector<uint8_t> big(100, 0xee);
  ASSERT_TRUE(GetDmAttr(fd_.get(), Name("k"), big, &needed).ok());
  EXPECT_EQ(needed, 10u);
  EXPECT_EQ(std::vector<uint8_t>(big.begin(), big.begin() + 10), Bytes("0123456789"));
}

TEST_F(DmAttrsTest, EmptyValueIsPresent) {
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("e"), {}).ok());
  size_t needed = 99;
  ASSERT_TRUE(GetDmAttr(fd_.get(), Name("e"), std::span<uint8_t>(), &needed).ok());
  EXPECT_EQ(needed, 0u);
  EXPECT_TRUE(RemoveDmAttr(fd_.get(), Name("e")).ok());
}

TEST_F(DmAttrsTest, MissingAttributeIsEnoent) {
  Status rm = RemoveDmAttr(fd_.get(), Name("nope"));
  EXPECT_EQ(rm.code(), Code::kNotFound);
  EXPECT_EQ(rm.err(), ENOENT);
  auto g = GetDmAttr(fd_.get(), Name("nope"));
  EXPECT_EQ(g.status().err(), ENOENT);
  size_t needed = 1234;
  std::vector<uint8_t> buf(8);
  EXPECT_EQ(GetDmAttr(fd_.get(), Name("nope"), buf, &needed).err(), ENOENT);
  EXPECT_EQ(needed, 1234u);

  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("yes"), Bytes("v")).ok());
  EXPECT_TRUE(RemoveDmAttr(fd_.get(), Name("yes")).ok());
  EXPECT_EQ(GetDmAttr(fd_.get(), Name("yes")).status().err(), ENOENT);
  EXPECT_EQ(RemoveDmAttr(fd_.get(), Name("yes")).err(), ENOENT);
}

TEST_F(DmAttrsTest, OversizedValueIsE2big) {
  std::vector<uint8_t> ok(kMaxAttrSize, 'a');
  EXPECT_TRUE(SetDmAttr(fd_.get(), Name("max"), ok).ok());
  std::vector<uint8_t> too_big(kMaxAttrSize + 1, 'a');
  EXPECT_EQ(SetDmAttr(fd_.get(), Name("big"), too_big).err(), E2BIG);
  EXPECT_EQ(GetDmAttr(fd_.get(), Name("big")).status().err(), ENOENT);
}

TEST_F(DmAttrsTest, GetAllListsOnlyDmAttributesSorted) {
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("zeta"), Bytes("3")).ok());
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("alpha"), Bytes("1")).ok());
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("mid"), Bytes("22")).ok());
  ASSERT_EQ(::fsetxattr(fd_.get(), "user.other", "u", 1, 0), 0);
  ASSERT_TRUE(SetEventList(fd_.get(), 0x5).ok());  // trusted.pdm.events must not show up
  auto all = GetAllDmAttrs(fd_.get());
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].name.str(), "alpha");
  EXPECT_EQ((*all)[0].value, Bytes("1"));
  EXPECT_EQ((*all)[1].name.str(), "mid");
  EXPECT_EQ((*all)[1].value, Bytes("22"));
  EXPECT_EQ((*all)[2].name.str(), "zeta");
}

TEST_F(DmAttrsTest, SettingAttributesLeavesMtime) {
  timespec old[2] = {{1000000000, 1}, {1000000000, 2}};
  ASSERT_EQ(::futimens(fd_.get(), old), 0);
  ASSERT_TRUE(SetDmAttr(fd_.get(), Name("t"), Bytes("x")).ok());
  ASSERT_TRUE(SetRegions(fd_.get(), std::vector<Region>{{0, 0, kRegionRead}}).ok());
  ASSERT_TRUE(SetEventList(fd_.get(), 1).ok());
  ASSERT_TRUE(RemoveDmAttr(fd_.get(), Name("t")).ok());
  struct stat st;
  ASSERT_EQ(::fstat(fd_.get(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1000000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 2);
}

TEST_F(DmAttrsTest, RegionsRoundTrip) {
  auto none = GetRegions(fd_.get());
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  std::vector<Region> rs{{0, 4096, kRegionRead}, {1 << 20, 0, kRegionWrite | kRegionTruncate}};
  ASSERT_TRUE(SetRegions(fd_.get(), rs).ok());
  fd_.reset();
  UniqueFd again = Reopen();
  auto got = GetRegions(again.get());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, rs);
  // Replace, then clear.
  std::vector<Region> one{{5, 6, kRegionWrite}};
  ASSERT_TRUE(SetRegions(again.get(), one).ok());
  EXPECT_EQ(*GetRegions(again.get()), one);
  ASSERT_TRUE(SetRegions(again.get(), {}).ok());
  EXPECT_TRUE(GetRegions(again.get())->empty());
  EXPECT_LT(::fgetxattr(again.get(), "trusted.pdm.regions", nullptr, 0), 0);
}

TEST_F(DmAttrsTest, InvalidRegionsRejected) {
  EXPECT_EQ(SetRegions(fd_.get(), std::vector<Region>{{0, 1, 8}}).err(), EINVAL);
  EXPECT_EQ(SetRegions(fd_.get(), std::vector<Region>{{UINT64_MAX, 2, kRegionRead}}).err(), EINVAL);
  std::vector<Region> many(kMaxRegions + 1, Region{0, 1, kRegionRead});
  EXPECT_EQ(SetRegions(fd_.get(), many).err(), E2BIG);
  EXPECT_TRUE(GetRegions(fd_.get())->empty());
}

TEST_F(DmAttrsTest, CorruptRegionsAreAnError) {
  // Plain garbage.
  ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.regions", "garbage!garbage!garbage!", 24, 0), 0);
  auto r = GetRegions(fd_.get());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kDataLoss);
  EXPECT_EQ(r.status().err(), EIO);

  // A valid encoding with one bit flipped in a region's offset: the length
  // and magic are right, only the checksum can tell.
  auto good = EncodeRegions(std::vector<Region>{{0, 4096, kRegionRead}});
  ASSERT_TRUE(DecodeRegions(good).ok());
  auto flipped = good;
  flipped[10] ^= 0x40;
  ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.regions", flipped.data(), flipped.size(), 0), 0);
  EXPECT_EQ(GetRegions(fd_.get()).status().code(), Code::kDataLoss);

  // Truncated and empty values.
  EXPECT_FALSE(DecodeRegions(std::span<const uint8_t>(good.data(), good.size() - 1)).ok());
  EXPECT_FALSE(DecodeRegions({}).ok());
  ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.regions", "", 0, 0), 0);
  EXPECT_FALSE(GetRegions(fd_.get()).ok());
}

TEST(DmRegionCovers, OverlapAndToEndOfFile) {
  std::vector<Region> rs{{100, 50, kRegionRead}, {1000, 0, kRegionWrite}};
  EXPECT_TRUE(RegionCovers(rs, 100, 1, kRegionRead));
  EXPECT_TRUE(RegionCovers(rs, 149, 1, kRegionRead));
  EXPECT_FALSE(RegionCovers(rs, 150, 10, kRegionRead));   // just after
  EXPECT_FALSE(RegionCovers(rs, 90, 10, kRegionRead));    // just before
  EXPECT_TRUE(RegionCovers(rs, 90, 11, kRegionRead));     // overlaps first byte
  EXPECT_TRUE(RegionCovers(rs, 0, 0, kRegionRead));       // access to EOF
  EXPECT_FALSE(RegionCovers(rs, 100, 50, kRegionWrite));  // wrong flag
  EXPECT_TRUE(RegionCovers(rs, 1ull << 40, 1, kRegionWrite));  // size 0 = to EOF
  EXPECT_FALSE(RegionCovers(rs, 999, 1, kRegionWrite));
  EXPECT_FALSE(RegionCovers(rs, 0, 0, kRegionTruncate));
  EXPECT_FALSE(RegionCovers({}, 0, 0, kRegionRead));
}

TEST_F(DmAttrsTest, EventListRoundTripAndCorruption) {
  EXPECT_EQ(*GetEventList(fd_.get()), 0u);
  ASSERT_TRUE(SetEventList(fd_.get(), 0x8000000000000011ull).ok());
  fd_.reset();
  UniqueFd again = Reopen();
  EXPECT_EQ(*GetEventList(again.get()), 0x8000000000000011ull);
  ASSERT_TRUE(SetEventList(again.get(), 0).ok());
  EXPECT_EQ(*GetEventList(again.get()), 0u);
  ASSERT_EQ(::fsetxattr(again.get(), "trusted.pdm.events", "12345678", 8, 0), 0);
  auto bad = GetEventList(again.get());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kDataLoss);
}

TEST_F(DmAttrsTest, ReturnOnDestroy) {
  auto none = GetReturnOnDestroy(fd_.get());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(SetReturnOnDestroy(fd_.get(), Name("rodattr")).ok());
  auto got = GetReturnOnDestroy(fd_.get());
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->str(), "rodattr");
  ASSERT_TRUE(SetReturnOnDestroy(fd_.get(), std::nullopt).ok());
  EXPECT_FALSE(GetReturnOnDestroy(fd_.get())->has_value());
  ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.rod", "waytoolongname", 14, 0), 0);
  EXPECT_EQ(GetReturnOnDestroy(fd_.get()).status().code(), Code::kDataLoss);
}

}  // namespace
}  // namespace pdm::dm
