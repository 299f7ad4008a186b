// Archive throughput against cp + sync of the same data, on the same disk in
// the same run. Disabled by default (it writes 2 x 256 MiB and takes
// seconds); run it with
//   pdm_unit_tests --gtest_also_run_disabled_tests --gtest_filter='*HsmThroughput*'
// PDM_HSM_BENCH_DIR picks the directory (default /tmp). The page cache is not
// dropped (the machine is shared), so both sides read a warm source.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/posix.h"
#include "hsm/archive.h"

namespace pdm::hsm {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSize = 256ull << 20;
constexpr uint64_t kChunk = 64ull << 20;

double Seconds(int64_t ns) { return double(ns) / 1e9; }

class HsmThroughput : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const char* env = std::getenv("PDM_HSM_BENCH_DIR");
    std::string tmpl = std::string(env ? env : "/tmp") + "/pdm_hsm_bench_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    src_ = dir_ + "/src";
    UniqueFd fd(::open(src_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    std::vector<uint8_t> buf(1 << 20);
    for (uint64_t off = 0; off < kSize; off += buf.size()) {
      for (size_t i = 0; i < buf.size(); i += 8) buf[i] = static_cast<uint8_t>((off + i) * 2654435761u >> 13);
      ASSERT_TRUE(WriteAll(fd.get(), buf, src_).ok());
    }
    ASSERT_EQ(::fsync(fd.get()), 0);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string dir_, src_;
};

TEST_P(HsmThroughput, DISABLED_ArchiveVsCpSync) {
  // Baseline: cp + sync.
  int64_t t0 = MonotonicNs();
  ASSERT_EQ(std::system(("cp " + src_ + " " + dir_ + "/cp_copy && sync").c_str()), 0);
  double cp_s = Seconds(MonotonicNs() - t0);

  auto a = Archive::Open(GetParam() + ":" + dir_ + "/archive", 1);
  ASSERT_TRUE(a.ok());
  // Two workers (our two cores), each reading its chunks from the file and
  // putting them durably.
  t0 = MonotonicNs();
  uint32_t n = ChunkCount(kSize, kChunk);
  std::vector<ChunkRef> refs(n);
  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w)
    ts.emplace_back([&, w] {
      UniqueFd fd(::open(src_.c_str(), O_RDONLY | O_CLOEXEC));
      std::vector<uint8_t> buf(kChunk);
      for (uint32_t i = w; i < n; i += 2) {
        ssize_t got = ::pread(fd.get(), buf.data(), kChunk, off_t(i) * kChunk);
        ASSERT_EQ(got, ssize_t(kChunk));
        auto r = (*a)->PutChunk("bench/obj/v1", i, uint64_t(i) * kChunk, buf);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        refs[i] = *r;
      }
    });
  for (auto& t : ts) t.join();
  ASSERT_TRUE((*a)->Flush().ok());
  auto m = BuildManifest("bench/obj/v1", kSize, kChunk, refs);
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*a)->Commit(*m).ok());
  double put_s = Seconds(MonotonicNs() - t0);

  // Recall side: read + verify every chunk vs a plain sequential read of the
  // archive copy (both warm).
  t0 = MonotonicNs();
  std::vector<uint8_t> buf(kChunk);
  for (uint32_t i = 0; i < n; ++i) ASSERT_TRUE((*a)->ReadChunk(*m, i, buf).ok());
  double read_s = Seconds(MonotonicNs() - t0);
  t0 = MonotonicNs();
  ASSERT_EQ(std::system(("cat " + dir_ + "/cp_copy > /dev/null").c_str()), 0);
  double cat_s = Seconds(MonotonicNs() - t0);

  double mib = double(kSize) / (1 << 20);
  std::printf("[%s] archive %.0f MiB/s vs cp+sync %.0f MiB/s: ratio %.2f; read+verify %.0f MiB/s vs cat %.0f MiB/s: ratio %.2f\n",
              GetParam().c_str(), mib / put_s, mib / cp_s, cp_s / put_s, mib / read_s, mib / cat_s, cat_s / read_s);
  RecordProperty("archive_vs_cp_sync", std::to_string(cp_s / put_s));
  RecordProperty("read_vs_cat", std::to_string(cat_s / read_s));
}

INSTANTIATE_TEST_SUITE_P(HsmBench, HsmThroughput, ::testing::Values("posix", "hdf5"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace pdm::hsm
