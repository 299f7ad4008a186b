#include "common/le.h"
#include "dm/handle.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>

namespace pdm::dm {

static_assert(kMaxKernelHandleBytes == MAX_HANDLE_SZ, "kernel handle size changed");

namespace {


Status BadHandle(std::string_view why) { return InvalidArgument(std::string("DM handle: ") + std::string(why), EBADF); }

uint64_t FsidFromStatfs(const struct statfs& sfs) {
  uint32_t v0, v1;
  static_assert(sizeof(sfs.f_fsid) == 8);
  std::memcpy(&v0, reinterpret_cast<const char*>(&sfs.f_fsid), 4);
  std::memcpy(&v1, reinterpret_cast<const char*>(&sfs.f_fsid) + 4, 4);
  return (uint64_t(v1) << 32) | v0;
}

// The inode generation, or 0 where the file system does not report one.
// FS_IOC_GETVERSION needs a real (non-O_PATH) fd; an O_PATH fd on a regular
// file or directory is reopened through /proc so that a handle made from an
// O_PATH fd equals the one made from an ordinary fd. Other types (symlinks,
// devices, FIFOs) are not opened, because opening them can block or have side
// effects; they get 0, consistently.
uint32_t GenerationOf(int fd, const struct stat& st) {
  int gen = 0;
  if (::ioctl(fd, FS_IOC_GETVERSION, &gen) == 0) return static_cast<uint32_t>(gen);
  if (errno != EBADF || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) return 0;
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  UniqueFd real(::open(proc.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOATIME));
  if (!real.valid() && errno == EPERM)
    real.reset(::open(proc.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!real.valid()) return 0;
  if (::ioctl(real.get(), FS_IOC_GETVERSION, &gen) == 0) return static_cast<uint32_t>(gen);
  return 0;
}

void AppendHeader(std::vector<uint8_t>& out, HandleType type, uint64_t fsid, uint64_t ino, uint32_t igen) {
  PutLe(out, kHandleMagic, 4);
  out.push_back(kHandleVersion);
  out.push_back(static_cast<uint8_t>(type));
  PutLe(out, fsid, 8);
  PutLe(out, ino, 8);
  PutLe(out, igen, 4);
}

}  // namespace

// Builds Handles from already-validated parts; the only writer of Handle's
// private fields besides Parse.
class HandleBuilder {
 public:
  static Handle Build(std::vector<uint8_t> bytes, HandleType type, uint64_t fsid, uint64_t ino, uint32_t igen) {
    Handle h;
    h.bytes_ = std::move(bytes);
    h.type_ = type;
    h.fsid_ = fsid;
    h.ino_ = ino;
    h.igen_ = igen;
    return h;
  }
};

Result<Handle> Handle::Parse(std::span<const uint8_t> b) {
  if (b.size() < kHandleHeaderSize) return BadHandle("shorter than the header");
  if (b.size() > kMaxHandleSize) return BadHandle("longer than kMaxHandleSize");
  if (GetLe(b.data(), 4) != kHandleMagic) return BadHandle("bad magic");
  if (b[4] != kHandleVersion) return BadHandle("unknown version");
  uint8_t type = b[5];
  if (type != uint8_t(HandleType::kFs) && type != uint8_t(HandleType::kFile)) return BadHandle("unknown type");
  uint64_t fsid = GetLe(b.data() + 6, 8);
  uint64_t ino = GetLe(b.data() + 14, 8);
  uint32_t igen = static_cast<uint32_t>(GetLe(b.data() + 22, 4));
  if (type == uint8_t(HandleType::kFs)) {
    if (b.size() != kHandleHeaderSize) return BadHandle("fs handle with a kernel part");
    if (ino != 0 || igen != 0) return BadHandle("fs handle with an inode");
  } else if (b.size() != kHandleHeaderSize && b.size() < kHandleHeaderSize + 4 + 1) {
    // A kernel part is a 4-byte handle_type plus at least one f_handle byte.
    return BadHandle("truncated kernel part");
  } else if (b.size() > kHandleHeaderSize) {
    // The kernel part's length is implied by hlen. For the generic Linux
    // handle types (include/linux/exportfs.h, stable ABI) the f_handle size
    // is fixed, so a truncated or padded handle is caught here rather than
    // at open_by_handle_at; other types (file-system specific) are left to
    // Open's cross-check.
    const int32_t ktype = static_cast<int32_t>(GetLe(b.data() + kHandleHeaderSize, 4));
    const size_t fh_bytes = b.size() - kHandleHeaderSize - 4;
    size_t want = 0;
    switch (ktype) {
      case 1: want = 8; break;      // FILEID_INO32_GEN
      case 2: want = 16; break;     // FILEID_INO32_GEN_PARENT
      case 0x81: want = 12; break;  // FILEID_INO64_GEN
      case 0x82: want = 24; break;  // FILEID_INO64_GEN_PARENT
      default: break;
    }
    if (want != 0 && fh_bytes != want) return BadHandle("kernel part of the wrong length for its handle type");
  }
  return HandleBuilder::Build(std::vector<uint8_t>(b.begin(), b.end()), HandleType(type), fsid, ino, igen);
}

std::string Handle::ToHex() const {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes_.size() * 2);
  for (uint8_t c : bytes_) {
    s.push_back(kDigits[c >> 4]);
    s.push_back(kDigits[c & 15]);
  }
  return s;
}

bool IsValid(std::span<const uint8_t> bytes) { return Handle::Parse(bytes).ok(); }

int Compare(const Handle& a, const Handle& b) {
  auto cmp = [](auto x, auto y) { return x < y ? -1 : (x > y ? 1 : 0); };
  if (int c = cmp(uint8_t(a.type()), uint8_t(b.type()))) return c;
  if (int c = cmp(a.fsid(), b.fsid())) return c;
  if (int c = cmp(a.ino(), b.ino())) return c;
  return cmp(a.igen(), b.igen());
}

uint64_t Hash(const Handle& h) {
  // Hash the identity header only (never the kernel part) so Hash agrees with
  // Compare; the header is already little-endian, hence node-independent.
  std::vector<uint8_t> id;
  AppendHeader(id, h.type(), h.fsid(), h.ino(), h.igen());
  return XXH64(id.data(), id.size(), 0);
}

Handle MakeHandle(uint64_t fsid, uint64_t ino, uint32_t igen) {
  std::vector<uint8_t> b;
  AppendHeader(b, HandleType::kFile, fsid, ino, igen);
  return HandleBuilder::Build(std::move(b), HandleType::kFile, fsid, ino, igen);
}

Handle MakeFsHandle(uint64_t fsid) {
  std::vector<uint8_t> b;
  AppendHeader(b, HandleType::kFs, fsid, 0, 0);
  return HandleBuilder::Build(std::move(b), HandleType::kFs, fsid, 0, 0);
}

Handle HandleToFsHandle(const Handle& h) { return MakeFsHandle(h.fsid()); }

Result<uint64_t> FsidOfFd(int fd) {
  struct statfs sfs;
  if (::fstatfs(fd, &sfs) != 0) return PosixError("fstatfs", "fd " + std::to_string(fd), errno);
  return FsidFromStatfs(sfs);
}

namespace {

// name_to_handle_at(dirfd, name, flags) plus the identity fields from the
// object itself. `obj` is an fd on the same object, used for fstat/fstatfs and
// the generation.
Result<Handle> BuildFileHandle(int dirfd, const char* name, int at_flags, int obj, const std::string& what) {
  struct stat st;
  if (::fstat(obj, &st) != 0) return PosixError("fstat", what, errno);
  PDM_ASSIGN_OR_RETURN(uint64_t fsid, FsidOfFd(obj));
  uint32_t igen = GenerationOf(obj, st);

  alignas(struct file_handle) uint8_t storage[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  auto* fh = reinterpret_cast<struct file_handle*>(storage);
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(dirfd, name, fh, &mount_id, at_flags) != 0)
    return PosixError("name_to_handle_at", what, errno);
  if (fh->handle_bytes == 0 || fh->handle_bytes > MAX_HANDLE_SZ)
    return Internal("name_to_handle_at(" + what + "): kernel handle size out of range");

  std::vector<uint8_t> b;
  b.reserve(kHandleHeaderSize + 4 + fh->handle_bytes);
  AppendHeader(b, HandleType::kFile, fsid, st.st_ino, igen);
  PutLe(b, static_cast<uint32_t>(fh->handle_type), 4);
  b.insert(b.end(), fh->f_handle, fh->f_handle + fh->handle_bytes);
  return HandleBuilder::Build(std::move(b), HandleType::kFile, fsid, st.st_ino, igen);
}

}  // namespace

Result<Handle> FdToHandle(int fd) {
  return BuildFileHandle(fd, "", AT_EMPTY_PATH, fd, "fd " + std::to_string(fd));
}

Result<Handle> PathToHandle(const std::string& path) {
  // O_PATH: no side effects on FIFOs/devices, and works without read access.
  UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open", path, errno);
  return BuildFileHandle(fd.get(), "", AT_EMPTY_PATH, fd.get(), path);
}

Result<Handle> HandleAt(int dirfd, const std::string& name) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return PosixError("openat", name, errno);
  // The kernel part comes from the fd too, so a rename between the two calls
  // cannot pair one inode's header with another inode's kernel handle.
  return BuildFileHandle(fd.get(), "", AT_EMPTY_PATH, fd.get(), name);
}

