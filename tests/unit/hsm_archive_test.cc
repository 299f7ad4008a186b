// Both archive back ends (src/hsm/posix_archive.h, src/hsm/hdf5_archive.h)
// through the one Archive interface: parallel chunk puts, commit, stat,
// verified reads, corruption, crashes mid-write, a full archive.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/posix.h"
#include "hsm/archive.h"
#include "hsm/hdf5_archive.h"
#include "hsm/posix_archive.h"

namespace pdm::hsm {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> Data(size_t n, uint32_t seed) {
  std::vector<uint8_t> d(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : d) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return d;
}

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) out += "\n[exit " + std::to_string(rc) + "]";
  return out;
}

// Flips one byte of path at off.
void FlipByte(const std::string& path, uint64_t off) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(fd.valid()) << path;
  uint8_t b;
  ASSERT_EQ(::pread(fd.get(), &b, 1, off), 1);
  b ^= 0x40;
  ASSERT_EQ(::pwrite(fd.get(), &b, 1, off), 1);
}

class HsmArchive : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pdm_hsm_archive_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    dir_ = base_ + "/archive";
    a_ = OpenArchive(dir_);
    ASSERT_NE(a_, nullptr);
  }
  void TearDown() override {
    a_.reset();
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    std::error_code ec;
    fs::remove_all(base_, ec);
  }
  std::unique_ptr<Archive> OpenArchive(const std::string& dir, ArchiveOptions opts = {}) {
    auto a = Archive::Open(GetParam() + ":" + dir, 1, opts);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? std::move(*a) : nullptr;
  }
  bool hdf5() const { return GetParam() == "hdf5"; }

  // Puts data as an object of chunk_size chunks from `threads` threads, each
  // taking every threads-th chunk, as workers on several nodes would.
  std::vector<ChunkRef> PutParallel(Archive& a, const std::string& key, const std::vector<uint8_t>& data,
                                    uint64_t chunk_size, int threads) {
    uint32_t n = ChunkCount(data.size(), chunk_size);
    std::vector<ChunkRef> refs(n);
    std::atomic<int> failures{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        for (uint32_t i = t; i < n; i += threads) {
          uint64_t off = uint64_t(i) * chunk_size;
          size_t len = std::min<uint64_t>(chunk_size, data.size() - off);
          auto r = a.PutChunk(key, i, off, std::span(data).subspan(off, len));
          if (!r.ok()) {
            ADD_FAILURE() << r.status().ToString();
            ++failures;
            continue;
          }
          refs[i] = *r;
        }
      });
    }
    for (auto& t : ts) t.join();
    EXPECT_EQ(failures.load(), 0);
    return refs;
  }

  // Reads the whole object back through ReadChunk.
  std::vector<uint8_t> ReadAll(Archive& a, const ObjectManifest& m) {
    std::vector<uint8_t> out(m.size);
    for (const auto& c : m.chunks) {
      Status st = a.ReadChunk(m, c.index, std::span(out).subspan(c.offset, c.length));
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    return out;
  }

  std::string base_, dir_;
  std::unique_ptr<Archive> a_;
  bool mounted_ = false;
};

TEST_P(HsmArchive, ParallelChunksCommitStatReadBack) {
  const uint64_t cs = 64 << 10;
  auto data = Data(5 * cs + 1234, 1);  // 6 chunks, the last one short
  const std::string key = MakeObjectKey(0xabcdef, 42, 7, 1);
  EXPECT_EQ(key, "0000000000abcdef/42.7/v1");
  auto refs = PutParallel(*a_, key, data, cs, 4);
  ASSERT_TRUE(a_->Flush().ok());
  // Not committed yet: the object does not exist.
  EXPECT_EQ(a_->Stat(key).status().code(), Code::kNotFound);

  auto m = BuildManifest(key, data.size(), cs, refs, "/fs/dir/file");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(a_->Commit(*m).ok());
  auto st = a_->Stat(key);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(*st, *m);
  EXPECT_EQ(st->chunks.size(), 6u);
  EXPECT_EQ(st->chunks[5].length, 1234u);
  EXPECT_EQ(ReadAll(*a_, *st), data);
  EXPECT_TRUE(a_->VerifyObject(*st).ok());

  // Another process's view of the same directory sees it too.
  auto other = OpenArchive(dir_);
  auto st2 = other->Stat(key);
  ASSERT_TRUE(st2.ok());
  EXPECT_EQ(ReadAll(*other, *st2), data);
  EXPECT_EQ(*other->ListKeys(), std::vector<std::string>{key});

  // Commit is idempotent with the same manifest, refuses a different one,
  // and a committed key takes no more chunks.
  EXPECT_TRUE(a_->Commit(*m).ok());
  ObjectManifest changed = *m;
  changed.origin = "elsewhere";
  EXPECT_EQ(a_->Commit(changed).code(), Code::kAlreadyExists);
  EXPECT_EQ(a_->PutChunk(key, 0, 0, std::span(data).first(10)).status().code(), Code::kAlreadyExists);
  EXPECT_GT(*a_->FreeBytes(), 0u);
}

