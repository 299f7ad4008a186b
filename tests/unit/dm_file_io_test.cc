#include "dm/file_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/posix.h"
#include "dm/handle.h"

namespace pdm::dm {
namespace {

class DmFileIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pdm_dm_fileio_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // A file of `size` pseudo-random bytes, fsync'ed so its blocks are allocated.
  UniqueFd MakeData(const std::string& name, size_t size, std::vector<uint8_t>* data) {
    std::mt19937 rng(12345);
    data->resize(size);
    for (auto& b : *data) b = static_cast<uint8_t>(rng() | 1);  // never 0, so holes are visible
    std::string p = dir_ + "/" + name;
    UniqueFd fd(::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    EXPECT_TRUE(fd.valid());
    EXPECT_TRUE(WriteAll(fd.get(), *data, p).ok());
    EXPECT_EQ(::fsync(fd.get()), 0);
    return fd;
  }
  static struct stat Stat(int fd) {
    struct stat st {};
    EXPECT_EQ(::fstat(fd, &st), 0);
    return st;
  }
  uint64_t Block(int fd) {
    auto b = AllocBlockSize(fd);
    EXPECT_TRUE(b.ok());
    return b.ok() ? *b : 4096;
  }

  std::string dir_;
};

TEST_F(DmFileIoTest, PunchHoleFreesBlocksKeepsSizeAndData) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("p", 1 << 20, &data);
  const uint64_t bs = Block(fd.get());
  const struct stat before = Stat(fd.get());
  const uint64_t off = 16 * bs, len = 64 * bs;

  ASSERT_TRUE(PunchHole(fd.get(), off, len).ok());
  ASSERT_EQ(::fsync(fd.get()), 0);
  const struct stat after = Stat(fd.get());
  EXPECT_EQ(after.st_size, before.st_size);
  EXPECT_LE(static_cast<uint64_t>(after.st_blocks), static_cast<uint64_t>(before.st_blocks) - len / 512);

  std::vector<uint8_t> back(data.size());
  auto n = ReadInvisible(fd.get(), 0, back);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, data.size());
  for (uint64_t i = 0; i < data.size(); ++i) {
    bool in_hole = i >= off && i < off + len;
    ASSERT_EQ(back[i], in_hole ? 0 : data[i]) << "byte " << i;
  }

  auto map = AllocInfo(fd.get(), 0, 16);
  ASSERT_TRUE(map.ok()) << map.status().ToString();
  EXPECT_FALSE(map->more);
  EXPECT_EQ(map->next_offset, data.size());
  std::vector<Extent> want{{ExtentType::kResident, 0, off},
                           {ExtentType::kHole, off, len},
                           {ExtentType::kResident, off + len, data.size() - off - len}};
  EXPECT_EQ(map->extents, want);
}

TEST_F(DmFileIoTest, PunchHoleRejectsMisalignedAndBeyondEof) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("m", 256 * 1024, &data);
  const uint64_t bs = Block(fd.get());
  EXPECT_EQ(PunchHole(fd.get(), 1, 4 * bs).err(), EINVAL);
  EXPECT_EQ(PunchHole(fd.get(), bs, bs + 1).err(), EINVAL);
  EXPECT_EQ(PunchHole(fd.get(), bs, data.size()).err(), E2BIG);
  // Nothing was punched by the failed calls.
  EXPECT_EQ(AllocInfo(fd.get(), 0, 8)->extents.size(), 1u);
}

TEST_F(DmFileIoTest, PunchToEndOfFileKeepsSize) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("e", 100 * 1000, &data);  // not block aligned
  const uint64_t bs = Block(fd.get());
  timespec old[2] = {{1000000000, 5}, {1200000000, 7}};
  ASSERT_EQ(::futimens(fd.get(), old), 0);
  ASSERT_TRUE(PunchHole(fd.get(), 4 * bs, 0).ok());
  EXPECT_EQ(static_cast<size_t>(Stat(fd.get()).st_size), data.size());
  EXPECT_EQ(Stat(fd.get()).st_mtim.tv_sec, 1200000000) << "a release is not a change of the data";
  EXPECT_EQ(Stat(fd.get()).st_mtim.tv_nsec, 7);
  EXPECT_EQ(Stat(fd.get()).st_atim.tv_sec, 1000000000);
  auto map = AllocInfo(fd.get(), 0, 8);
  ASSERT_TRUE(map.ok());
  std::vector<Extent> want{{ExtentType::kResident, 0, 4 * bs}, {ExtentType::kHole, 4 * bs, data.size() - 4 * bs}};
  EXPECT_EQ(map->extents, want);
}

