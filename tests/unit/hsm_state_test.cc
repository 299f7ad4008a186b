// Per-file HSM state (src/hsm/state.h) and the XXH3-128 checksums
// (src/hsm/checksum.h).
#include "hsm/state.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/posix.h"
#include "hsm/checksum.h"

namespace pdm::hsm {
namespace {

std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// ---- checksums -------------------------------------------------------------------

TEST(HsmChecksum, KnownValues) {
  // XXH3-128 (seed 0) of the empty input, as published with xxHash and
  // printed by `xxhsum -H2 /dev/null`.
  EXPECT_EQ(Xxh3_128({}).Hex(), "99aa06d3014798d86001c324468d497f");
  Checksum128 empty = Xxh3_128({});
  EXPECT_EQ(empty.hi, 0x99aa06d3014798d8ull);
  EXPECT_EQ(empty.lo, 0x6001c324468d497full);
  // Different inputs differ; the same input is stable.
  EXPECT_NE(Xxh3_128(Bytes("a")), Xxh3_128(Bytes("b")));
  EXPECT_EQ(Xxh3_128(Bytes("pdm")), Xxh3_128(Bytes("pdm")));
}

TEST(HsmChecksum, StreamingEqualsOneShotInAnySplit) {
  std::vector<uint8_t> data(100000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + (i >> 7));
  Checksum128 one = Xxh3_128(data);
  for (size_t split : {size_t(0), size_t(1), size_t(239), size_t(4096), size_t(65537), data.size()}) {
    Hasher h;
    h.Update(std::span(data).first(split));
    h.Update(std::span(data).subspan(split));
    EXPECT_EQ(h.Digest(), one) << split;
  }
  Hasher h;
  h.Update(data);
  h.Reset();
  EXPECT_EQ(h.Digest(), Xxh3_128({}));
  Hasher moved = std::move(h);
  moved.Update(Bytes("x"));
  EXPECT_EQ(moved.Digest(), Xxh3_128(Bytes("x")));
}

TEST(HsmChecksum, HexRoundTripAndRejects) {
  Checksum128 c = Xxh3_128(Bytes("hello"));
  auto back = Checksum128::FromHex(c.Hex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, c);
  auto upper = Checksum128::FromHex("99AA06D3014798D86001C324468D497F");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(*upper, Xxh3_128({}));
  EXPECT_FALSE(Checksum128::FromHex("99aa").ok());
  EXPECT_FALSE(Checksum128::FromHex("g9aa06d3014798d86001c324468d497f").ok());
  EXPECT_FALSE(Checksum128::FromHex("99aa06d3014798d86001c324468d497f0").ok());
}

TEST(HsmChecksum, ObjectChecksumIsOverCanonicalChunkSums) {
  std::vector<Checksum128> sums = {Xxh3_128(Bytes("chunk0")), Xxh3_128(Bytes("chunk1"))};
  // By hand: the canonical (big-endian) 16 bytes of each, concatenated.
  std::vector<uint8_t> cat;
  for (const auto& s : sums)
    for (uint64_t half : {s.hi, s.lo})
      for (int i = 7; i >= 0; --i) cat.push_back(static_cast<uint8_t>(half >> (8 * i)));
  EXPECT_EQ(ObjectChecksum(sums), Xxh3_128(cat));
  // Order matters: swapping chunks changes the object checksum.
  std::vector<Checksum128> swapped = {sums[1], sums[0]};
  EXPECT_NE(ObjectChecksum(swapped), ObjectChecksum(sums));
  EXPECT_EQ(ObjectChecksum({}), Xxh3_128({}));
}

// ---- state codec -------------------------------------------------------------------

FileState Sample() {
  FileState s;
  s.flags = kExists | kArchived | kReleased | kNoArchive;
  s.archive_id = 3;
  s.key = "00000000deadbeef/1234.7/v2";
  s.size = 1 << 20;
  s.mtime_ns = 1700000000123456789LL;
  s.sum = Xxh3_128(Bytes("object"));
  s.ver = 2;
  return s;
}

TEST(HsmState, EncodeDecodeRoundTrip) {
  FileState s = Sample();
  auto enc = Encode(s);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  EXPECT_LE(enc->size(), 2048u);
  auto j = nlohmann::json::parse(*enc);
  EXPECT_EQ(j["v"], 1);
  EXPECT_EQ(j["flags"], nlohmann::json({"exists", "archived", "released", "noarchive"}));
  EXPECT_EQ(j["key"], s.key);
  EXPECT_EQ(j["sum"], s.sum.Hex());
  auto dec = Decode(Bytes(*enc));
  ASSERT_TRUE(dec.ok()) << dec.status().ToString();
  EXPECT_EQ(*dec, s);
  // Negative mtimes (files from before 1970) survive too.
  s.mtime_ns = -5;
  auto dec2 = Decode(Bytes(*Encode(s)));
  ASSERT_TRUE(dec2.ok());
  EXPECT_EQ(dec2->mtime_ns, -5);
}

TEST(HsmState, EncodeRefusesInconsistentStates) {
  FileState s = Sample();
  s.Clear(kArchived);  // released without archived
  EXPECT_EQ(Encode(s).status().code(), Code::kInvalidArgument);
  s = Sample();
  s.Clear(kExists);
  EXPECT_EQ(Encode(s).status().code(), Code::kInvalidArgument);
  s = Sample();
  s.key.clear();
  EXPECT_EQ(Encode(s).status().code(), Code::kInvalidArgument);
  s = Sample();
  s.flags |= 1u << 20;
  EXPECT_EQ(Encode(s).status().code(), Code::kInvalidArgument);
  // A file the HSM only marked (no copy) is fine.
  FileState only;
  only.Set(kNoRelease);
  EXPECT_TRUE(Encode(only).ok());
}

TEST(HsmState, CorruptValuesAreDataLossNeverAGuess) {
  std::string good = *Encode(Sample());
  auto expect_eio = [](std::string_view raw) {
    auto d = Decode(Bytes(raw));
    EXPECT_EQ(d.status().code(), Code::kDataLoss) << raw;
    EXPECT_EQ(d.status().err(), EIO) << raw;
  };
  expect_eio("");
  expect_eio(good.substr(0, good.size() / 2));  // truncated
  expect_eio("[1,2,3]");
  auto with = [&](const char* field, nlohmann::json value) {
    auto j = nlohmann::json::parse(good);
    if (value.is_null())
      j.erase(field);
    else
      j[field] = value;
    return j.dump();
  };
  expect_eio(with("v", 2));
  expect_eio(with("v", nullptr));
  expect_eio(with("flags", nlohmann::json({"exists", "archived", "released", "frozen"})));
  expect_eio(with("flags", nlohmann::json({"exists", "exists"})));
  expect_eio(with("flags", nlohmann::json({"exists", "released"})));  // released, not archived
  expect_eio(with("sum", "not-hex"));
  expect_eio(with("size", -1));
  expect_eio(with("archive", 1ull << 40));
  expect_eio(with("key", 7));
  expect_eio(with("mtime_ns", nullptr));
  // Unknown extra keys are later additive fields, not damage.
  auto extra = Decode(Bytes(with("future", "x")));
  ASSERT_TRUE(extra.ok());
  EXPECT_EQ(*extra, Sample());
}

TEST(HsmState, FlagNames) {
  EXPECT_EQ(FlagsString(0), "");
  EXPECT_EQ(FlagsString(kExists | kArchived | kReleased), "exists,archived,released");
  EXPECT_EQ(FlagsString(kDirty | kLost | kNoRelease | kNoArchive), "dirty,lost,norelease,noarchive");
  EXPECT_EQ(*ParseFlag("lost"), uint32_t(kLost));
  EXPECT_EQ(ParseFlag("Lost").status().code(), Code::kInvalidArgument);
  auto j = ToJson(Sample());
  EXPECT_FALSE(j.contains("v"));
  EXPECT_EQ(j["archive"], 3);
  EXPECT_EQ(j["flags"].size(), 4u);
}

class HsmStateFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pdm_hsm_state_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/f";
    fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd_.valid());
    ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.probe", "x", 1, 0), 0)
        << "trusted.* xattrs need root: " << std::strerror(errno);
    ::fremovexattr(fd_.get(), "trusted.pdm.probe");
  }
  void TearDown() override {
    fd_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_, path_;
  UniqueFd fd_;
};

