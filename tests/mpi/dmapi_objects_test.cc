// Conformance tests of libdmapi's file-level calls (handles, DM attributes,
// file attributes, directory and bulk scans, managed regions, holes,
// invisible I/O, event lists, configuration, mount info, rights) against a
// real 2-node pdmd cluster. As in dmapi_test.cc, every DMAPI call runs in a
// forked child whose DMAPI_SOCKET names the node it is "on"; the test process
// itself never calls libdmapi (children must not inherit a connection).
#include <dmapi.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "dmapi_child.h"

namespace pdm::test {
namespace {


dm_attrname_t AttrName(const char* s) {
  dm_attrname_t n;
  std::memset(&n, 0, sizeof(n));
  std::memcpy(n.an_chars, s, std::min<size_t>(std::strlen(s), DM_ATTR_NAME_SIZE));
  return n;
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

struct stat Stat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) ADD_FAILURE() << "lstat " << path << ": " << std::strerror(errno);
  return st;
}

// statvfs f_bsize: the block size the per-file-system limits derive from.
dm_size_t BlockSize(const std::string& path) {
  struct statvfs sv {};
  if (::statvfs(path.c_str(), &sv) != 0) ADD_FAILURE() << "statvfs " << path;
  return sv.f_bsize;
}

// In a child: a session plus a handle for path.
struct Obj {
  void* h = nullptr;
  size_t hl = 0;
};
Obj HandleOf(const std::string& path) {
  Obj o;
  CHILD_CHECK(dm_path_to_handle(path.c_str(), &o.h, &o.hl) == 0);
  return o;
}
dm_sessid_t NewSession(const char* info) {
  dm_sessid_t sid = DM_NO_SESSION;
  CHILD_CHECK(dm_create_session(DM_NO_SESSION, info, &sid) == 0);
  return sid;
}

// ---------------------------------------------------------------------------

TEST(DmapiObjects, HandlesFromPathsFdsAndPartsAgreeAndBadHandlesAreRefused) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  WriteFile(lc.View(0) + "/a.txt", "aaaa");
  WriteFile(lc.View(0) + "/b.txt", "bbbb");
  ASSERT_EQ(::mkdir((lc.View(0) + "/dir").c_str(), 0755), 0);
  WriteFile(lc.View(0) + "/dir/inner.txt", "inner");
  ASSERT_EQ(::link((lc.View(0) + "/a.txt").c_str(), (lc.View(0) + "/a-link.txt").c_str()), 0);
  const struct stat sa = Stat(lc.View(0) + "/a.txt");
  unsigned igen_a = 0;
  {
    int fd = ::open((lc.View(0) + "/a.txt").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ioctl(fd, FS_IOC_GETVERSION, &igen_a), 0);
    ::close(fd);
  }

  // Node 0 makes handles and passes one to node 1.
  Child a = Child::Start(lc, 0, [&](FILE*, FILE* w) {
    const std::string v = lc.View(0);
    Obj ha = HandleOf(v + "/a.txt"), hb = HandleOf(v + "/b.txt"), hl = HandleOf(v + "/a-link.txt");
    CHILD_CHECK(ha.hl > 0 && ha.hl <= DM_MAX_HANDLE_SIZE && dm_handle_is_valid(ha.h, ha.hl) == DM_TRUE);
    // Identity: equal for the same object (hard link too), ordered otherwise.
    CHILD_CHECK(dm_handle_cmp(ha.h, ha.hl, ha.h, ha.hl) == 0);
    CHILD_CHECK(dm_handle_cmp(ha.h, ha.hl, hl.h, hl.hl) == 0);
    const int ab = dm_handle_cmp(ha.h, ha.hl, hb.h, hb.hl), ba = dm_handle_cmp(hb.h, hb.hl, ha.h, ha.hl);
    CHILD_CHECK(ab != 0 && ((ab < 0) == (ba > 0)));
    CHILD_CHECK(dm_handle_hash(ha.h, ha.hl) == dm_handle_hash(hl.h, hl.hl));
    CHILD_CHECK(dm_handle_hash(ha.h, ha.hl) != dm_handle_hash(hb.h, hb.hl));  // XXH64: collision ~2^-32
    // dm_fd_to_handle names the same object; a bad fd is EBADF.
    int fd = ::open((v + "/a.txt").c_str(), O_RDONLY);
    CHILD_CHECK(fd >= 0);
    Obj hf;
    CHILD_CHECK(dm_fd_to_handle(fd, &hf.h, &hf.hl) == 0);
    CHILD_CHECK(dm_handle_cmp(hf.h, hf.hl, ha.h, ha.hl) == 0);
    ::close(fd);
    CHILD_FAILS(dm_fd_to_handle(-1, &hf.h, &hf.hl), EBADF);
    CHILD_FAILS(dm_fd_to_handle(fd, &hf.h, &hf.hl), EBADF);  // closed now
    // Paths: ENOENT, EFAULT.
    void* x;
    size_t xl;
    CHILD_FAILS(dm_path_to_handle((v + "/no-such-file").c_str(), &x, &xl), ENOENT);
    CHILD_FAILS(dm_path_to_handle(nullptr, &x, &xl), EFAULT);
    CHILD_FAILS(dm_path_to_handle((v + "/a.txt").c_str(), nullptr, &xl), EFAULT);
    CHILD_FAILS(dm_path_to_fshandle((v + "/no-such-file").c_str(), &x, &xl), ENOENT);
    CHILD_FAILS(dm_path_to_fshandle(nullptr, &x, &xl), EFAULT);
    // File-system handles: from a path, from a file handle, from the fsid.
    Obj fs, fs2, fs3;
    CHILD_CHECK(dm_path_to_fshandle((v + "/dir/inner.txt").c_str(), &fs.h, &fs.hl) == 0);
    CHILD_CHECK(dm_handle_to_fshandle(ha.h, ha.hl, &fs2.h, &fs2.hl) == 0);
    CHILD_CHECK(fs.hl == fs2.hl && std::memcmp(fs.h, fs2.h, fs.hl) == 0);
    CHILD_CHECK(dm_handle_cmp(fs.h, fs.hl, ha.h, ha.hl) != 0);
    dm_fsid_t fsid = 0, fsid2 = 0;
    CHILD_CHECK(dm_handle_to_fsid(ha.h, ha.hl, &fsid) == 0 && fsid != 0);
    CHILD_CHECK(dm_handle_to_fsid(fs.h, fs.hl, &fsid2) == 0 && fsid2 == fsid);
    CHILD_CHECK(dm_make_fshandle(&fsid, &fs3.h, &fs3.hl) == 0);
    CHILD_CHECK(fs3.hl == fs.hl && std::memcmp(fs3.h, fs.h, fs.hl) == 0);
    CHILD_CHECK(dm_handle_to_fshandle(fs.h, fs.hl, &fs2.h, &fs2.hl) == 0 && dm_handle_cmp(fs2.h, fs2.hl, fs.h, fs.hl) == 0);
    // ino / igen are the file's; not defined for a file-system handle.
    dm_ino_t ino = 0;
    dm_igen_t igen = 0;
    CHILD_CHECK(dm_handle_to_ino(ha.h, ha.hl, &ino) == 0 && ino == sa.st_ino);
    CHILD_CHECK(dm_handle_to_igen(ha.h, ha.hl, &igen) == 0 && igen == igen_a);
    CHILD_FAILS(dm_handle_to_ino(fs.h, fs.hl, &ino), EBADF);
    CHILD_FAILS(dm_handle_to_igen(fs.h, fs.hl, &igen), EBADF);
    // dm_make_handle from the parts equals the full handle.
    Obj hm;
    CHILD_CHECK(dm_make_handle(&fsid, &ino, &igen, &hm.h, &hm.hl) == 0);
    CHILD_CHECK(dm_handle_cmp(hm.h, hm.hl, ha.h, ha.hl) == 0);
    CHILD_CHECK(dm_handle_hash(hm.h, hm.hl) == dm_handle_hash(ha.h, ha.hl));
    dm_igen_t other_igen = igen + 1;
    Obj hm2;
    CHILD_CHECK(dm_make_handle(&fsid, &ino, &other_igen, &hm2.h, &hm2.hl) == 0);
    CHILD_CHECK(dm_handle_cmp(hm2.h, hm2.hl, ha.h, ha.hl) != 0);
    CHILD_FAILS(dm_make_handle(nullptr, &ino, &igen, &hm.h, &hm.hl), EFAULT);
    CHILD_FAILS(dm_make_handle(&fsid, &ino, &igen, nullptr, &hm.hl), EFAULT);
    CHILD_FAILS(dm_make_fshandle(nullptr, &hm.h, &hm.hl), EFAULT);
    // Bad handles: EFAULT for NULL, EBADF for malformed bytes or the global handle.
    std::vector<uint8_t> bad(static_cast<uint8_t*>(ha.h), static_cast<uint8_t*>(ha.h) + ha.hl);
    bad[0] ^= 0xff;
    CHILD_CHECK(dm_handle_is_valid(bad.data(), bad.size()) == DM_FALSE);
    CHILD_CHECK(dm_handle_is_valid(ha.h, ha.hl - 1) == DM_FALSE);
    CHILD_CHECK(dm_handle_is_valid(DM_GLOBAL_HANP, DM_GLOBAL_HLEN) == DM_FALSE);
    CHILD_FAILS(dm_handle_to_fsid(bad.data(), bad.size(), &fsid), EBADF);
    CHILD_FAILS(dm_handle_to_fsid(nullptr, ha.hl, &fsid), EFAULT);
    CHILD_FAILS(dm_handle_to_fsid(ha.h, ha.hl, nullptr), EFAULT);
    CHILD_FAILS(dm_handle_to_ino(bad.data(), bad.size(), &ino), EBADF);
    CHILD_FAILS(dm_handle_to_igen(ha.h, ha.hl - 1, &igen), EBADF);
    CHILD_FAILS(dm_handle_to_fshandle(bad.data(), bad.size(), &x, &xl), EBADF);
    CHILD_FAILS(dm_handle_to_fshandle(DM_GLOBAL_HANP, DM_GLOBAL_HLEN, &x, &xl), EBADF);
    CHILD_FAILS(dm_handle_to_fshandle(nullptr, 0, &x, &xl), EFAULT);
    // dm_handle_to_path on this node: the path through this node's view.
    char path[4096];
    size_t rlen = 0;
    CHILD_CHECK(dm_handle_to_path(fs.h, fs.hl, ha.h, ha.hl, sizeof(path), path, &rlen) == 0);
    const std::string p(path);
    CHILD_CHECK((p == v + "/a.txt" || p == v + "/a-link.txt") && rlen == p.size() + 1);
    Obj hd = HandleOf(v + "/dir"), hi = HandleOf(v + "/dir/inner.txt");
    CHILD_CHECK(dm_handle_to_path(hd.h, hd.hl, hi.h, hi.hl, sizeof(path), path, &rlen) == 0 &&
                std::string(path) == v + "/dir/inner.txt");
    CHILD_FAILS(dm_handle_to_path(hd.h, hd.hl, hi.h, hi.hl, 4, path, &rlen), E2BIG);
    CHILD_CHECK(rlen == (v + "/dir/inner.txt").size() + 1);
    CHILD_FAILS(dm_handle_to_path(bad.data(), bad.size(), hi.h, hi.hl, sizeof(path), path, &rlen), EBADF);
    CHILD_FAILS(dm_handle_to_path(hd.h, hd.hl, bad.data(), bad.size(), sizeof(path), path, &rlen), EBADF);
    CHILD_FAILS(dm_handle_to_path(nullptr, 0, hi.h, hi.hl, sizeof(path), path, &rlen), EFAULT);
    CHILD_FAILS(dm_handle_to_path(hd.h, hd.hl, nullptr, 0, sizeof(path), path, &rlen), EFAULT);
    CHILD_FAILS(dm_handle_to_path(hd.h, hd.hl, hi.h, hi.hl, sizeof(path), path, nullptr), EFAULT);
    // A handle made from parts has no way to reach the object.
    CHILD_FAILS(dm_handle_to_path(fs.h, fs.hl, hm.h, hm.hl, sizeof(path), path, &rlen), EBADF);
    std::fprintf(w, "%s\n", Hex(hi.h, hi.hl).c_str());
    std::fprintf(w, "%s\n", Hex(fs.h, fs.hl).c_str());
    // Freeing: handles from every constructor, and the global handle (a no-op).
    for (Obj* o : {&ha, &hb, &hl, &hf, &fs, &fs2, &fs3, &hm, &hm2, &hd, &hi}) dm_handle_free(o->h, o->hl);
    dm_handle_free(DM_GLOBAL_HANP, DM_GLOBAL_HLEN);
    return 0;
  });
  std::vector<uint8_t> inner = Unhex(a.ReadLine()), fsh = Unhex(a.ReadLine());
  ASSERT_EQ(a.Wait(), 0);
  ASSERT_FALSE(inner.empty());
  ASSERT_FALSE(fsh.empty());
  // The victim: a file whose handle outlives it.
  WriteFile(lc.View(0) + "/doomed.txt", "x");
  Child d = Child::Start(lc, 0, [&](FILE*, FILE* w) {
    Obj h = HandleOf(lc.View(0) + "/doomed.txt");
    std::fprintf(w, "%s\n", Hex(h.h, h.hl).c_str());
    return 0;
  });
  std::vector<uint8_t> doomed = Unhex(d.ReadLine());
  ASSERT_EQ(d.Wait(), 0);
  ASSERT_EQ(::unlink((lc.View(0) + "/doomed.txt").c_str()), 0);