TEST_F(DmFileIoTest, ProbeHoleRoundsInward) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("r", 64 * 4096, &data);
  const uint64_t bs = Block(fd.get());
  const uint64_t size = data.size();

  auto r = ProbeHole(fd.get(), 1, 3 * bs);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->offset, bs);
  EXPECT_EQ(r->length, 2 * bs);  // 3bs - (bs - 1) rounded down

  r = ProbeHole(fd.get(), 2 * bs, 4 * bs);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->offset, 2 * bs);
  EXPECT_EQ(r->length, 4 * bs);

  r = ProbeHole(fd.get(), bs + 7, 0);  // to EOF
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->offset, 2 * bs);
  EXPECT_EQ(r->length, 0u);

  r = ProbeHole(fd.get(), bs, size - bs);  // ends exactly at EOF
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->length, 0u);

  EXPECT_EQ(ProbeHole(fd.get(), bs, size).status().err(), E2BIG);
  EXPECT_EQ(ProbeHole(fd.get(), size + 1, 0).status().err(), E2BIG);
  EXPECT_EQ(ProbeHole(fd.get(), 0, bs - 1).status().err(), EINVAL);
  EXPECT_EQ(ProbeHole(fd.get(), 1, bs).status().err(), EINVAL);  // rounds to nothing
  EXPECT_EQ(ProbeHole(fd.get(), size - 1, 0).status().err(), EINVAL);  // rounded offset at EOF

  UniqueFd dfd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  EXPECT_EQ(ProbeHole(dfd.get(), 0, 0).status().err(), EINVAL);
}

TEST_F(DmFileIoTest, AllocInfoResumesAndReportsTrailingHole) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("a", 8 * 4096, &data);
  const uint64_t bs = Block(fd.get());
  ASSERT_TRUE(PunchHole(fd.get(), 2 * bs, 2 * bs).ok());
  ASSERT_EQ(::ftruncate(fd.get(), static_cast<off_t>(data.size() + 10 * bs)), 0);  // sparse tail
  const uint64_t size = data.size() + 10 * bs;

  std::vector<Extent> got;
  uint64_t off = 0;
  for (int calls = 0; calls < 10; ++calls) {
    auto b = AllocInfo(fd.get(), off, 1);
    ASSERT_TRUE(b.ok());
    ASSERT_LE(b->extents.size(), 1u);
    got.insert(got.end(), b->extents.begin(), b->extents.end());
    off = b->next_offset;
    if (!b->more) break;
  }
  std::vector<Extent> want{{ExtentType::kResident, 0, 2 * bs},
                           {ExtentType::kHole, 2 * bs, 2 * bs},
                           {ExtentType::kResident, 4 * bs, data.size() - 4 * bs},
                           {ExtentType::kHole, data.size(), size - data.size()}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(off, size);

  // Starting mid-extent reports from the start offset; past EOF, nothing.
  auto mid = AllocInfo(fd.get(), bs + 5, 1);
  ASSERT_TRUE(mid.ok());
  ASSERT_EQ(mid->extents.size(), 1u);
  EXPECT_EQ(mid->extents[0], (Extent{ExtentType::kResident, bs + 5, bs - 5}));
  auto past = AllocInfo(fd.get(), size, 4);
  ASSERT_TRUE(past.ok());
  EXPECT_TRUE(past->extents.empty());
  EXPECT_FALSE(past->more);
  EXPECT_EQ(AllocInfo(fd.get(), 0, 0).status().err(), EINVAL);
  // The caller's file offset is untouched.
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), static_cast<off_t>(data.size()));
}