TEST_P(HsmArchive, ManifestsMustTileTheObjectAndPointAtStoredData) {
  const uint64_t cs = 4096;
  auto data = Data(3 * cs, 2);
  const std::string key = "k/manifest/v1";
  auto refs = PutParallel(*a_, key, data, cs, 1);
  std::vector<ChunkRef> missing = {refs[0], refs[2]};
  EXPECT_EQ(BuildManifest(key, data.size(), cs, missing).status().code(), Code::kInvalidArgument);
  std::vector<ChunkRef> dup = {refs[0], refs[1], refs[1], refs[2]};
  EXPECT_EQ(BuildManifest(key, data.size(), cs, dup).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(BuildManifest(key, data.size() + 1, cs, refs).status().code(), Code::kInvalidArgument);
  auto m = BuildManifest(key, data.size(), cs, {refs[2], refs[0], refs[1]});  // any order
  ASSERT_TRUE(m.ok());
  ObjectManifest bad_sum = *m;
  bad_sum.sum = Xxh3_128({});
  EXPECT_EQ(a_->Commit(bad_sum).code(), Code::kInvalidArgument);
  // A manifest naming data that was never stored is refused.
  auto ghost = BuildManifest("k/ghost/v1", data.size(), cs, refs);
  ASSERT_TRUE(ghost.ok());
  EXPECT_FALSE(a_->Commit(*ghost).ok());
  EXPECT_EQ(a_->Stat("k/ghost/v1").status().code(), Code::kNotFound);
  // Keys are paths: nothing that escapes or collides with our suffixes.
  for (const char* k : {"", "/abs", "a//b", "a/../b", "a/b.json", "a/b.part", "a b", "a/./b"})
    EXPECT_EQ(a_->PutChunk(k, 0, 0, std::span(data).first(1)).status().code(), Code::kInvalidArgument) << k;
  // An empty object has no chunks and commits without data.
  auto empty = BuildManifest("k/empty/v1", 0, cs, {});
  ASSERT_TRUE(empty.ok());
  ASSERT_TRUE(a_->Commit(*empty).ok());
  auto st = a_->Stat("k/empty/v1");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, 0u);
  EXPECT_TRUE(st->chunks.empty());
}

TEST_P(HsmArchive, FlippedByteIsEioNeverWrongBytes) {
  const uint64_t cs = 8192;
  auto data = Data(2 * cs, 3);
  const std::string key = "k/flip/v1";
  auto m = BuildManifest(key, data.size(), cs, PutParallel(*a_, key, data, cs, 2));
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(a_->Commit(*m).ok());
  a_->Flush().IgnoreError();
  uint64_t file_off;
  std::string file;
  if (hdf5()) {
    auto loc = ParseHdf5Location(m->chunks[1].where);
    ASSERT_TRUE(loc.ok());
    file = dir_ + "/" + loc->container;
    file_off = loc->file_offset + 100;
  } else {
    file = dir_ + "/objects/" + key + ".data";
    file_off = cs + 100;
  }
  FlipByte(file, file_off);
  std::vector<uint8_t> buf(cs);
  EXPECT_TRUE(a_->ReadChunk(*m, 0, buf).ok());
  Status st = a_->ReadChunk(*m, 1, buf);
  EXPECT_EQ(st.code(), Code::kDataLoss) << st.ToString();
  EXPECT_EQ(st.err(), EIO);
  EXPECT_EQ(a_->VerifyObject(*m).code(), Code::kDataLoss);
  // Wrong buffer size is the caller's bug, not damage.
  std::vector<uint8_t> small(10);
  EXPECT_EQ(a_->ReadChunk(*m, 0, small).code(), Code::kInvalidArgument);

  // A damaged manifest: Stat says EIO.
  std::string manifest = dir_ + (hdf5() ? "/manifests/" : "/objects/") + key + ".json";
  FlipByte(manifest, 30);
  auto s = a_->Stat(key);
  EXPECT_EQ(s.status().code(), Code::kDataLoss);
  EXPECT_EQ(s.status().err(), EIO);
}