  // Node 1: the same handles resolve through node 1's view; the removed file
  // has no path.
  EXPECT_CHILD_OK(RunOn(lc, 1, [&](FILE*, FILE*) {
              char path[4096];
              size_t rlen;
              CHILD_CHECK(dm_handle_to_path(fsh.data(), fsh.size(), inner.data(), inner.size(), sizeof(path), path,
                                            &rlen) == 0);
              CHILD_CHECK(std::string(path) == lc.View(1) + "/dir/inner.txt");
              const int rc = dm_handle_to_path(fsh.data(), fsh.size(), doomed.data(), doomed.size(), sizeof(path),
                                               path, &rlen);
              CHILD_CHECK(rc == -1 && (errno == ENOENT || errno == ESTALE));
              Obj here = HandleOf(lc.View(1) + "/dir/inner.txt");
              CHILD_CHECK(dm_handle_cmp(here.h, here.hl, inner.data(), inner.size()) == 0);
              return 0;
            }));
}

TEST(DmapiObjects, DmAttributesAndFileAttributes) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  const std::string f0 = lc.View(0) + "/attrs.txt";
  WriteFile(f0, std::string(1000, 'z'));
  WriteFile(lc.View(0) + "/fresh.txt", "");
  const dm_size_t block = BlockSize(lc.View(0));
  EXPECT_CHILD_OK(RunOn(lc, 0, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("attrs");
              Obj o = HandleOf(f0);
              dm_attrname_t n1 = AttrName("one"), n2 = AttrName("twotwo"), n3 = AttrName("eightchr"),
                            none = AttrName("absent"), empty = AttrName("");
              const std::string v1 = "1", v2 = "second value", v3(300, 'q');
              CHILD_CHECK(dm_set_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n1, 0, v1.size(), (void*)v1.data()) == 0);
              CHILD_CHECK(dm_set_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n2, 1, v2.size(), (void*)v2.data()) == 0);
              CHILD_CHECK(dm_set_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n3, 0, v3.size(), (void*)v3.data()) == 0);
              // Replace keeps one attribute with the new value.
              CHILD_CHECK(dm_set_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n1, 0, 2, (void*)"11") == 0);
              char buf[4096];
              size_t rlen = 0;
              CHILD_CHECK(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n1, sizeof(buf), buf, &rlen) == 0 &&
                          rlen == 2 && std::memcmp(buf, "11", 2) == 0);
              CHILD_FAILS(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n2, 3, buf, &rlen), E2BIG);
              CHILD_CHECK(rlen == v2.size());
              CHILD_FAILS(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &none, sizeof(buf), buf, &rlen), ENOENT);
              CHILD_FAILS(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &empty, sizeof(buf), buf, &rlen), EINVAL);
              CHILD_FAILS(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, nullptr, sizeof(buf), buf, &rlen), EFAULT);
              CHILD_FAILS(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n1, sizeof(buf), buf, nullptr), EFAULT);
              // Value size limit is DM_CONFIG_MAX_ATTRIBUTE_SIZE.
              dm_size_t maxattr = 0;
              CHILD_CHECK(dm_get_config(o.h, o.hl, DM_CONFIG_MAX_ATTRIBUTE_SIZE, &maxattr) == 0 && maxattr > 0);
              CHILD_CHECK(maxattr == std::min<dm_size_t>(2048, block / 2));
              {
                // The advertised maximum really fits (on a file without other attributes).
                Obj fresh = HandleOf(lc.View(0) + "/fresh.txt");
                std::vector<char> big(maxattr + 1, 'b');
                CHILD_CHECK(dm_set_dmattr(sid, fresh.h, fresh.hl, DM_NO_TOKEN, &none, 0, maxattr, big.data()) == 0);
                CHILD_FAILS(dm_set_dmattr(sid, fresh.h, fresh.hl, DM_NO_TOKEN, &none, 0, maxattr + 1, big.data()),
                            E2BIG);
                CHILD_CHECK(dm_get_dmattr(sid, fresh.h, fresh.hl, DM_NO_TOKEN, &none, big.size(), big.data(), &rlen) ==
                                0 &&
                            rlen == maxattr);
                CHILD_CHECK(dm_remove_dmattr(sid, fresh.h, fresh.hl, DM_NO_TOKEN, 0, &none) == 0);
                CHILD_FAILS(dm_remove_dmattr(sid, fresh.h, fresh.hl, DM_NO_TOKEN, 0, &none), ENOENT);
              }
              CHILD_FAILS(dm_set_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &empty, 0, 1, (void*)"x"), EINVAL);
              // getall: E2BIG with the size needed, then the chain.
              CHILD_FAILS(dm_getall_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, 16, buf, &rlen), E2BIG);
              const size_t need = rlen;
              CHILD_CHECK(need >= 3 * sizeof(dm_attrlist_t) + 2 + v2.size() + v3.size() && need <= sizeof(buf));
              alignas(8) char lbuf[4096];
              CHILD_CHECK(dm_getall_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, need, lbuf, &rlen) == 0 && rlen == need);
              std::map<std::string, std::string> got;
              for (auto* al = reinterpret_cast<dm_attrlist_t*>(lbuf); al != nullptr;
                   al = DM_STEP_TO_NEXT(al, dm_attrlist_t*)) {
                CHILD_CHECK(reinterpret_cast<char*>(al) >= lbuf && reinterpret_cast<char*>(al) < lbuf + rlen);
                CHILD_CHECK(reinterpret_cast<uintptr_t>(al) % 8 == 0);
                std::string name(reinterpret_cast<const char*>(al->al_name.an_chars),
                                 strnlen(reinterpret_cast<const char*>(al->al_name.an_chars), DM_ATTR_NAME_SIZE));
                CHILD_CHECK(got.count(name) == 0);
                got[name] = std::string(DM_GET_VALUE(al, al_data, char*), DM_GET_LEN(al, al_data));
              }
              CHILD_CHECK(got.size() == 3 && got["one"] == "11" && got["twotwo"] == v2 && got["eightchr"] == v3);
              // dt_pers says the object has DM attributes.
              dm_stat_t st;
              CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_PATTR, &st) == 0 && st.dt_pers != 0);
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));
  // DM attributes are persistent and visible from the other node; they are
  // not ordinary user xattrs.
  char xb[64];
  EXPECT_EQ(::getxattr(f0.c_str(), "trusted.pdm.dm.twotwo", xb, sizeof(xb)), 12);
  EXPECT_CHILD_OK(RunOn(lc, 1, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("attrs node 1");
              Obj o = HandleOf(lc.View(1) + "/attrs.txt");
              dm_attrname_t n2 = AttrName("twotwo");
              char buf[64];
              size_t rlen;
              CHILD_CHECK(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &n2, sizeof(buf), buf, &rlen) == 0 &&
                          std::string(buf, rlen) == "second value");
              CHILD_CHECK(dm_remove_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, 0, &n2) == 0);
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));
  EXPECT_EQ(::getxattr(f0.c_str(), "trusted.pdm.dm.twotwo", xb, sizeof(xb)), -1);

  // File attributes: get agrees with stat; set changes what stat sees.
  ASSERT_EQ(::chmod(f0.c_str(), 0600), 0);
  const struct stat before = Stat(f0);
  Child c = Child::Start(lc, 1, [&](FILE*, FILE* w) {
    dm_sessid_t sid = NewSession("fileattr");
    Obj o = HandleOf(lc.View(1) + "/attrs.txt");
    dm_stat_t st;
    CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_STAT, &st) == 0);
    CHILD_CHECK(st.dt_ino == before.st_ino && static_cast<mode_t>(st.dt_mode) == before.st_mode && st.dt_size == before.st_size &&
                st.dt_uid == before.st_uid && st.dt_gid == before.st_gid && static_cast<nlink_t>(st.dt_nlink) == before.st_nlink &&
                st.dt_mtime == before.st_mtim.tv_sec && st.dt_ctime == before.st_ctim.tv_sec &&
                st.dt_blocks == static_cast<dm_size_t>(before.st_blocks));
    CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, 0x80000000u, &st), EINVAL);
    CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_STAT, nullptr), EFAULT);
    dm_fileattr_t fa;
    std::memset(&fa, 0, sizeof(fa));
    fa.fa_mode = 0640;
    fa.fa_uid = 1234;
    fa.fa_gid = 4321;
    fa.fa_atime = 1111111111;
    fa.fa_mtime = 1222222222;
    fa.fa_size = 10;
    CHILD_CHECK(dm_set_fileattr(sid, o.h, o.hl, DM_NO_TOKEN,
                                DM_AT_MODE | DM_AT_UID | DM_AT_GID | DM_AT_ATIME | DM_AT_MTIME | DM_AT_SIZE, &fa) == 0);
    CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_STAT, &st) == 0);
    CHILD_CHECK((st.dt_mode & 07777) == 0640 && st.dt_uid == 1234 && st.dt_gid == 4321 &&
                st.dt_atime == 1111111111 && st.dt_mtime == 1222222222 && st.dt_size == 10);
    // Only the masked fields change.
    fa.fa_mode = 0777;
    fa.fa_size = 100000;
    CHILD_CHECK(dm_set_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_SIZE | DM_AT_MTIME, &fa) == 0);
    // ctime/dtime cannot be set: EINVAL, nothing changed.
    fa.fa_ctime = 1000;
    fa.fa_size = 5;
    CHILD_FAILS(dm_set_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_CTIME, &fa), EINVAL);
    CHILD_FAILS(dm_set_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_SIZE | DM_AT_CTIME, &fa), EINVAL);
    CHILD_FAILS(dm_set_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_DTIME, &fa), EINVAL);
    CHILD_FAILS(dm_set_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_MODE, nullptr), EFAULT);
    std::fprintf(w, "done\n");
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  EXPECT_EQ(c.ReadLine(), "done");
  EXPECT_EQ(c.Wait(), 0);
  const struct stat after = Stat(f0);
  EXPECT_EQ(after.st_mode & 07777, 0640u);
  EXPECT_EQ(after.st_uid, 1234u);
  EXPECT_EQ(after.st_gid, 4321u);
  EXPECT_EQ(after.st_atim.tv_sec, 1111111111);
  EXPECT_EQ(after.st_mtim.tv_sec, 1222222222);
  EXPECT_EQ(after.st_size, 100000);
}