TEST_F(DmFileIoTest, InvisibleIoLeavesTimestamps) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("i", 4096, &data);
  // Old times: with relatime, an ordinary read would now update atime.
  timespec old[2] = {{946684800, 111}, {946684800, 222}};
  ASSERT_EQ(::futimens(fd.get(), old), 0);

  std::vector<uint8_t> payload{'n', 'e', 'w', ' ', 'd', 'a', 't', 'a'};
  auto w = WriteInvisible(fd.get(), 100, payload, /*sync=*/true);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(*w, payload.size());
  struct stat st = Stat(fd.get());
  EXPECT_EQ(st.st_mtim.tv_sec, old[1].tv_sec);
  EXPECT_EQ(st.st_mtim.tv_nsec, old[1].tv_nsec);
  EXPECT_EQ(st.st_atim.tv_sec, old[0].tv_sec);
  EXPECT_EQ(st.st_atim.tv_nsec, old[0].tv_nsec);

  std::vector<uint8_t> back(payload.size());
  auto r = ReadInvisible(fd.get(), 100, back);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, payload.size());
  EXPECT_EQ(back, payload);
  st = Stat(fd.get());
  EXPECT_EQ(st.st_atim.tv_sec, old[0].tv_sec);
  EXPECT_EQ(st.st_atim.tv_nsec, old[0].tv_nsec);

  // Extending write: size grows, mtime still restored.
  auto ext = WriteInvisible(fd.get(), 8192, payload, false);
  ASSERT_TRUE(ext.ok());
  st = Stat(fd.get());
  EXPECT_EQ(st.st_size, 8192 + static_cast<off_t>(payload.size()));
  EXPECT_EQ(st.st_mtim.tv_sec, old[1].tv_sec);

  // Control: the same read done visibly does move atime here, so the checks
  // above are meaningful.
  std::string p = dir_ + "/i";
  UniqueFd plain(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_EQ(::pread(plain.get(), back.data(), back.size(), 100), static_cast<ssize_t>(back.size()));
  EXPECT_NE(Stat(fd.get()).st_atim.tv_sec, old[0].tv_sec);

  // Short read at EOF.
  std::vector<uint8_t> tail(100);
  auto t = ReadInvisible(fd.get(), 8192 + payload.size() - 3, tail);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 3u);
}

TEST_F(DmFileIoTest, FileAttrGetAndSet) {
  std::vector<uint8_t> data;
  UniqueFd fd = MakeData("s", 1000, &data);
  auto a = GetFileAttr(fd.get());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size, 1000u);
  EXPECT_TRUE(S_ISREG(a->mode));
  EXPECT_EQ(a->nlink, 1u);

  FileAttr v;
  v.mode = 04640;
  v.uid = 1234;
  v.gid = 5678;
  v.size = 123456;
  v.atime = {1111111111, 5};
  v.mtime = {1222222222, 6};
  ASSERT_TRUE(SetFileAttr(fd.get(), kSetAllBits, v).ok());
  auto b = GetFileAttr(fd.get());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->mode & 07777, 04640u);  // set after chown, so setuid survives
  EXPECT_EQ(b->uid, 1234u);
  EXPECT_EQ(b->gid, 5678u);
  EXPECT_EQ(b->size, 123456u);
  EXPECT_EQ(b->atime.tv_sec, 1111111111);
  EXPECT_EQ(b->mtime.tv_sec, 1222222222);  // set after the truncate
  EXPECT_EQ(b->mtime.tv_nsec, 6);

  // Only the masked field changes.
  FileAttr m;
  m.mode = 0600;
  m.uid = 1;
  ASSERT_TRUE(SetFileAttr(fd.get(), kSetMode, m).ok());
  auto c = GetFileAttr(fd.get());
  EXPECT_EQ(c->mode & 07777, 0600u);
  EXPECT_EQ(c->uid, 1234u);
  EXPECT_EQ(c->mtime.tv_sec, 1222222222);

  EXPECT_EQ(SetFileAttr(fd.get(), 1u << 20, v).err(), EINVAL);
  EXPECT_TRUE(SyncFile(fd.get()).ok());
}