Result<Handle> PathToFsHandle(const std::string& path) {
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) != 0) return PosixError("statfs", path, errno);
  return MakeFsHandle(FsidFromStatfs(sfs));
}

Result<UniqueFd> Open(const Handle& h, int mount_fd, int flags) {
  PDM_ASSIGN_OR_RETURN(uint64_t fsid, FsidOfFd(mount_fd));
  if (fsid != h.fsid()) return BadHandle("belongs to another file system than mount_fd");
  if (h.type() == HandleType::kFs) {
    UniqueFd fd(::openat(mount_fd, ".", flags | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) return PosixError("openat", "fs handle root", errno);
    return fd;
  }
  if (!h.has_kernel_part()) return BadHandle("has no kernel part (made by MakeHandle); cannot be opened");

  auto b = h.bytes();
  size_t kbytes = b.size() - kHandleHeaderSize - 4;
  alignas(struct file_handle) uint8_t storage[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  auto* fh = reinterpret_cast<struct file_handle*>(storage);
  fh->handle_bytes = static_cast<unsigned>(kbytes);
  fh->handle_type = static_cast<int>(static_cast<uint32_t>(GetLe(b.data() + kHandleHeaderSize, 4)));
  std::memcpy(fh->f_handle, b.data() + kHandleHeaderSize + 4, kbytes);

  UniqueFd fd(::open_by_handle_at(mount_fd, fh, flags | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open_by_handle_at", h.ToHex(), errno);

  // The header and the kernel part are only bound together by whoever wrote
  // the bytes; check them against each other so that a corrupted header (or a
  // kernel part spliced from another handle) is rejected instead of silently
  // opening a different inode than the one the caller's tables refer to.
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return PosixError("fstat", h.ToHex(), errno);
  if (static_cast<uint64_t>(st.st_ino) != h.ino()) return BadHandle("header inode does not match the kernel handle");
  if (h.igen() != 0 && GenerationOf(fd.get(), st) != h.igen())
    return BadHandle("header generation does not match the kernel handle");
  return fd;
}

Result<std::string> HandleToPath(const Handle& h, const std::string& mount_path) {
  // Not O_PATH: open_by_handle_at rejects an O_PATH mount_fd with EBADF.
  UniqueFd mnt(::open(mount_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!mnt.valid()) return PosixError("open", mount_path, errno);
  PDM_ASSIGN_OR_RETURN(UniqueFd fd, Open(h, mnt.get(), O_PATH));

  std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
  char buf[4096];
  ssize_t n = ::readlink(proc.c_str(), buf, sizeof(buf));
  if (n < 0) return PosixError("readlink", proc, errno);
  if (static_cast<size_t>(n) >= sizeof(buf)) return ResourceExhausted("HandleToPath: path too long", ENAMETOOLONG);
  std::string path(buf, static_cast<size_t>(n));

  // Never hand back a path that does not lead to the object: an unlinked file
  // reads back as "... (deleted)", and a disconnected dentry can read back as
  // a name relative to the file system root rather than to mount_path.
  struct stat want, got;
  if (::fstat(fd.get(), &want) != 0) return PosixError("fstat", proc, errno);
  if (::lstat(path.c_str(), &got) != 0 || got.st_ino != want.st_ino || got.st_dev != want.st_dev)
    return NotFound("HandleToPath: no path to " + h.ToHex() + " under " + mount_path);
  return path;
}

}  // namespace pdm::dm
