#include "dm/handle.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/posix.h"

namespace pdm::dm {
namespace {

class DmHandleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pdm_dm_handle_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!bind_.empty()) ::umount2(bind_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string MakeFile(const std::string& name, const std::string& contents) {
    std::string p = dir_ + "/" + name;
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(::write(fd.get(), contents.data(), contents.size()), static_cast<ssize_t>(contents.size()));
    return p;
  }
  static std::string ReadAllFd(int fd) {
    std::string s(4096, '\0');
    ssize_t n = ::pread(fd, s.data(), s.size(), 0);
    return n < 0 ? std::string() : s.substr(0, static_cast<size_t>(n));
  }
  static ino_t InoOf(const std::string& p) {
    struct stat st;
    EXPECT_EQ(::stat(p.c_str(), &st), 0);
    return st.st_ino;
  }

  std::string dir_;
  std::string bind_;  // unmounted in TearDown when set
};

TEST_F(DmHandleTest, PathHandleReopensSameInode) {
  std::string p = MakeFile("a", "hello handle");
  auto h = PathToHandle(p);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->type(), HandleType::kFile);
  EXPECT_TRUE(h->has_kernel_part());
  EXPECT_LE(h->size(), kMaxHandleSize);
  EXPECT_EQ(HandleToIno(*h), InoOf(p));