TEST(DmapiObjects, DirattrsAndBulkattrVisitEveryEntryOnce) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  const std::string dir = lc.View(0) + "/thirty";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  std::set<std::string> want;
  for (int i = 0; i < 30; ++i) {
    std::string n = "entry-" + std::to_string(i) + std::string(i % 7, 'x');
    if (i % 10 == 3) {
      ASSERT_EQ(::mkdir((dir + "/" + n).c_str(), 0755), 0);
    } else if (i % 10 == 5) {
      ASSERT_EQ(::symlink("entry-0", (dir + "/" + n).c_str()), 0);
    } else {
      WriteFile(dir + "/" + n, std::string(i, 'd'));
    }
    want.insert(n);
  }
  // A small tree for the bulk scan, with a hard link (one inode, two names).
  ASSERT_EQ(::mkdir((lc.View(0) + "/tree").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((lc.View(0) + "/tree/sub").c_str(), 0755), 0);
  WriteFile(lc.View(0) + "/tree/t1", "1");
  WriteFile(lc.View(0) + "/tree/sub/t2", "22");
  ASSERT_EQ(::link((lc.View(0) + "/tree/t1").c_str(), (lc.View(0) + "/tree/sub/t1-again").c_str()), 0);
  // Every inode of the file system, as the parent sees it.
  std::set<uint64_t> all_inodes;
  const dev_t dev = Stat(lc.View(0)).st_dev;
  all_inodes.insert(Stat(lc.View(0)).st_ino);
  for (auto it = std::filesystem::recursive_directory_iterator(lc.View(0)); it != std::filesystem::end(it); ++it) {
    struct stat st = Stat(it->path().string());
    if (st.st_dev == dev) all_inodes.insert(st.st_ino);
  }
  ASSERT_GE(all_inodes.size(), 36u);

  Child c = Child::Start(lc, 1, [&](FILE*, FILE* w) {
    dm_sessid_t sid = NewSession("scans");
    const std::string d1 = lc.View(1) + "/thirty";
    Obj d = HandleOf(d1);
    dm_attrloc_t loc = 12345;
    CHILD_CHECK(dm_init_attrloc(sid, d.h, d.hl, DM_NO_TOKEN, &loc) == 0 && loc == 0);
    CHILD_FAILS(dm_init_attrloc(sid, d.h, d.hl, DM_NO_TOKEN, nullptr), EFAULT);
    CHILD_FAILS(dm_init_attrloc(12345, d.h, d.hl, DM_NO_TOKEN, &loc), EINVAL);
    alignas(8) char buf[65536];
    size_t rlen = 0;
    // Too small for a single entry: E2BIG, *rlenp = what one entry needs, cursor kept.
    CHILD_FAILS(dm_get_dirattrs(sid, d.h, d.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, 64, buf, &rlen), E2BIG);
    CHILD_CHECK(rlen > sizeof(dm_stat_t) && loc == 0);
    const size_t one = rlen;
    // A buffer for about three entries.
    const size_t small = 3 * (sizeof(dm_stat_t) + 48) + 40;
    std::multiset<std::string> seen;
    int calls = 0, rc = 1;
    while (rc == 1) {
      CHILD_CHECK(++calls < 100);
      rc = dm_get_dirattrs(sid, d.h, d.hl, DM_NO_TOKEN, DM_AT_STAT | DM_AT_HANDLE, &loc, small, buf, &rlen);
      CHILD_CHECK(rc == 0 || rc == 1);
      CHILD_CHECK(rlen <= small);
      size_t in_call = 0;
      for (auto* st = reinterpret_cast<dm_stat_t*>(buf); rlen > 0 && st != nullptr;
           st = DM_STEP_TO_NEXT(st, dm_stat_t*)) {
        CHILD_CHECK(reinterpret_cast<char*>(st) + sizeof(dm_stat_t) <= buf + rlen);
        std::string name(DM_GET_VALUE(st, dt_compname, char*));
        CHILD_CHECK(DM_GET_LEN(st, dt_compname) == name.size() + 1);
        seen.insert(name);
        ++in_call;
        // The entry's handle and attributes are the object's (symlinks not followed).
        struct stat ls;
        CHILD_CHECK(::lstat((d1 + "/" + name).c_str(), &ls) == 0);
        CHILD_CHECK(st->dt_ino == ls.st_ino && static_cast<mode_t>(st->dt_mode) == ls.st_mode && st->dt_size == ls.st_size);
        dm_ino_t ino;
        CHILD_CHECK(dm_handle_to_ino(DM_GET_VALUE(st, dt_handle, void*), DM_GET_LEN(st, dt_handle), &ino) == 0 &&
                    ino == ls.st_ino);
        if (!S_ISLNK(ls.st_mode)) {
          Obj byname = HandleOf(d1 + "/" + name);
          CHILD_CHECK(dm_handle_cmp(DM_GET_VALUE(st, dt_handle, void*), DM_GET_LEN(st, dt_handle), byname.h,
                                    byname.hl) == 0);
          dm_handle_free(byname.h, byname.hl);
        }
      }
      CHILD_CHECK(in_call >= 1 || rc == 0);
      // 1 exactly while entries remain.
      if (rc == 1) CHILD_CHECK(seen.size() < 30);
    }
    CHILD_CHECK(seen.size() == 30 && std::set<std::string>(seen.begin(), seen.end()).size() == 30);
    CHILD_CHECK(calls >= 10);  // ~3 per call
    for (const auto& n : seen) std::fprintf(w, "%s\n", n.c_str());
    std::fprintf(w, "\n");
    // Exactly one entry's worth of buffer works, one entry per call.
    CHILD_CHECK(dm_init_attrloc(sid, d.h, d.hl, DM_NO_TOKEN, &loc) == 0);
    rc = dm_get_dirattrs(sid, d.h, d.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, one, buf, &rlen);
    CHILD_CHECK(rc == 1 && rlen == one && reinterpret_cast<dm_stat_t*>(buf)->_link == 0);
    // Not a directory / bad handle.
    Obj f = HandleOf(lc.View(1) + "/tree/t1");
    CHILD_CHECK(dm_init_attrloc(sid, f.h, f.hl, DM_NO_TOKEN, &loc) == 0);
    CHILD_FAILS(dm_get_dirattrs(sid, f.h, f.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, sizeof(buf), buf, &rlen), ENOTDIR);
    CHILD_FAILS(dm_get_dirattrs(sid, d.h, d.hl, DM_NO_TOKEN, DM_AT_STAT, nullptr, sizeof(buf), buf, &rlen), EFAULT);
    CHILD_FAILS(dm_get_dirattrs(sid, d.h, d.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, sizeof(buf), buf, nullptr), EFAULT);

    // Bulk scan of the whole file system with a small buffer.
    Obj fs;
    CHILD_CHECK(dm_path_to_fshandle(lc.View(1).c_str(), &fs.h, &fs.hl) == 0);
    CHILD_CHECK(dm_init_attrloc(sid, fs.h, fs.hl, DM_NO_TOKEN, &loc) == 0 && loc == 0);
    CHILD_FAILS(dm_get_bulkattr(sid, fs.h, fs.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, 32, buf, &rlen), E2BIG);
    CHILD_CHECK(rlen > sizeof(dm_stat_t));
    CHILD_FAILS(dm_get_bulkattr(sid, d.h, d.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, sizeof(buf), buf, &rlen), EINVAL);
    CHILD_FAILS(dm_get_bulkattr(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, DM_AT_STAT, &loc, sizeof(buf), buf,
                                &rlen),
                EBADF);
    std::multiset<uint64_t> inodes;
    rc = 1;
    calls = 0;
    const size_t bsmall = 4 * (sizeof(dm_stat_t) + 48);
    while (rc == 1) {
      CHILD_CHECK(++calls < 200);
      rc = dm_get_bulkattr(sid, fs.h, fs.hl, DM_NO_TOKEN, DM_AT_STAT, &loc, bsmall, buf, &rlen);
      CHILD_CHECK(rc == 0 || rc == 1);
      for (auto* st = reinterpret_cast<dm_stat_t*>(buf); rlen > 0 && st != nullptr;
           st = DM_STEP_TO_NEXT(st, dm_stat_t*)) {
        inodes.insert(st->dt_ino);
        dm_ino_t ino;
        CHILD_CHECK(dm_handle_to_ino(DM_GET_VALUE(st, dt_handle, void*), DM_GET_LEN(st, dt_handle), &ino) == 0 &&
                    ino == st->dt_ino);
      }
    }
    CHILD_CHECK(calls >= 5);
    for (uint64_t i : inodes) std::fprintf(w, "%llu\n", static_cast<unsigned long long>(i));
    std::fprintf(w, "\n");
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  std::set<std::string> names;
  for (std::string l; !(l = c.ReadLine()).empty();) names.insert(l);
  std::multiset<uint64_t> inodes;
  for (std::string l; !(l = c.ReadLine()).empty();) inodes.insert(std::stoull(l));
  EXPECT_EQ(c.Wait(), 0);
  EXPECT_EQ(names, want);
  EXPECT_EQ(std::set<uint64_t>(inodes.begin(), inodes.end()).size(), inodes.size()) << "an inode came twice";
  EXPECT_EQ(std::set<uint64_t>(inodes.begin(), inodes.end()), all_inodes);
}

TEST(DmapiObjects, RegionsHolesAndInvisibleIo) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  const std::string f0 = lc.View(0) + "/data.bin";
  constexpr size_t kSize = 1 << 20;
  std::string data(kSize, '\0');
  for (size_t i = 0; i < kSize; ++i) data[i] = static_cast<char>('A' + i % 23);
  WriteFile(f0, data);
  ::sync();
  const struct stat full = Stat(f0);
  ASSERT_GE(full.st_blocks * 512, static_cast<blkcnt_t>(kSize));
  WriteFile(lc.View(0) + "/plain.txt", "plain");
  const dm_size_t block = BlockSize(lc.View(0));

  // Managed regions set on node 0 ...
  EXPECT_CHILD_OK(RunOn(lc, 0, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("regions");
              Obj o = HandleOf(f0);
              dm_region_t rg[3];
              std::memset(rg, 0, sizeof(rg));
              rg[0].rg_offset = 0;
              rg[0].rg_size = 4096;
              rg[0].rg_flags = DM_REGION_READ;
              rg[1].rg_offset = 65536;
              rg[1].rg_size = 0;  // to EOF
              rg[1].rg_flags = DM_REGION_WRITE | DM_REGION_TRUNCATE;
              dm_boolean_t exact = DM_FALSE;
              CHILD_CHECK(dm_set_region(sid, o.h, o.hl, DM_NO_TOKEN, 2, rg, &exact) == 0 && exact == DM_TRUE);
              rg[2] = rg[0];
              rg[2].rg_flags = 0x80;
              CHILD_FAILS(dm_set_region(sid, o.h, o.hl, DM_NO_TOKEN, 3, rg, &exact), EINVAL);
              CHILD_FAILS(dm_set_region(sid, o.h, o.hl, DM_NO_TOKEN, 2, rg, nullptr), EFAULT);
              dm_size_t maxr = 0;
              CHILD_CHECK(dm_get_config(o.h, o.hl, DM_CONFIG_MAX_MANAGED_REGIONS, &maxr) == 0 && maxr > 0);
              CHILD_CHECK(maxr == std::min<dm_size_t>(64, (block / 2) / 24));
              {
                // The advertised number of regions really fits.
                Obj other = HandleOf(lc.View(0) + "/plain.txt");
                std::vector<dm_region_t> many(maxr + 1, rg[0]);
                for (size_t i = 0; i < many.size(); ++i) many[i].rg_offset = static_cast<dm_off_t>(i * 8192);
                CHILD_FAILS(dm_set_region(sid, other.h, other.hl, DM_NO_TOKEN, maxr + 1, many.data(), &exact), E2BIG);
                CHILD_CHECK(dm_set_region(sid, other.h, other.hl, DM_NO_TOKEN, maxr, many.data(), &exact) == 0);
                unsigned got = 0;
                std::vector<dm_region_t> back(maxr);
                CHILD_CHECK(dm_get_region(sid, other.h, other.hl, DM_NO_TOKEN, maxr, back.data(), &got) == 0 &&
                            got == maxr && back[maxr - 1].rg_offset == static_cast<dm_off_t>((maxr - 1) * 8192));
                CHILD_CHECK(dm_set_region(sid, other.h, other.hl, DM_NO_TOKEN, 0, nullptr, &exact) == 0);
              }
              dm_stat_t st;
              CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_PMANR, &st) == 0 && st.dt_pmanreg != 0);
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));
  // ... are read back by another process on node 1, E2BIG first.
  EXPECT_CHILD_OK(RunOn(lc, 1, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("regions 1");
              Obj o = HandleOf(lc.View(1) + "/data.bin");
              dm_region_t rg[4];
              unsigned n = 0;
              CHILD_FAILS(dm_get_region(sid, o.h, o.hl, DM_NO_TOKEN, 1, rg, &n), E2BIG);
              CHILD_CHECK(n == 2);
              CHILD_CHECK(dm_get_region(sid, o.h, o.hl, DM_NO_TOKEN, 4, rg, &n) == 0 && n == 2);
              CHILD_CHECK(rg[0].rg_offset == 0 && rg[0].rg_size == 4096 && rg[0].rg_flags == DM_REGION_READ);
              CHILD_CHECK(rg[1].rg_offset == 65536 && rg[1].rg_size == 0 &&
                          rg[1].rg_flags == (DM_REGION_WRITE | DM_REGION_TRUNCATE));
              CHILD_FAILS(dm_get_region(sid, o.h, o.hl, DM_NO_TOKEN, 4, rg, nullptr), EFAULT);
              // Clearing: nelem 0.
              dm_boolean_t exact;
              CHILD_CHECK(dm_set_region(sid, o.h, o.hl, DM_NO_TOKEN, 0, nullptr, &exact) == 0);
              CHILD_CHECK(dm_get_region(sid, o.h, o.hl, DM_NO_TOKEN, 0, nullptr, &n) == 0 && n == 0);
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));

  // Holes: probe, punch, allocinfo, read back.
  Child h = Child::Start(lc, 1, [&](FILE* r, FILE* w) {
    dm_sessid_t sid = NewSession("holes");
    Obj o = HandleOf(lc.View(1) + "/data.bin");
    dm_off_t roff = 0;
    dm_size_t rlen = 0;
    CHILD_CHECK(dm_probe_hole(sid, o.h, o.hl, DM_NO_TOKEN, 100000, 300000, &roff, &rlen) == 0);
    // Block-rounded inside the request.
    CHILD_CHECK(roff >= 100000 && roff < static_cast<dm_off_t>(100000 + block) && roff % block == 0 && rlen > 0 &&
                rlen % block == 0 && static_cast<dm_size_t>(roff) + rlen <= 400000 &&
                static_cast<dm_size_t>(roff) + rlen > 400000 - block);
    CHILD_FAILS(dm_probe_hole(sid, o.h, o.hl, DM_NO_TOKEN, 0, kSize + 1, &roff, &rlen), E2BIG);
    CHILD_FAILS(dm_probe_hole(sid, o.h, o.hl, DM_NO_TOKEN, 10, 100, &roff, &rlen), EINVAL);  // < one block
    CHILD_FAILS(dm_probe_hole(sid, o.h, o.hl, DM_NO_TOKEN, -1, 100, &roff, &rlen), EINVAL);
    CHILD_FAILS(dm_probe_hole(sid, o.h, o.hl, DM_NO_TOKEN, 0, 8192, nullptr, &rlen), EFAULT);
    CHILD_CHECK(dm_probe_hole(sid, o.h, o.hl, DM_NO_TOKEN, 100000, 300000, &roff, &rlen) == 0);
    // Punching needs the probed geometry exactly.
    CHILD_FAILS(dm_punch_hole(sid, o.h, o.hl, DM_NO_TOKEN, roff + 1, rlen), EINVAL);
    CHILD_FAILS(dm_punch_hole(sid, o.h, o.hl, DM_NO_TOKEN, roff, rlen + 1), EINVAL);
    CHILD_FAILS(dm_punch_hole(sid, o.h, o.hl, DM_NO_TOKEN, 0, kSize + 4096), E2BIG);
    Obj plain = HandleOf(lc.View(1));
    CHILD_FAILS(dm_punch_hole(sid, plain.h, plain.hl, DM_NO_TOKEN, 0, 0), EINVAL);  // a directory
    CHILD_FAILS(dm_write_invis(sid, plain.h, plain.hl, DM_NO_TOKEN, 0, 0, 1, (void*)"x"), EINVAL);
    CHILD_FAILS(dm_probe_hole(sid, plain.h, plain.hl, DM_NO_TOKEN, 0, 0, &roff, &rlen), EINVAL);
    CHILD_CHECK(dm_punch_hole(sid, o.h, o.hl, DM_NO_TOKEN, roff, rlen) == 0);
    std::fprintf(w, "%lld %llu\n", static_cast<long long>(roff), static_cast<unsigned long long>(rlen));
    // The allocation map, one extent per call.
    std::vector<dm_extent_t> ex;
    dm_off_t off = 0;
    int rc = 1, calls = 0;
    while (rc == 1) {
      CHILD_CHECK(++calls < 20);
      dm_extent_t e[1];
      unsigned n = 0;
      rc = dm_get_allocinfo(sid, o.h, o.hl, DM_NO_TOKEN, &off, 1, e, &n);
      CHILD_CHECK((rc == 0 || rc == 1) && n <= 1);
      if (n == 1) ex.push_back(e[0]);
    }
    CHILD_CHECK(ex.size() == 3);
    CHILD_CHECK(ex[0].ex_type == DM_EXTENT_RES && ex[0].ex_offset == 0 && ex[0].ex_length == static_cast<dm_size_t>(roff));
    CHILD_CHECK(ex[1].ex_type == DM_EXTENT_HOLE && ex[1].ex_offset == roff && ex[1].ex_length == rlen);
    CHILD_CHECK(ex[2].ex_type == DM_EXTENT_RES && ex[2].ex_offset == roff + static_cast<dm_off_t>(rlen) &&
                ex[2].ex_offset + static_cast<dm_off_t>(ex[2].ex_length) == static_cast<dm_off_t>(kSize));
    dm_extent_t e8[8];
    unsigned n8 = 0;
    off = 0;
    CHILD_CHECK(dm_get_allocinfo(sid, o.h, o.hl, DM_NO_TOKEN, &off, 8, e8, &n8) == 0 && n8 == 3);
    CHILD_FAILS(dm_get_allocinfo(sid, o.h, o.hl, DM_NO_TOKEN, &off, 0, e8, &n8), EINVAL);
    off = -5;
    CHILD_FAILS(dm_get_allocinfo(sid, o.h, o.hl, DM_NO_TOKEN, &off, 8, e8, &n8), EINVAL);
    CHILD_FAILS(dm_get_allocinfo(sid, o.h, o.hl, DM_NO_TOKEN, nullptr, 8, e8, &n8), EFAULT);
    // The hole reads back as zeros, the data around it is intact.
    std::vector<char> buf(kSize);
    CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, kSize, buf.data()) == static_cast<dm_ssize_t>(kSize));
    for (size_t i = 0; i < kSize; ++i) {
      const bool in_hole = i >= static_cast<size_t>(roff) && i < static_cast<size_t>(roff) + rlen;
      CHILD_CHECK(buf[i] == (in_hole ? '\0' : data[i]));
    }
    std::string go = ReadLineFromFile(r);
    (void)go;
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  std::istringstream punched(h.ReadLine());
  long long roff = 0;
  unsigned long long rlen = 0;
  punched >> roff >> rlen;
  ASSERT_GT(rlen, 0u);
  const struct stat after_punch = Stat(f0);
  EXPECT_EQ(after_punch.st_size, static_cast<off_t>(kSize));
  EXPECT_LE(after_punch.st_blocks * 512, full.st_blocks * 512 - static_cast<blkcnt_t>(rlen)) << "space not freed";
  {
    int fd = ::open(f0.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(::lseek(fd, roff, SEEK_HOLE), roff);
    EXPECT_EQ(::lseek(fd, roff, SEEK_DATA), roff + static_cast<off_t>(rlen));
    ::close(fd);
  }
  h.Send("go");
  EXPECT_EQ(h.Wait(), 0);

  // Invisible I/O: bytes round-trip, timestamps stay.
  const std::string f1 = lc.View(1) + "/data.bin";
  struct timespec old_times[2] = {{1000000000, 0}, {1100000000, 0}};  // atime < mtime: relatime would update
  ASSERT_EQ(::utimensat(AT_FDCWD, f0.c_str(), old_times, 0), 0);
  EXPECT_CHILD_OK(RunOn(lc, 1, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("invis");
              Obj o = HandleOf(f1);
              const std::string msg = "written invisibly, twice";
              CHILD_CHECK(dm_write_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, 5000, msg.size(), (void*)msg.data()) ==
                          static_cast<dm_ssize_t>(msg.size()));
              CHILD_CHECK(dm_write_invis(sid, o.h, o.hl, DM_NO_TOKEN, DM_WRITE_SYNC, 9000, msg.size(),
                                         (void*)msg.data()) == static_cast<dm_ssize_t>(msg.size()));
              // Past EOF: the file grows.
              CHILD_CHECK(dm_write_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, kSize + 100, 3, (void*)"end") == 3);
              CHILD_FAILS(dm_write_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0x2, 0, 3, (void*)"bad"), EINVAL);
              CHILD_FAILS(dm_write_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, -1, 3, (void*)"bad"), EINVAL);
              CHILD_FAILS(dm_write_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, 0, 3, nullptr), EFAULT);
              char buf[64];
              CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, 5000, msg.size(), buf) ==
                          static_cast<dm_ssize_t>(msg.size()) &&
                          std::memcmp(buf, msg.data(), msg.size()) == 0);
              CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, 9000, msg.size(), buf) ==
                          static_cast<dm_ssize_t>(msg.size()) &&
                          std::memcmp(buf, msg.data(), msg.size()) == 0);
              CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, kSize + 100, sizeof(buf), buf) == 3 &&
                          std::memcmp(buf, "end", 3) == 0);
              CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, kSize + 1000, sizeof(buf), buf) == 0);
              CHILD_FAILS(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, -1, 1, buf), EINVAL);
              CHILD_FAILS(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, 1, nullptr), EFAULT);
              CHILD_CHECK(dm_sync_by_handle(sid, o.h, o.hl, DM_NO_TOKEN) == 0);
              std::vector<uint8_t> bad(static_cast<uint8_t*>(o.h), static_cast<uint8_t*>(o.h) + o.hl);
              bad[5] = 77;  // unknown handle type
              CHILD_FAILS(dm_sync_by_handle(sid, bad.data(), bad.size(), DM_NO_TOKEN), EBADF);
              CHILD_FAILS(dm_read_invis(sid, bad.data(), bad.size(), DM_NO_TOKEN, 0, 1, buf), EBADF);
              CHILD_FAILS(dm_write_invis(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, 0, 0, 1, buf), EBADF);
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));
  const struct stat after_io = Stat(f0);
  EXPECT_EQ(after_io.st_mtim.tv_sec, 1100000000) << "dm_write_invis changed mtime";
  EXPECT_EQ(after_io.st_atim.tv_sec, 1000000000) << "dm_read_invis changed atime";
  EXPECT_EQ(after_io.st_size, static_cast<off_t>(kSize + 103));
  {
    std::ifstream in(f0, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_EQ(all.size(), kSize + 103);
    EXPECT_EQ(all.substr(5000, 24), "written invisibly, twice");
    EXPECT_EQ(all.substr(9000, 24), "written invisibly, twice");
    EXPECT_EQ(all.substr(4990, 10), data.substr(4990, 10));  // neighbours untouched
    EXPECT_EQ(all.substr(5024, 10), data.substr(5024, 10));
    EXPECT_EQ(all.substr(kSize, 100), std::string(100, '\0'));
    EXPECT_EQ(all.substr(kSize + 100), "end");
  }
}