TEST_F(HsmStateFile, AbsentIsDefaultAndWriteReadRoundTrip) {
  auto none = ReadState(fd_.get());
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, FileState{});

  FileState s = Sample();
  ASSERT_TRUE(WriteState(fd_.get(), s).ok());
  // It is the DM attribute "pdmhsm", i.e. what dm_get_dmattr shows.
  char buf[4096];
  ssize_t n = ::fgetxattr(fd_.get(), "trusted.pdm.dm.pdmhsm", buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, size_t(n)), *Encode(s));
  UniqueFd ro(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  auto back = ReadState(ro.get());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, s);

  // A default state removes the attribute.
  ASSERT_TRUE(WriteState(fd_.get(), FileState{}).ok());
  EXPECT_LT(::fgetxattr(fd_.get(), "trusted.pdm.dm.pdmhsm", buf, sizeof buf), 0);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_TRUE(WriteState(fd_.get(), FileState{}).ok());  // and again: nothing to remove is fine
}

TEST_F(HsmStateFile, CorruptAttributeIsEio) {
  const char junk[] = "{\"v\":1,\"flags\":[\"released\"";
  ASSERT_EQ(::fsetxattr(fd_.get(), "trusted.pdm.dm.pdmhsm", junk, sizeof junk - 1, 0), 0);
  auto st = ReadState(fd_.get());
  EXPECT_EQ(st.status().code(), Code::kDataLoss);
  EXPECT_EQ(st.status().err(), EIO);
}

TEST_F(HsmStateFile, CopyIsCurrentFollowsSizeAndMtime) {
  ASSERT_EQ(::pwrite(fd_.get(), "abcd", 4, 0), 4);
  struct stat st;
  ASSERT_EQ(::fstat(fd_.get(), &st), 0);
  FileState s = Sample();
  s.size = uint64_t(st.st_size);
  s.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  EXPECT_TRUE(CopyIsCurrent(s, st));
  s.Clear(kReleased | kArchived | kExists);
  EXPECT_FALSE(CopyIsCurrent(s, st));  // no copy at all
  s = Sample();
  s.size = uint64_t(st.st_size);
  s.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  // A write changes the mtime (and here the size): the copy is stale.
  timespec later[2] = {{0, UTIME_OMIT}, {st.st_mtim.tv_sec + 1, st.st_mtim.tv_nsec}};
  ASSERT_EQ(::futimens(fd_.get(), later), 0);
  ASSERT_EQ(::fstat(fd_.get(), &st), 0);
  EXPECT_FALSE(CopyIsCurrent(s, st));
}

}  // namespace
}  // namespace pdm::hsm