TEST_P(HsmArchive, StreamedChunksEqualPutChunksAndAreVerifiedAtTheEnd) {
  // What workers do: a chunk goes in through a sink in uneven slices and
  // comes back out in slices of another size.
  const uint64_t cs = 3 << 20;
  auto data = Data(cs + 777, 5);  // 2 chunks, the last one short
  const std::string key = "k/stream/v1";
  std::vector<ChunkRef> refs;
  for (uint32_t i = 0; i < 2; ++i) {
    const uint64_t off = i * cs;
    const uint64_t len = std::min<uint64_t>(cs, data.size() - off);
    auto sink = a_->OpenChunk(key, i, off, len);
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    for (uint64_t done = 0; done < len;) {
      const uint64_t n = std::min<uint64_t>(done % 3 == 0 ? 1000003 : 65536, len - done);
      ASSERT_TRUE((*sink)->Write(std::span(data).subspan(off + done, n)).ok());
      done += n;
    }
    // Nothing past the chunk's length.
    const uint8_t extra = 1;
    EXPECT_EQ((*sink)->Write({&extra, 1}).code(), Code::kInvalidArgument);
    auto ref = (*sink)->Finish(Durability::kNow);
    ASSERT_TRUE(ref.ok()) << ref.status().ToString();
    EXPECT_EQ(ref->sum, Xxh3_128(std::span(data).subspan(off, len)));
    EXPECT_EQ(ref->length, len);
    refs.push_back(*ref);
  }
  {  // Finishing short is the caller's bug.
    auto sink = a_->OpenChunk("k/short/v1", 0, 0, 100);
    ASSERT_TRUE(sink.ok());
    ASSERT_TRUE((*sink)->Write(std::span(data).first(99)).ok());
    EXPECT_EQ((*sink)->Finish(Durability::kNow).status().code(), Code::kInvalidArgument);
  }
  EXPECT_EQ(a_->OpenChunk(key, 0, 0, 0).status().code(), Code::kInvalidArgument);
  auto m = BuildManifest(key, data.size(), cs, refs);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(a_->Commit(*m).ok());
  EXPECT_EQ(ReadAll(*a_, *m), data);

  std::vector<uint8_t> back(data.size());
  std::vector<uint8_t> buf(1 << 20);
  for (uint32_t i = 0; i < 2; ++i) {
    Status st = a_->StreamChunk(*m, i, buf, [&](uint64_t off, std::span<const uint8_t> b) {
      EXPECT_LE(b.size(), buf.size());
      std::copy(b.begin(), b.end(), back.begin() + static_cast<ptrdiff_t>(off));
      return Status::Ok();
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  EXPECT_EQ(back, data);
  // The consumer's error stops the read and comes back as is.
  int calls = 0;
  Status stop = a_->StreamChunk(*m, 0, buf, [&](uint64_t, std::span<const uint8_t>) {
    ++calls;
    return Unavailable("no", EAGAIN);
  });
  EXPECT_EQ(stop.err(), EAGAIN);
  EXPECT_EQ(calls, 1);

  // A flipped byte in the last slice: the slices went out, then EIO.
  std::string file;
  uint64_t file_off;
  if (hdf5()) {
    auto loc = ParseHdf5Location(m->chunks[0].where);
    ASSERT_TRUE(loc.ok());
    file = dir_ + "/" + loc->container;
    file_off = loc->file_offset + cs - 1;
  } else {
    file = dir_ + "/objects/" + key + ".data";
    file_off = cs - 1;
  }
  FlipByte(file, file_off);
  uint64_t given = 0;
  Status bad = a_->StreamChunk(*m, 0, buf, [&](uint64_t, std::span<const uint8_t> b) {
    given += b.size();
    return Status::Ok();
  });
  EXPECT_EQ(bad.code(), Code::kDataLoss) << bad.ToString();
  EXPECT_EQ(bad.err(), EIO);
  EXPECT_EQ(given, cs);
  EXPECT_EQ(a_->StreamChunk(*m, 2, buf, [](uint64_t, std::span<const uint8_t>) { return Status::Ok(); }).code(),
            Code::kInvalidArgument);
}

TEST_P(HsmArchive, BatchOfSmallFilesWithOneFlush) {
  std::vector<ObjectManifest> batch;
  std::vector<std::vector<uint8_t>> datas;
  for (int i = 0; i < 40; ++i) {
    datas.push_back(Data(100 + i * 37, 100 + i));
    std::string key = MakeObjectKey(1, 1000 + i, 1, 1);
    auto r = a_->PutChunk(key, 0, 0, datas.back(), Durability::kAtFlush);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto m = BuildManifest(key, datas.back().size(), kDefaultChunkSize, {*r});
    ASSERT_TRUE(m.ok());
    batch.push_back(*m);
  }
  ASSERT_TRUE(a_->Flush().ok());
  size_t committed = 99;
  ASSERT_TRUE(a_->Commit(batch, &committed).ok());
  EXPECT_EQ(committed, batch.size());
  auto keys = a_->ListKeys();
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    auto st = a_->Stat(batch[i].key);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(ReadAll(*a_, *st), datas[i]);
  }
  if (hdf5()) {
    // All of them in one container: the batch.
    std::string c0 = ParseHdf5Location(batch[0].chunks[0].where)->container;
    for (const auto& m : batch) EXPECT_EQ(ParseHdf5Location(m.chunks[0].where)->container, c0);
  }
}

TEST_P(HsmArchive, RemoveDropsObjectAndData) {
  const uint64_t cs = 4096;
  auto data = Data(cs + 10, 4);
  auto m1 = BuildManifest("k/rm/v1", data.size(), cs, PutParallel(*a_, "k/rm/v1", data, cs, 1));
  auto m2 = BuildManifest("k/rm/v2", data.size(), cs, PutParallel(*a_, "k/rm/v2", data, cs, 1));
  ASSERT_TRUE(m1.ok() && m2.ok());
  ASSERT_TRUE(a_->Flush().ok());
  ASSERT_TRUE(a_->Commit(*m1).ok());
  ASSERT_TRUE(a_->Commit(*m2).ok());
  ASSERT_TRUE(a_->Remove("k/rm/v1").ok());
  EXPECT_EQ(a_->Stat("k/rm/v1").status().code(), Code::kNotFound);
  EXPECT_EQ(a_->Remove("k/rm/v1").code(), Code::kNotFound);
  EXPECT_EQ(ReadAll(*a_, *a_->Stat("k/rm/v2")), data);
  if (hdf5()) {
    std::string container = dir_ + "/" + ParseHdf5Location(m2->chunks[0].where)->container;
    EXPECT_TRUE(fs::exists(container));
    ASSERT_TRUE(a_->Remove("k/rm/v2").ok());
    EXPECT_FALSE(fs::exists(container)) << "the container goes with its last object";
  } else {
    EXPECT_FALSE(fs::exists(dir_ + "/objects/k/rm/v1.data"));
    ASSERT_TRUE(a_->Remove("k/rm/v2").ok());
    EXPECT_FALSE(fs::exists(dir_ + "/objects/k/rm/v2.data"));
  }
  EXPECT_TRUE(a_->ListKeys()->empty());
  // AbortObject refuses committed objects and drops uncommitted chunks.
  auto m3 = BuildManifest("k/rm/v3", data.size(), cs, PutParallel(*a_, "k/rm/v3", data, cs, 1));
  ASSERT_TRUE(a_->Commit(*m3).ok());
  EXPECT_EQ(a_->AbortObject("k/rm/v3").code(), Code::kFailedPrecondition);
  auto refs = PutParallel(*a_, "k/rm/v4", data, cs, 1);
  ASSERT_TRUE(a_->AbortObject("k/rm/v4", refs).ok());
  if (!hdf5()) {
    EXPECT_FALSE(fs::exists(dir_ + "/objects/k/rm/v4.data.part"));
  }
  if (hdf5()) {
    // The datasets are unlinked (HDF5 does not shrink the file; the
    // container goes when its last object does).
    std::string container = dir_ + "/" + ParseHdf5Location(refs[0].where)->container;
    ASSERT_TRUE(a_->Flush().ok());
    std::string ls = RunCommand("h5ls -r " + container + " 2>&1");
    EXPECT_EQ(ls.find("/objects/k/rm/v4/c"), std::string::npos) << ls;
    EXPECT_NE(ls.find("/objects/k/rm/v3/c0"), std::string::npos) << ls;
  } else {
    auto m4 = BuildManifest("k/rm/v4", data.size(), cs, refs);
    ASSERT_TRUE(m4.ok());
    EXPECT_EQ(a_->Commit(*m4).code(), Code::kFailedPrecondition) << "aborted chunks are gone";
  }
}

TEST_P(HsmArchive, UncommittedObjectInvisibleAfterKill9MidWrite) {
  const std::string key = "k/crash/v1";
  const uint64_t cs = 256 << 10;
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    auto a = Archive::Open(GetParam() + ":" + dir_, 1);
    if (!a.ok()) ::_exit(2);
    auto data = Data(cs, 9);
    for (uint32_t i = 0;; ++i) {
      auto r = (*a)->PutChunk(key, i, uint64_t(i) * cs, data);
      if (!r.ok()) ::_exit(3);
      if (i == 2) {
        // Tell the parent where chunk 2 went, then keep writing until killed.
        std::string where = r->where + "\n";
        if (::write(pipefd[1], where.data(), where.size()) < 0) ::_exit(4);
      }
      if (i > 4000) ::_exit(5);  // 1 GiB without being killed: give up
    }
  }
  ::close(pipefd[1]);
  char buf[1024] = {};
  ssize_t n = ::read(pipefd[0], buf, sizeof buf - 1);
  ::close(pipefd[0]);
  ASSERT_GT(n, 0) << "child failed before writing three chunks";
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited by itself: " << WEXITSTATUS(status);

  auto a = OpenArchive(dir_);
  EXPECT_EQ(a->Stat(key).status().code(), Code::kNotFound);
  EXPECT_TRUE(a->ListKeys()->empty());
  std::string where(buf, size_t(n) - 1);
  ChunkRef known{2, 2 * cs, cs, where, {}};
  EXPECT_TRUE(a->AbortObject(key, std::span(&known, 1)).ok());
  // The key is usable again from scratch.
  auto data = Data(cs, 10);
  auto r = a->PutChunk(key, 0, 0, data);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto m = BuildManifest(key, cs, cs, {*r});
  ASSERT_TRUE(a->Commit(*m).ok());
  EXPECT_EQ(ReadAll(*a, *a->Stat(key)), data);
}

TEST_P(HsmArchive, FullArchiveFailsCleanlyAndPublishesNothing) {
  // A 1 MiB tmpfs as the whole archive.
  a_.reset();
  fs::create_directories(dir_);
  ASSERT_EQ(::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=1M"), 0) << std::strerror(errno);
  mounted_ = true;
  a_ = OpenArchive(dir_);
  ASSERT_NE(a_, nullptr);

  // One object that fits.
  const uint64_t cs = 128 << 10;
  auto small = Data(cs, 11);
  auto ms = BuildManifest("k/fits/v1", small.size(), cs, PutParallel(*a_, "k/fits/v1", small, cs, 1));
  ASSERT_TRUE(ms.ok());
  ASSERT_TRUE(a_->Commit(*ms).ok());

  // Data fits but the manifest does not: Commit fails, nothing published,
  // and it succeeds once there is room again.
  auto r = a_->PutChunk("k/late/v1", 0, 0, std::span(small).first(4096));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(a_->Flush().ok());
  std::string filler = dir_ + "/filler";
  {
    UniqueFd f(::open(filler.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    std::vector<uint8_t> block(4096, 1);
    while (::write(f.get(), block.data(), block.size()) > 0) {
    }
    ASSERT_EQ(errno, ENOSPC);
  }
  auto ml = BuildManifest("k/late/v1", 4096, cs, {*r});
  Status c = a_->Commit(*ml);
  EXPECT_EQ(c.code(), Code::kResourceExhausted) << c.ToString();
  EXPECT_EQ(c.err(), ENOSPC);
  EXPECT_EQ(a_->Stat("k/late/v1").status().code(), Code::kNotFound);
  EXPECT_EQ(*a_->ListKeys(), std::vector<std::string>{"k/fits/v1"});
  ASSERT_EQ(::unlink(filler.c_str()), 0);
  ASSERT_TRUE(a_->Commit(*ml).ok());
  EXPECT_EQ(ReadAll(*a_, *a_->Stat("k/late/v1")), std::vector<uint8_t>(small.begin(), small.begin() + 4096));

  // Data that does not fit: 2 MiB into what is left of 1 MiB.
  auto big = Data(2 << 20, 12);
  Status failure;
  std::vector<ChunkRef> refs;
  for (uint32_t i = 0; i < ChunkCount(big.size(), cs); ++i) {
    auto put = a_->PutChunk("k/big/v1", i, uint64_t(i) * cs, std::span(big).subspan(i * cs, cs));
    if (!put.ok()) {
      failure = put.status();
      break;
    }
    refs.push_back(*put);
  }
  ASSERT_FALSE(failure.ok()) << "2 MiB fit in a 1 MiB archive?";
  EXPECT_EQ(failure.code(), Code::kResourceExhausted) << failure.ToString();
  EXPECT_EQ(failure.err(), ENOSPC) << failure.ToString();
  EXPECT_NE(failure.message().find("archive full"), std::string::npos) << failure.ToString();
  Status flushed = a_->Flush();
  (void)flushed;  // may report the same full disk; what matters is below
  EXPECT_EQ(a_->Stat("k/big/v1").status().code(), Code::kNotFound);
  EXPECT_EQ(*a_->ListKeys(), (std::vector<std::string>{"k/fits/v1", "k/late/v1"}));
  EXPECT_TRUE(a_->AbortObject("k/big/v1", refs).ok());
  // The committed objects are untouched, and readable from a fresh process.
  auto fresh = OpenArchive(dir_);
  EXPECT_EQ(ReadAll(*fresh, *fresh->Stat("k/fits/v1")), small);
  EXPECT_EQ(ReadAll(*fresh, *fresh->Stat("k/late/v1")).size(), 4096u);
}

INSTANTIATE_TEST_SUITE_P(HsmBackends, HsmArchive, ::testing::Values("posix", "hdf5"),
                         [](const auto& info) { return info.param; });

// ---- HDF5 specifics ---------------------------------------------------------------

TEST(HsmHdf5Archive, ContainersAreReadableWithH5lsAndH5dump) {
  char tmpl[] = "/tmp/pdm_hsm_h5_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    ArchiveOptions opts;
    opts.writer = "testwriter";
    auto a = Archive::Open("hdf5:" + dir, 2, opts);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    const std::string data = "hello from pdm";
    auto r = (*a)->PutChunk("k/small/v1", 0, 0, {reinterpret_cast<const uint8_t*>(data.data()), data.size()},
                            Durability::kAtFlush);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(static_cast<Hdf5Archive&>(**a).OpenContainer(), "containers/testwriter-000000.h5");
    ASSERT_TRUE((*a)->Flush().ok());
    EXPECT_EQ(static_cast<Hdf5Archive&>(**a).OpenContainer(), "") << "Flush seals the batch's container";
    auto m = BuildManifest("k/small/v1", data.size(), kDefaultChunkSize, {*r});
    ASSERT_TRUE((*a)->Commit(*m).ok());

    std::string container = dir + "/containers/testwriter-000000.h5";
    std::string ls = RunCommand("h5ls -r " + container + " 2>&1");
    EXPECT_NE(ls.find("/objects/k/small/v1/c0"), std::string::npos) << ls;
    EXPECT_NE(ls.find("Dataset {14}"), std::string::npos) << ls;
    std::string attr = RunCommand("h5dump -a /objects/k/small/v1/c0/xxh3_128 " + container + " 2>&1");
    EXPECT_NE(attr.find(r->sum.Hex()), std::string::npos) << attr;
    std::string dump = RunCommand("h5dump -d /objects/k/small/v1/c0 " + container + " 2>&1");
    EXPECT_NE(dump.find("104, 101, 108, 108, 111"), std::string::npos) << dump;  // "hello"

    // The next batch goes to a new container.
    auto r2 = (*a)->PutChunk("k/small/v2", 0, 0, {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
    ASSERT_TRUE(r2.ok());
    EXPECT_EQ(ParseHdf5Location(r2->where)->container, "containers/testwriter-000001.h5");
  }
  {
    // A restarted writer with the same name never reuses a container.
    ArchiveOptions opts;
    opts.writer = "testwriter";
    auto a = Archive::Open("hdf5:" + dir, 2, opts);
    ASSERT_TRUE(a.ok());
    auto r = (*a)->PutChunk("k/small/v3", 0, 0, Data(10, 1));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(ParseHdf5Location(r->where)->container, "containers/testwriter-000002.h5");
    auto m = (*a)->Stat("k/small/v1");
    ASSERT_TRUE(m.ok());
    std::vector<uint8_t> back(m->size);
    ASSERT_TRUE((*a)->ReadChunk(*m, 0, back).ok());
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(HsmHdf5Archive, StreamingSinksShareAContainerAndASealWaitsForThem) {
  // Two big chunks stream into one container at once (raw pwrite outside
  // the library lock); a Flush that comes while one is still open waits for
  // it, and the sealed container shows both datasets with their checksums.
  char tmpl[] = "/tmp/pdm_hsm_h5_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    ArchiveOptions opts;
    opts.writer = "streamer";
    auto a = Archive::Open("hdf5:" + dir, 2, opts);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    const uint64_t cs = 2 << 20;
    auto data = Data(2 * cs, 9);
    auto s0 = (*a)->OpenChunk("k/big/v1", 0, 0, cs);
    auto s1 = (*a)->OpenChunk("k/big/v1", 1, cs, cs);
    ASSERT_TRUE(s0.ok() && s1.ok());
    ASSERT_TRUE((*s0)->Write(std::span(data).first(cs)).ok());
    ASSERT_TRUE((*s1)->Write(std::span(data).subspan(cs, cs / 2)).ok());
    auto r0 = (*s0)->Finish(Durability::kAtFlush);  // finished: no longer holds the container
    ASSERT_TRUE(r0.ok()) << r0.status().ToString();
    std::atomic<bool> flushed{false};
    std::thread flusher([&] {
      EXPECT_TRUE((*a)->Flush().ok());
      flushed = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(flushed.load()) << "the seal must wait for the open sink";
    ASSERT_TRUE((*s1)->Write(std::span(data).subspan(cs + cs / 2, cs / 2)).ok());
    auto r1 = (*s1)->Finish(Durability::kAtFlush);
    ASSERT_TRUE(r1.ok()) << r1.status().ToString();
    flusher.join();
    EXPECT_TRUE(flushed.load());
    EXPECT_EQ(ParseHdf5Location(r0->where)->container, ParseHdf5Location(r1->where)->container);
    auto m = BuildManifest("k/big/v1", data.size(), cs, {*r0, *r1});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*a)->Commit(*m).ok());
    std::vector<uint8_t> back(cs);
    ASSERT_TRUE((*a)->ReadChunk(*m, 1, back).ok());
    EXPECT_TRUE(std::equal(back.begin(), back.end(), data.begin() + cs));

    // A sink dropped half way leaves no dataset behind.
    auto s2 = (*a)->OpenChunk("k/dropped/v1", 0, 0, cs);
    ASSERT_TRUE(s2.ok());
    ASSERT_TRUE((*s2)->Write(std::span(data).first(1000)).ok());
    s2->reset();
    ASSERT_TRUE((*a)->Flush().ok());

    const std::string container = dir + "/containers/streamer-000000.h5";
    std::string ls = RunCommand("h5ls -r " + container + " 2>&1");
    EXPECT_NE(ls.find("/objects/k/big/v1/c1"), std::string::npos) << ls;
    std::string attr = RunCommand("h5dump -a /objects/k/big/v1/c1/xxh3_128 " + container + " 2>&1");
    EXPECT_NE(attr.find(r1->sum.Hex()), std::string::npos) << attr;
    std::string ls2 = RunCommand("h5ls -r " + dir + "/containers/streamer-000001.h5 2>&1");
    EXPECT_EQ(ls2.find("dropped/v1/c0"), std::string::npos) << ls2;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(HsmHdf5Archive, ADroppedStreamFailsItsFinishAndAFullContainerWaitsForItsSinks) {
  char tmpl[] = "/tmp/pdm_hsm_h5_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    ArchiveOptions opts;
    opts.writer = "limits";
    opts.container_max_bytes = 3 << 20;
    auto a = Archive::Open("hdf5:" + dir, 2, opts);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    const uint64_t cs = 2 << 20;
    auto data = Data(cs, 4);
    // An AbortObject while the chunk streams: the sink must not report it.
    auto gone = (*a)->OpenChunk("k/gone/v1", 0, 0, cs);
    ASSERT_TRUE(gone.ok());
    ASSERT_TRUE((*gone)->Write(std::span(data).first(cs / 2)).ok());
    ASSERT_TRUE((*a)->AbortObject("k/gone/v1").ok());
    ASSERT_TRUE((*gone)->Write(std::span(data).subspan(cs / 2)).ok());
    EXPECT_EQ((*gone)->Finish(Durability::kNow).status().err(), ECANCELED);
    gone->reset();

    // The size limit holds with a sink open: the next chunk waits for it,
    // then goes to a new container.
    auto first = (*a)->OpenChunk("k/a/v1", 0, 0, cs);
    ASSERT_TRUE(first.ok());
    std::atomic<bool> opened{false};
    Result<ChunkRef> second_ref = Internal("not run");
    std::thread t([&] {
      auto second = (*a)->OpenChunk("k/b/v1", 0, 0, cs);
      opened = true;
      if (!second.ok()) { second_ref = second.status(); return; }
      if (Status st = (*second)->Write(data); !st.ok()) { second_ref = st; return; }
      second_ref = (*second)->Finish(Durability::kNow);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(opened.load()) << "a full container is sealed only after its open sink";
    ASSERT_TRUE((*first)->Write(data).ok());
    auto first_ref = (*first)->Finish(Durability::kNow);
    ASSERT_TRUE(first_ref.ok()) << first_ref.status().ToString();
    t.join();
    ASSERT_TRUE(second_ref.ok()) << second_ref.status().ToString();
    EXPECT_NE(ParseHdf5Location(first_ref->where)->container, ParseHdf5Location(second_ref->where)->container);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(HsmHdf5Archive, ContainerIsSealedAtItsSizeLimit) {
  char tmpl[] = "/tmp/pdm_hsm_h5_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    ArchiveOptions opts;
    opts.writer = "w";
    opts.container_max_bytes = 10000;
    auto a = Archive::Open("hdf5:" + dir, 2, opts);
    ASSERT_TRUE(a.ok());
    auto data = Data(6000, 5);
    auto r1 = (*a)->PutChunk("k/a/v1", 0, 0, data);
    auto r2 = (*a)->PutChunk("k/b/v1", 0, 0, data);
    ASSERT_TRUE(r1.ok() && r2.ok());
    EXPECT_NE(ParseHdf5Location(r1->where)->container, ParseHdf5Location(r2->where)->container);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(HsmHdf5Archive, LocationsOutsideTheArchiveAreRejected) {
  EXPECT_TRUE(ParseHdf5Location("containers/w-000001.h5#/objects/k/c0@4096").ok());
  for (const char* bad : {"containers/w.h5#/objects/k/c0", "../etc/passwd.h5#/x@1", "containers/../x.h5#/x@1",
                          "containers/a/b.h5#/x@1", "containers/w.h5#/x@-1", "containers/w.txt#/x@1"})
    EXPECT_EQ(ParseHdf5Location(bad).status().code(), Code::kDataLoss) << bad;
}

TEST(HsmArchiveOpen, RejectsBadSpecs) {
  EXPECT_EQ(Archive::Open("tape:/x", 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Archive::Open("posix:", 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Archive::Open("/just/a/dir", 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Archive::Open("posix:/tmp/pdm_hsm_unused", 0).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace pdm::hsm