TEST(DmapiObjects, EventListsConfigMountinfoRightsAndErrors) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  const std::string f0 = lc.View(0) + "/ev.txt";
  WriteFile(f0, "events");
  const dm_size_t block = BlockSize(lc.View(0));

  // Event lists on a file and on the file system, set on node 0.
  Child a = Child::Start(lc, 0, [&](FILE* r, FILE* w) {
    dm_sessid_t sid = NewSession("eventlists");
    Obj o = HandleOf(f0);
    Obj fs;
    CHILD_CHECK(dm_path_to_fshandle(lc.View(0).c_str(), &fs.h, &fs.hl) == 0);
    dm_eventset_t ev, got;
    unsigned n = 0;
    DMEV_ZERO(ev);
    DMEV_SET(DM_EVENT_ATTRIBUTE, ev);
    DMEV_SET(DM_EVENT_DESTROY, ev);
    CHILD_CHECK(dm_set_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
    CHILD_CHECK(dm_get_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, DM_EVENT_MAX, &got, &n) == 0 && got == ev);
    CHILD_FAILS(dm_get_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, 5, &got, &n), E2BIG);  // ATTRIBUTE is 19
    dm_stat_t st;
    CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, DM_NO_TOKEN, DM_AT_EMASK, &st) == 0 && st.dt_emask == ev &&
                st.dt_nevents == DM_EVENT_MAX);
    // File system: on the agent, replicated.
    dm_eventset_t fev;
    DMEV_ZERO(fev);
    DMEV_SET(DM_EVENT_POSTCREATE, fev);
    DMEV_SET(DM_EVENT_POSTREMOVE, fev);
    CHILD_CHECK(dm_set_eventlist(sid, fs.h, fs.hl, DM_NO_TOKEN, &fev, DM_EVENT_MAX) == 0);
    CHILD_CHECK(dm_get_eventlist(sid, fs.h, fs.hl, DM_NO_TOKEN, DM_EVENT_MAX, &got, &n) == 0 && got == fev);
    // Global handle, bad maxevent, NULL set.
    CHILD_FAILS(dm_set_eventlist(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, &ev, DM_EVENT_MAX), EINVAL);
    CHILD_FAILS(dm_get_eventlist(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, DM_EVENT_MAX, &got, &n), EINVAL);
    CHILD_FAILS(dm_set_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, &ev, 0), EINVAL);
    CHILD_FAILS(dm_set_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, &ev, DM_EVENT_MAX + 1), EINVAL);
    CHILD_FAILS(dm_set_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, nullptr, DM_EVENT_MAX), EFAULT);
    CHILD_FAILS(dm_set_eventlist(12345, o.h, o.hl, DM_NO_TOKEN, &ev, DM_EVENT_MAX), EINVAL);
    std::fprintf(w, "set\n");
    CHILD_CHECK(ReadLineFromFile(r) == "clear");
    // Clear both.
    DMEV_ZERO(ev);
    CHILD_CHECK(dm_set_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
    CHILD_CHECK(dm_set_eventlist(sid, fs.h, fs.hl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
    CHILD_CHECK(dm_get_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, DM_EVENT_MAX, &got, &n) == 0 && got == 0);
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  ASSERT_EQ(a.ReadLine(), "set");
  // Node 1 sees both lists (the file's lives in an xattr, the file
  // system's in the replicated tables).
  EXPECT_CHILD_OK(RunOn(lc, 1, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("eventlists 1");
              Obj o = HandleOf(lc.View(1) + "/ev.txt");
              Obj fs;
              CHILD_CHECK(dm_path_to_fshandle(lc.View(1).c_str(), &fs.h, &fs.hl) == 0);
              dm_eventset_t got = 0, want = 0;
              unsigned n = 0;
              DMEV_SET(DM_EVENT_ATTRIBUTE, want);
              DMEV_SET(DM_EVENT_DESTROY, want);
              CHILD_CHECK(dm_get_eventlist(sid, o.h, o.hl, DM_NO_TOKEN, DM_EVENT_MAX, &got, &n) == 0 && got == want);
              dm_eventset_t fwant = 0;
              DMEV_SET(DM_EVENT_POSTCREATE, fwant);
              DMEV_SET(DM_EVENT_POSTREMOVE, fwant);
              bool seen = false;
              for (int i = 0; i < 200 && !seen; ++i) {
                CHILD_CHECK(dm_get_eventlist(sid, fs.h, fs.hl, DM_NO_TOKEN, DM_EVENT_MAX, &got, &n) == 0);
                seen = got == fwant;
                if (!seen) usleep(20000);
              }
              CHILD_CHECK(seen);
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));
  a.Send("clear");
  EXPECT_EQ(a.Wait(), 0);

  // Configuration, mount info, return-on-destroy, ENOSYS parts, bad
  // sessions and tokens, rights.
  Child b = Child::Start(lc, 1, [&](FILE*, FILE*) {
    dm_sessid_t sid = NewSession("misc");
    const std::string v = lc.View(1);
    Obj o = HandleOf(v + "/ev.txt"), root = HandleOf(v);
    Obj fs;
    CHILD_CHECK(dm_path_to_fshandle(v.c_str(), &fs.h, &fs.hl) == 0);
    // dm_get_config_events: what is generated today.
    dm_eventset_t ev = 0;
    unsigned n = 0;
    CHILD_FAILS(dm_get_config_events(fs.h, fs.hl, 0, &ev, &n), E2BIG);
    CHILD_CHECK(n == DM_EVENT_MAX);
    CHILD_CHECK(dm_get_config_events(fs.h, fs.hl, DM_EVENT_MAX, &ev, &n) == 0 && n == DM_EVENT_MAX);
    // The test cluster's ext4 views run the kernel event sources: data,
    // namespace, metadata and mount events, and user events (not the
    // synchronous namespace events, which fanotify cannot raise).
    dm_eventset_t user = 0;
    for (dm_eventtype_t e : {DM_EVENT_USER, DM_EVENT_READ, DM_EVENT_WRITE, DM_EVENT_TRUNCATE, DM_EVENT_POSTCREATE,
                             DM_EVENT_POSTREMOVE, DM_EVENT_POSTRENAME, DM_EVENT_POSTLINK, DM_EVENT_POSTSYMLINK,
                             DM_EVENT_ATTRIBUTE, DM_EVENT_DESTROY, DM_EVENT_CLOSE, DM_EVENT_MOUNT,
                             DM_EVENT_PREUNMOUNT, DM_EVENT_UNMOUNT})
      DMEV_SET(e, user);
    CHILD_CHECK(ev == user);
    CHILD_CHECK(dm_get_config_events(o.h, o.hl, DM_EVENT_MAX, &ev, &n) == 0 && ev == user);
    CHILD_FAILS(dm_get_config_events(DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_EVENT_MAX, &ev, &n), EBADF);
    CHILD_FAILS(dm_get_config_events(o.h, o.hl - 1, DM_EVENT_MAX, &ev, &n), EBADF);
    CHILD_FAILS(dm_get_config_events(o.h, o.hl, DM_EVENT_MAX, nullptr, &n), EFAULT);
    // dm_get_config: the values the conformance document lists.
    const std::pair<dm_config_t, dm_size_t> config[] = {
        {DM_CONFIG_BULKALL, 0},
        {DM_CONFIG_CREATE_BY_HANDLE, 0},
        {DM_CONFIG_DTIME_OVERLOAD, 1},
        {DM_CONFIG_LEGACY, 1},
        {DM_CONFIG_LOCK_UPGRADE, 1},
        {DM_CONFIG_MAX_ATTR_ON_DESTROY, std::min<dm_size_t>(2048, block / 2)},
        {DM_CONFIG_MAX_ATTRIBUTE_SIZE, std::min<dm_size_t>(2048, block / 2)},
        {DM_CONFIG_MAX_HANDLE_SIZE, 160},
        {DM_CONFIG_MAX_MANAGED_REGIONS, std::min<dm_size_t>(64, (block / 2) / 24)},
        {DM_CONFIG_MAX_MESSAGE_DATA, 65536},
        {DM_CONFIG_OBJ_REF, 0},
        {DM_CONFIG_PENDING, 1},
        {DM_CONFIG_PERS_ATTRIBUTES, 1},
        {DM_CONFIG_PERS_EVENTS, 1},
        {DM_CONFIG_PERS_INHERIT_ATTRIBS, 0},
        {DM_CONFIG_PERS_MANAGED_REGIONS, 1},
        {DM_CONFIG_PUNCH_HOLE, 1},
        {DM_CONFIG_TOTAL_ATTRIBUTE_SPACE, block},
        {DM_CONFIG_WILL_RETRY, 0},
    };
    for (const auto& [flag, want] : config) {
      dm_size_t val = 12345;
      CHILD_CHECK(dm_get_config(o.h, o.hl, flag, &val) == 0);
      if (val != want) std::fprintf(stderr, "dm_get_config(%d) = %llu\n", flag, (unsigned long long)val);
      CHILD_CHECK(val == want);
    }
    dm_size_t val;
    CHILD_FAILS(dm_get_config(fs.h, fs.hl, DM_CONFIG_INVALID, &val), EINVAL);
    CHILD_FAILS(dm_get_config(fs.h, fs.hl, DM_CONFIG_MAX, &val), EINVAL);
    CHILD_FAILS(dm_get_config(DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_CONFIG_PUNCH_HOLE, &val), EBADF);
    CHILD_FAILS(dm_get_config(fs.h, fs.hl, DM_CONFIG_PUNCH_HOLE, nullptr), EFAULT);
    // A message payload of DM_CONFIG_MAX_MESSAGE_DATA bytes is accepted, one more is not.
    {
      std::vector<char> msg(65537, 'm');
      dm_token_t t;
      CHILD_FAILS(dm_create_userevent(sid, msg.size(), msg.data(), &t), E2BIG);
      CHILD_CHECK(dm_create_userevent(sid, msg.size() - 1, msg.data(), &t) == 0);
      CHILD_CHECK(dm_respond_event(sid, t, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
    }

    // dm_get_mountinfo: a dm_mount_event_t for this node's view.
    alignas(8) char mbuf[4096];
    size_t rlen = 0;
    CHILD_FAILS(dm_get_mountinfo(sid, fs.h, fs.hl, DM_NO_TOKEN, 8, mbuf, &rlen), E2BIG);
    CHILD_CHECK(rlen > sizeof(dm_mount_event_t) && rlen <= sizeof(mbuf));
    const size_t mneed = rlen;
    CHILD_CHECK(dm_get_mountinfo(sid, fs.h, fs.hl, DM_NO_TOKEN, sizeof(mbuf), mbuf, &rlen) == 0 && rlen == mneed);
    auto* me = reinterpret_cast<dm_mount_event_t*>(mbuf);
    CHILD_CHECK(DM_GET_LEN(me, me_handle1) == fs.hl &&
                std::memcmp(DM_GET_VALUE(me, me_handle1, void*), fs.h, fs.hl) == 0);
    CHILD_CHECK(dm_handle_cmp(DM_GET_VALUE(me, me_handle1, void*), DM_GET_LEN(me, me_handle1), fs.h, fs.hl) == 0);
    CHILD_CHECK(static_cast<size_t>(me->me_name1.vd_offset) + DM_GET_LEN(me, me_name1) <= rlen);
    CHILD_CHECK(std::string(DM_GET_VALUE(me, me_name1, char*)) == v);
    CHILD_CHECK(dm_handle_cmp(DM_GET_VALUE(me, me_roothandle, void*), DM_GET_LEN(me, me_roothandle), root.h,
                              root.hl) == 0);
    CHILD_FAILS(dm_get_mountinfo(sid, o.h, o.hl, DM_NO_TOKEN, sizeof(mbuf), mbuf, &rlen), EINVAL);
    CHILD_FAILS(dm_get_mountinfo(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, sizeof(mbuf), mbuf, &rlen), EBADF);
    CHILD_FAILS(dm_get_mountinfo(12345, fs.h, fs.hl, DM_NO_TOKEN, sizeof(mbuf), mbuf, &rlen), EINVAL);
    CHILD_FAILS(dm_get_mountinfo(sid, fs.h, fs.hl, DM_NO_TOKEN, sizeof(mbuf), mbuf, nullptr), EFAULT);

    // dm_set_return_on_destroy: file-system handles only.
    dm_attrname_t rod = AttrName("hsmid");
    CHILD_CHECK(dm_set_return_on_destroy(sid, fs.h, fs.hl, DM_NO_TOKEN, &rod, DM_TRUE) == 0);
    char xb[16];
    const ssize_t xl = ::getxattr(v.c_str(), "trusted.pdm.rod", xb, sizeof(xb));
    CHILD_CHECK(xl > 0 && std::string(xb, xl).find("hsmid") != std::string::npos);
    CHILD_CHECK(dm_set_return_on_destroy(sid, fs.h, fs.hl, DM_NO_TOKEN, nullptr, DM_FALSE) == 0);
    CHILD_CHECK(::getxattr(v.c_str(), "trusted.pdm.rod", xb, sizeof(xb)) == -1 && errno == ENODATA);
    CHILD_FAILS(dm_set_return_on_destroy(sid, o.h, o.hl, DM_NO_TOKEN, &rod, DM_TRUE), EINVAL);
    CHILD_FAILS(dm_set_return_on_destroy(sid, fs.h, fs.hl, DM_NO_TOKEN, nullptr, DM_TRUE), EFAULT);
    CHILD_FAILS(dm_set_return_on_destroy(12345, fs.h, fs.hl, DM_NO_TOKEN, &rod, DM_TRUE), EINVAL);

    // Optional parts pdm does not support: ENOSYS.
    dm_attrname_t an = AttrName("inh");
    dm_inherit_t inh[2];
    alignas(8) char xbuf[1024];
    dm_attrloc_t loc = 0;
    CHILD_FAILS(dm_obj_ref_hold(sid, DM_NO_TOKEN, o.h, o.hl), ENOSYS);
    CHILD_FAILS(dm_obj_ref_rele(sid, DM_NO_TOKEN, o.h, o.hl), ENOSYS);
    CHILD_FAILS(dm_obj_ref_query(sid, DM_NO_TOKEN, o.h, o.hl), ENOSYS);
    CHILD_FAILS(dm_create_by_handle(sid, root.h, root.hl, DM_NO_TOKEN, o.h, o.hl, "new"), ENOSYS);
    CHILD_FAILS(dm_mkdir_by_handle(sid, root.h, root.hl, DM_NO_TOKEN, o.h, o.hl, "newdir"), ENOSYS);
    CHILD_FAILS(dm_symlink_by_handle(sid, root.h, root.hl, DM_NO_TOKEN, o.h, o.hl, "newlink", "ev.txt"), ENOSYS);
    CHILD_FAILS(dm_set_inherit(sid, fs.h, fs.hl, DM_NO_TOKEN, &an, S_IFREG), ENOSYS);
    CHILD_FAILS(dm_clear_inherit(sid, fs.h, fs.hl, DM_NO_TOKEN, &an), ENOSYS);
    CHILD_FAILS(dm_getall_inherit(sid, fs.h, fs.hl, DM_NO_TOKEN, 2, inh, &n), ENOSYS);
    CHILD_FAILS(dm_get_bulkall(sid, fs.h, fs.hl, DM_NO_TOKEN, DM_AT_STAT, &an, &loc, sizeof(xbuf), xbuf, &rlen),
                ENOSYS);
    struct stat none;
    CHILD_CHECK(::lstat((v + "/new").c_str(), &none) == -1 && errno == ENOENT);

    // Bad session (EINVAL) and bad token (ESRCH / EINVAL) on file calls.
    dm_attrname_t a1 = AttrName("a1");
    dm_stat_t st;
    char buf[64];
    CHILD_FAILS(dm_get_fileattr(12345, o.h, o.hl, DM_NO_TOKEN, DM_AT_STAT, &st), EINVAL);
    CHILD_FAILS(dm_get_fileattr(DM_NO_SESSION, o.h, o.hl, DM_NO_TOKEN, DM_AT_STAT, &st), EINVAL);
    CHILD_FAILS(dm_read_invis(12345, o.h, o.hl, DM_NO_TOKEN, 0, 4, buf), EINVAL);
    CHILD_FAILS(dm_set_dmattr(12345, o.h, o.hl, DM_NO_TOKEN, &a1, 0, 1, (void*)"x"), EINVAL);
    CHILD_FAILS(dm_punch_hole(DM_NO_SESSION, o.h, o.hl, DM_NO_TOKEN, 0, 0), EINVAL);
    CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, 777777, DM_AT_STAT, &st), ESRCH);
    CHILD_FAILS(dm_read_invis(sid, o.h, o.hl, 777777, 0, 4, buf), ESRCH);
    CHILD_FAILS(dm_set_dmattr(sid, o.h, o.hl, 777777, &a1, 0, 1, (void*)"x"), ESRCH);
    CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, DM_INVALID_TOKEN, DM_AT_STAT, &st), EINVAL);
    // No attribute was set by the refused calls.
    size_t l;
    CHILD_FAILS(dm_get_dmattr(sid, o.h, o.hl, DM_NO_TOKEN, &a1, sizeof(buf), buf, &l), ENOENT);

    // Rights on a user-event token; file calls accept the outstanding token.
    dm_token_t tok;
    CHILD_CHECK(dm_create_userevent(sid, 0, nullptr, &tok) == 0);
    dm_right_t right = DM_RIGHT_EXCL;
    CHILD_CHECK(dm_query_right(sid, o.h, o.hl, tok, &right) == 0 && right == DM_RIGHT_NULL);
    CHILD_FAILS(dm_upgrade_right(sid, o.h, o.hl, tok), EACCES);
    CHILD_FAILS(dm_downgrade_right(sid, o.h, o.hl, tok), EACCES);
    CHILD_CHECK(dm_request_right(sid, o.h, o.hl, tok, 0, DM_RIGHT_SHARED) == 0);
    CHILD_CHECK(dm_query_right(sid, o.h, o.hl, tok, &right) == 0 && right == DM_RIGHT_SHARED);
    CHILD_FAILS(dm_downgrade_right(sid, o.h, o.hl, tok), EACCES);
    CHILD_CHECK(dm_upgrade_right(sid, o.h, o.hl, tok) == 0);
    CHILD_CHECK(dm_query_right(sid, o.h, o.hl, tok, &right) == 0 && right == DM_RIGHT_EXCL);
    CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st) == 0 && st.dt_size == 6);
    CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, tok, 0, 6, buf) == 6 && std::memcmp(buf, "events", 6) == 0);
    CHILD_CHECK(dm_downgrade_right(sid, o.h, o.hl, tok) == 0);
    CHILD_CHECK(dm_query_right(sid, o.h, o.hl, tok, &right) == 0 && right == DM_RIGHT_SHARED);
    // Rights belong to the object, whatever handle names it.
    Obj o2 = HandleOf(v + "/ev.txt");
    dm_fsid_t fsid;
    dm_ino_t ino;
    dm_igen_t igen;
    Obj om;
    CHILD_CHECK(dm_handle_to_fsid(o.h, o.hl, &fsid) == 0 && dm_handle_to_ino(o.h, o.hl, &ino) == 0 &&
                dm_handle_to_igen(o.h, o.hl, &igen) == 0 && dm_make_handle(&fsid, &ino, &igen, &om.h, &om.hl) == 0);
    CHILD_CHECK(dm_query_right(sid, om.h, om.hl, tok, &right) == 0 && right == DM_RIGHT_SHARED);
    CHILD_FAILS(dm_query_right(sid, o2.h, o2.hl, DM_NO_TOKEN, &right), EINVAL);
    CHILD_FAILS(dm_upgrade_right(sid, o.h, o.hl, DM_NO_TOKEN), EINVAL);
    CHILD_FAILS(dm_downgrade_right(sid, o.h, o.hl, DM_INVALID_TOKEN), EINVAL);
    CHILD_FAILS(dm_query_right(sid, o.h, o.hl, tok, nullptr), EFAULT);
    CHILD_FAILS(dm_query_right(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, tok, &right), EINVAL);
    CHILD_FAILS(dm_upgrade_right(sid, o.h, o.hl, tok + 1000), ESRCH);
    CHILD_CHECK(dm_release_right(sid, o.h, o.hl, tok) == 0);
    CHILD_CHECK(dm_query_right(sid, o.h, o.hl, tok, &right) == 0 && right == DM_RIGHT_NULL);
    CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
    // Answered: the token is no longer outstanding.
    CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st), ESRCH);
    CHILD_FAILS(dm_query_right(sid, o.h, o.hl, tok, &right), ESRCH);
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  EXPECT_EQ(b.Wait(), 0);

  // A session of node 1 works for file calls on node 0, with DM_NO_TOKEN and
  // with its token: node 0 checks the token with node 1, where it is
  // outstanding (how HSM workers use the coordinator's tokens).
  Child holder = Child::Start(lc, 1, [&](FILE* r, FILE* w) {
    dm_sessid_t sid = NewSession("token holder");
    dm_token_t tok;
    CHILD_CHECK(dm_create_userevent(sid, 0, nullptr, &tok) == 0);
    std::fprintf(w, "%llu %llu\n", static_cast<unsigned long long>(sid), static_cast<unsigned long long>(tok));
    CHILD_CHECK(ReadLineFromFile(r) == "done");
    CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  std::istringstream st(holder.ReadLine());
  unsigned long long hsid = 0, htok = 0;
  st >> hsid >> htok;
  ASSERT_NE(hsid, 0u);
  EXPECT_CHILD_OK(RunOn(lc, 0, [&](FILE*, FILE*) {
              Obj o = HandleOf(f0);
              dm_stat_t s;
              CHILD_CHECK(dm_get_fileattr(hsid, o.h, o.hl, DM_NO_TOKEN, DM_AT_STAT, &s) == 0 && s.dt_size == 6);
              char buf[8];
              CHILD_CHECK(dm_read_invis(hsid, o.h, o.hl, DM_NO_TOKEN, 0, 6, buf) == 6);
              CHILD_CHECK(dm_get_fileattr(hsid, o.h, o.hl, htok, DM_AT_STAT, &s) == 0 && s.dt_size == 6);
              CHILD_FAILS(dm_get_fileattr(hsid, o.h, o.hl, htok + 1, DM_AT_STAT, &s), ESRCH);
              dm_right_t right;
              // Rights stay with the session node, where the token lives.
              CHILD_FAILS(dm_query_right(hsid, o.h, o.hl, htok, &right), EINVAL);
              return 0;
            }));
  holder.Send("done");
  EXPECT_EQ(holder.Wait(), 0);

  // Non-root: EPERM, from the first call on.
  EXPECT_CHILD_OK(RunOn(lc, 0, [&](FILE*, FILE*) {
              // Made as root before dropping privileges.
              CHILD_CHECK(::setgroups(0, nullptr) == 0 && ::setgid(65534) == 0 && ::setuid(65534) == 0);
              CHILD_CHECK(::geteuid() == 65534);
              dm_sessid_t sid;
              CHILD_FAILS(dm_create_session(DM_NO_SESSION, "nobody", &sid), EPERM);
              char* ver;
              CHILD_FAILS(dm_init_service(&ver), EPERM);
              unsigned n;
              dm_sessid_t ids[4];
              CHILD_FAILS(dm_getall_sessions(4, ids, &n), EPERM);
              dm_fsid_t fsid = 1;
              dm_ino_t ino = 2;
              dm_igen_t igen = 3;
              Obj m;
              CHILD_CHECK(dm_make_handle(&fsid, &ino, &igen, &m.h, &m.hl) == 0);  // pure library call
              dm_stat_t st;
              CHILD_FAILS(dm_get_fileattr(1, m.h, m.hl, DM_NO_TOKEN, DM_AT_STAT, &st), EPERM);
              char buf[4];
              CHILD_FAILS(dm_read_invis(1, m.h, m.hl, DM_NO_TOKEN, 0, 4, buf), EPERM);
              return 0;
            }));
}

// The files this process holds open that have been deleted.
std::vector<std::string> DeletedOpenFiles() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec);
    if (!ec && target.string().ends_with(" (deleted)")) out.push_back(target.string());
  }
  return out;
}