  UniqueFd mnt(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(mnt.valid());
  auto fd = Open(*h, mnt.get(), O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  struct stat st;
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  EXPECT_EQ(st.st_ino, InoOf(p));
  EXPECT_EQ(ReadAllFd(fd->get()), "hello handle");
}

TEST_F(DmHandleTest, SerializedHandleReopensThroughBindMount) {
  std::string p = MakeFile("b", "through the bind mount");
  auto h = PathToHandle(p);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  // What another node does: it has only the bytes.
  std::vector<uint8_t> wire(h->bytes().begin(), h->bytes().end());
  auto parsed = Handle::Parse(wire);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, *h);

  std::string bind = dir_ + "_bind";
  ASSERT_EQ(::mkdir(bind.c_str(), 0755), 0);
  if (::mount(dir_.c_str(), bind.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    int e = errno;
    ::rmdir(bind.c_str());
    GTEST_SKIP() << "mount --bind not permitted here: " << std::strerror(e);
  }
  bind_ = bind;

  UniqueFd mnt(::open(bind.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(mnt.valid());
  auto fd = Open(*parsed, mnt.get(), O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  EXPECT_EQ(ReadAllFd(fd->get()), "through the bind mount");

  auto path = HandleToPath(*parsed, bind);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, bind + "/b");
  // The handle made through the bind mount is the same handle.
  auto h2 = PathToHandle(bind + "/b");
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(*h2, *h);
  EXPECT_TRUE(std::equal(h2->bytes().begin(), h2->bytes().end(), h->bytes().begin(), h->bytes().end()));

  ASSERT_EQ(::umount2(bind.c_str(), MNT_DETACH), 0);
  bind_.clear();
  ::rmdir(bind.c_str());
}

TEST_F(DmHandleTest, HardLinksEqualDifferentFilesDiffer) {
  std::string a = MakeFile("x", "1");
  std::string b = MakeFile("y", "2");
  std::string link = dir_ + "/x_link";
  ASSERT_EQ(::link(a.c_str(), link.c_str()), 0);
  auto ha = PathToHandle(a), hl = PathToHandle(link), hb = PathToHandle(b);
  ASSERT_TRUE(ha.ok() && hl.ok() && hb.ok());
  EXPECT_EQ(*ha, *hl);
  EXPECT_EQ(Compare(*ha, *hl), 0);
  EXPECT_EQ(Hash(*ha), Hash(*hl));
  EXPECT_NE(Compare(*ha, *hb), 0);
  EXPECT_EQ(Compare(*ha, *hb), -Compare(*hb, *ha));
  EXPECT_NE(Hash(*ha), Hash(*hb));
  EXPECT_EQ(HandleToFsid(*ha), HandleToFsid(*hb));
}

TEST_F(DmHandleTest, FdHandleMatchesPathHandleAndGeneration) {
  std::string p = MakeFile("g", "gen");
  UniqueFd rd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd opath(::open(p.c_str(), O_PATH | O_CLOEXEC));
  ASSERT_TRUE(rd.valid() && opath.valid());
  auto h1 = FdToHandle(rd.get()), h2 = FdToHandle(opath.get()), h3 = PathToHandle(p);
  ASSERT_TRUE(h1.ok() && h2.ok() && h3.ok());
  EXPECT_EQ(*h1, *h2);
  EXPECT_EQ(*h1, *h3);
  int gen = 0;
  ASSERT_EQ(::ioctl(rd.get(), FS_IOC_GETVERSION, &gen), 0) << "ext4 reports generations";
  EXPECT_EQ(HandleToIgen(*h1), static_cast<uint32_t>(gen));
}

TEST_F(DmHandleTest, FsHandles) {
  std::string p = MakeFile("f", "");
  auto fh = PathToFsHandle(dir_);
  auto h = PathToHandle(p);
  ASSERT_TRUE(fh.ok() && h.ok());
  EXPECT_EQ(fh->type(), HandleType::kFs);
  EXPECT_EQ(fh->size(), kHandleHeaderSize);
  EXPECT_EQ(*fh, HandleToFsHandle(*h));
  EXPECT_EQ(*fh, MakeFsHandle(h->fsid()));
  EXPECT_NE(*fh, *h);
  // An fs handle opens the directory given as mount_fd.
  UniqueFd mnt(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto fd = Open(*fh, mnt.get(), O_RDONLY);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  struct stat st;
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  EXPECT_EQ(st.st_ino, InoOf(dir_));
}

TEST_F(DmHandleTest, MadeHandleComparesButCannotOpen) {
  std::string p = MakeFile("m", "m");
  auto h = PathToHandle(p);
  ASSERT_TRUE(h.ok());
  Handle made = MakeHandle(h->fsid(), h->ino(), h->igen());
  EXPECT_FALSE(made.has_kernel_part());
  EXPECT_EQ(made, *h);
  EXPECT_EQ(Hash(made), Hash(*h));
  EXPECT_NE(MakeHandle(h->fsid(), h->ino(), h->igen() + 1), *h);
  EXPECT_TRUE(IsValid(made.bytes()));
  UniqueFd mnt(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto fd = Open(made, mnt.get(), O_RDONLY);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().err(), EBADF);
}

TEST_F(DmHandleTest, CorruptHandlesRejected) {
  std::string p = MakeFile("c", "c");
  std::string other = MakeFile("o", "o");
  auto h = PathToHandle(p);
  auto ho = PathToHandle(other);
  ASSERT_TRUE(h.ok() && ho.ok());
  const std::vector<uint8_t> good(h->bytes().begin(), h->bytes().end());
  ASSERT_TRUE(IsValid(good));

  auto expect_bad = [](std::vector<uint8_t> b, const char* what) {
    auto r = Handle::Parse(b);
    EXPECT_FALSE(r.ok()) << what;
    if (!r.ok()) {
      EXPECT_EQ(r.status().err(), EBADF) << what;
    }
  };
  auto b = good;
  b[0] ^= 0xff;
  expect_bad(b, "magic");
  b = good;
  b[4] = 99;
  expect_bad(b, "version");
  b = good;
  b[5] = 7;
  expect_bad(b, "type");
  expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + 10), "short");
  expect_bad(std::vector<uint8_t>(good.begin(), good.begin() + kHandleHeaderSize + 3), "truncated kernel part");
  b = good;
  b.resize(kMaxHandleSize + 1, 0);
  expect_bad(b, "too long");
  b = good;
  b[5] = uint8_t(HandleType::kFs);
  expect_bad(b, "fs handle with inode and kernel part");
  expect_bad({}, "empty");

  // A well-formed header whose inode disagrees with the kernel part: parses,
  // but must not open anything.
  UniqueFd mnt(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  b = good;
  b[14] ^= 0x01;
  auto spliced = Handle::Parse(b);
  ASSERT_TRUE(spliced.ok());
  auto fd = Open(*spliced, mnt.get(), O_RDONLY);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().err(), EBADF);

  // Another file's kernel part under this file's header.
  b.assign(good.begin(), good.begin() + kHandleHeaderSize);
  b.insert(b.end(), ho->bytes().begin() + kHandleHeaderSize, ho->bytes().end());
  auto swapped = Handle::Parse(b);
  ASSERT_TRUE(swapped.ok());
  EXPECT_FALSE(Open(*swapped, mnt.get(), O_RDONLY).ok());

  // A handle of this file system presented with a mount fd of another one.
  UniqueFd proc(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto wrong_fs = Open(*h, proc.get(), O_RDONLY);
  ASSERT_FALSE(wrong_fs.ok());
  EXPECT_EQ(wrong_fs.status().err(), EBADF);
}

TEST_F(DmHandleTest, RemovedFileIsStale) {
  std::string p = MakeFile("gone", "bye");
  auto h = PathToHandle(p);
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(::unlink(p.c_str()), 0);
  UniqueFd mnt(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto fd = Open(*h, mnt.get(), O_RDONLY);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().err(), ESTALE);
  auto path = HandleToPath(*h, dir_);
  EXPECT_FALSE(path.ok());
}

TEST_F(DmHandleTest, HandleToPathFindsFileAndDirectory) {
  ASSERT_EQ(::mkdir((dir_ + "/sub").c_str(), 0755), 0);
  std::string p = MakeFile("sub/file", "z");
  auto h = PathToHandle(p);
  auto hd = PathToHandle(dir_ + "/sub");
  ASSERT_TRUE(h.ok() && hd.ok());
  auto path = HandleToPath(*h, dir_);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, p);
  auto dpath = HandleToPath(*hd, dir_);
  ASSERT_TRUE(dpath.ok()) << dpath.status().ToString();
  EXPECT_EQ(*dpath, dir_ + "/sub");
}

TEST_F(DmHandleTest, HashIsStableAcrossBuilds) {
  // Pin the hash of a fixed identity so a change of algorithm or encoding
  // (which would break tables shared between nodes of different versions)
  // fails here.
  Handle h = MakeHandle(0x1122334455667788ull, 42, 7);
  Handle again = *Handle::Parse(h.bytes());
  EXPECT_EQ(Hash(h), Hash(again));
  EXPECT_EQ(Hash(h), 0xff18090bac45ba66ull);  // XXH64 of the 26-byte header, seed 0
  EXPECT_EQ(h.ToHex(), "50444d480102" "8877665544332211" "2a00000000000000" "07000000");
  EXPECT_EQ(h.ToHex().size(), kHandleHeaderSize * 2);
}

}  // namespace
}  // namespace pdm::dm