TEST_F(DmFileIoTest, ReadDirReturnsEveryEntryOnce) {
  std::set<std::string> want;
  for (int i = 0; i < 53; ++i) {
    std::string n = "file" + std::to_string(i);
    want.insert(n);
    UniqueFd f(::open((dir_ + "/" + n).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(f.valid());
  }
  ASSERT_EQ(::mkdir((dir_ + "/subdir").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("file0", (dir_ + "/link").c_str()), 0);
  want.insert("subdir");
  want.insert("link");

  std::map<std::string, int> seen;
  uint64_t cookie = 0;
  int calls = 0;
  bool done = false;
  while (!done) {
    ASSERT_LT(++calls, 100);
    // A fresh directory fd each call: the cookie alone carries the position.
    UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto b = ReadDir(d.get(), cookie, 7);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ASSERT_LE(b->entries.size(), 7u);
    for (const DirEntry& e : b->entries) {
      ++seen[e.name];
      EXPECT_EQ(e.ino, e.attr.ino);
      EXPECT_EQ(e.handle.ino(), e.ino) << e.name;
      if (e.name == "subdir") {
        EXPECT_TRUE(S_ISDIR(e.attr.mode));
      }
      if (e.name == "link") {
        EXPECT_TRUE(S_ISLNK(e.attr.mode));  // not followed
      }
    }
    cookie = b->next_cookie;
    done = b->done;
  }
  EXPECT_GE(calls, 8);  // 55 entries in batches of 7
  ASSERT_EQ(seen.size(), want.size());
  for (const auto& [name, count] : seen) {
    EXPECT_TRUE(want.count(name)) << name;
    EXPECT_EQ(count, 1) << name;
  }
  // The file's handle from the directory scan is the file's handle.
  UniqueFd d(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto all = ReadDir(d.get(), 0, 1000, DirOptions{.include_dots = true});
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->done);
  EXPECT_EQ(all->entries.size(), want.size() + 2);
  for (const DirEntry& e : all->entries) {
    if (e.name == "file3") {
      EXPECT_EQ(e.handle, *PathToHandle(dir_ + "/file3"));
    }
  }
  EXPECT_EQ(ReadDir(d.get(), 0, 0).status().err(), EINVAL);
}

TEST_F(DmFileIoTest, BulkScanCoversEveryInodeOnce) {
  // A small tree: nested directories, files, a hard link, a symlink, an empty dir.
  for (const char* sub : {"a", "a/b", "a/b/c", "d", "empty"}) ASSERT_EQ(::mkdir((dir_ + "/" + sub).c_str(), 0755), 0);
  for (const char* f : {"top", "a/f1", "a/b/f2", "a/b/c/f3", "a/b/c/f4", "d/f5"}) {
    UniqueFd fd(::open((dir_ + "/" + f).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid());
  }
  ASSERT_EQ(::link((dir_ + "/a/f1").c_str(), (dir_ + "/d/f1_link").c_str()), 0);
  ASSERT_EQ(::symlink("../top", (dir_ + "/d/sym").c_str()), 0);

  // Ground truth: every distinct inode under dir_, the root included.
  std::set<uint64_t> want;
  struct stat st;
  ASSERT_EQ(::lstat(dir_.c_str(), &st), 0);
  want.insert(st.st_ino);
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir_)) {
    ASSERT_EQ(::lstat(e.path().c_str(), &st), 0);
    want.insert(st.st_ino);
  }
  ASSERT_EQ(want.size(), 1u + 5 + 6 + 1);  // root, dirs, files, symlink (hard link shares f1)

  UniqueFd mnt(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::map<uint64_t, int> seen;
  uint64_t cookie = 0;
  bool done = false;
  int calls = 0;
  while (!done) {
    ASSERT_LT(++calls, 50);
    auto b = BulkScan(mnt.get(), cookie, 3);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ASSERT_LE(b->entries.size(), 3u);
    for (const BulkEntry& e : b->entries) {
      ++seen[e.attr.ino];
      EXPECT_EQ(e.handle.ino(), e.attr.ino);
      EXPECT_GT(e.attr.ino, cookie);
      // The handle really reopens the inode it names.
      auto fd = Open(e.handle, mnt.get(), O_PATH);
      ASSERT_TRUE(fd.ok()) << e.path << ": " << fd.status().ToString();
      ASSERT_EQ(::fstat(fd->get(), &st), 0);
      EXPECT_EQ(st.st_ino, e.attr.ino);
    }
    cookie = b->next_cookie;
    done = b->done;
  }
  EXPECT_EQ(calls, 5);  // 13 inodes, 3 per call
  ASSERT_EQ(seen.size(), want.size());
  for (const auto& [ino, count] : seen) {
    EXPECT_TRUE(want.count(ino)) << ino;
    EXPECT_EQ(count, 1) << ino;
  }
  EXPECT_EQ(BulkScan(mnt.get(), 0, 0).status().err(), EINVAL);
}

}  // namespace
}  // namespace pdm::dm