TEST(DmapiObjects, CachedObjectFdsNeverPinADeletedFile) {
  // The library keeps files opened by handle for a moment (invisible I/O
  // would otherwise pay open_by_handle_at per call). A file deleted after
  // such a call must not stay open behind the caller's back, even if the
  // process makes no more calls: its blocks would never be freed.
  LocalCluster lc(1);
  ASSERT_TRUE(lc.up());
  const std::string f = lc.View(0) + "/soon-gone.bin";
  WriteFile(f, std::string(1 << 20, 'x'));
  Child c = Child::Start(lc, 0, [&](FILE* r, FILE* w) {
    dm_sessid_t sid = NewSession("pin");
    Obj o = HandleOf(f);
    char buf[4096];
    CHILD_CHECK(dm_read_invis(sid, o.h, o.hl, DM_NO_TOKEN, 0, sizeof buf, buf) == static_cast<dm_ssize_t>(sizeof buf));
    std::fprintf(w, "read\n");
    CHILD_CHECK(ReadLineFromFile(r) == "deleted");
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // > the cache's 1 s lifetime
    auto held = DeletedOpenFiles();
    for (const auto& h : held) std::fprintf(stderr, "still open: %s\n", h.c_str());
    CHILD_CHECK(held.empty());
    return 0;
  });
  ASSERT_EQ(c.ReadLine(), "read");
  ASSERT_EQ(::unlink(f.c_str()), 0);
  c.Send("deleted");
  EXPECT_CHILD_OK(c.Wait());
}

}  // namespace
}  // namespace pdm::test

namespace pdm::test {
namespace {

// File calls remember a token confirmed on a session of their own process
// (src/dmapi/context.cc), so an answer from that process must end it at
// once; a token of another process's session is asked about every time; and
// an own token answered elsewhere is refused within the second it may be
// remembered.
TEST(DmapiObjects, RememberedTokensEndWithTheirAnswer) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  const std::string f = lc.View(0) + "/tok.txt";
  WriteFile(f, "tokens");
  // Owner on node 0: confirms its token by a file call, answers it, and
  // the next file call is refused at once.
  EXPECT_CHILD_OK(RunOn(lc, 0, [&](FILE*, FILE*) {
              dm_sessid_t sid = NewSession("own tokens");
              Obj o = HandleOf(f);
              dm_stat_t st;
              for (int round = 0; round < 3; ++round) {
                dm_token_t tok;
                CHILD_CHECK(dm_create_userevent(sid, 0, nullptr, &tok) == 0);
                CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st) == 0 && st.dt_size == 6);
                CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st) == 0);
                CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
                CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st), ESRCH);
                char buf[8];
                CHILD_FAILS(dm_read_invis(sid, o.h, o.hl, tok, 0, 6, buf), ESRCH);
              }
              CHILD_CHECK(dm_destroy_session(sid) == 0);
              return 0;
            }));

  // The session's owner on node 1 keeps its token; a user of it on node 0
  // (an HSM worker) sees the answer at once, and so does the owner within
  // a second when another process gave the answer.
  Child owner = Child::Start(lc, 1, [&](FILE* r, FILE* w) {
    dm_sessid_t sid = NewSession("token owner");
    dm_token_t tok;
    CHILD_CHECK(dm_create_userevent(sid, 9, (void*)"the event", &tok) == 0);
    Obj o = HandleOf(lc.View(1) + "/tok.txt");
    dm_stat_t st;
    CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st) == 0);  // remembered now
    std::fprintf(w, "%llu %llu\n", static_cast<unsigned long long>(sid), static_cast<unsigned long long>(tok));
    CHILD_CHECK(ReadLineFromFile(r) == "answered");
    const auto t0 = std::chrono::steady_clock::now();
    while (dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st) == 0) {
      CHILD_CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1500));
      ::usleep(20000);
    }
    CHILD_CHECK(errno == ESRCH);
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  std::istringstream line(owner.ReadLine());
  unsigned long long sid = 0, tok = 0;
  line >> sid >> tok;
  ASSERT_NE(sid, 0u);
  Child user = Child::Start(lc, 0, [&](FILE* r, FILE* w) {
    Obj o = HandleOf(f);
    dm_stat_t st;
    CHILD_CHECK(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st) == 0);
    // A file call's check leaves the payload at the session node; asking for
    // the event itself brings it.
    alignas(8) char buf[256];
    size_t rlen = 0;
    auto* m = reinterpret_cast<dm_eventmsg_t*>(buf);
    CHILD_CHECK(dm_find_eventmsg(sid, tok, sizeof buf, buf, &rlen) == 0 && m->ev_token == tok);
    CHILD_CHECK(DM_GET_LEN(m, ev_data) == 9 && std::memcmp(DM_GET_VALUE(m, ev_data, char*), "the event", 9) == 0);
    std::fprintf(w, "checked\n");
    CHILD_CHECK(ReadLineFromFile(r) == "answered");
    CHILD_FAILS(dm_get_fileattr(sid, o.h, o.hl, tok, DM_AT_STAT, &st), ESRCH);
    return 0;
  });
  ASSERT_EQ(user.ReadLine(), "checked");
  // A third process answers the owner's token (XDSM lets any process that
  // knows the session do so).
  EXPECT_CHILD_OK(RunOn(lc, 1, [&](FILE*, FILE*) {
              CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
              return 0;
            }));
  user.Send("answered");
  owner.Send("answered");
  EXPECT_EQ(user.Wait(), 0);
  EXPECT_EQ(owner.Wait(), 0);
}

}  // namespace
}  // namespace pdm::test
