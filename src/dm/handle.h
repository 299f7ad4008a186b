// DM handles: opaque byte strings that name a file system or a file-system
// object, stable across nodes and restarts.
//
// A handle identifies an object by (file system id, inode, generation) and, for
// file handles, also carries the Linux kernel file handle from
// name_to_handle_at(2) so that the object can be reopened with
// open_by_handle_at(2) from any mount of the same file system (bind mounts of
// one file system share kernel handles; NFS-exportable parallel file systems
// do too). The identity fields and the kernel part are written together by
// FdToHandle/PathToHandle; Open() cross-checks them so a forged or corrupted
// handle never opens some other inode.
//
// Wire layout (all integers little-endian, so handles compare byte-for-byte
// between nodes of either byte order):
//
//   off  size  field
//     0     4  magic   'P' 'D' 'M' 'H'
//     4     1  version (kHandleVersion)
//     5     1  type    (HandleType)
//     6     8  fsid    statfs(2) f_fsid as u64 (val[1] << 32 | val[0])
//    14     8  ino
//    22     4  igen    ioctl(FS_IOC_GETVERSION); 0 where unsupported
//    26     4  kernel handle_type (s32)             } file handles made from
//    30     n  kernel f_handle bytes, 1..MAX_HANDLE_SZ  } a live object only
//
// A file-system handle is exactly the 26-byte header with ino = igen = 0.
// A file handle is either the header alone (MakeHandle: usable as an id and
// for comparison, not for Open) or the header plus a kernel part.
//
// Identity: Compare/Hash/operator== look only at (type, fsid, ino, igen). The
// kernel part is how to reach the object, not what it is, so a handle from
// MakeHandle equals the full handle of the same object and hard links yield
// equal handles.
//
// Errors: a malformed or unusable handle is InvalidArgument with errno EBADF,
// the errno LTP expects from DMAPI calls given a bad handle or length (see
// /tmp/xdsm_notes.md section 5); libdmapi may remap.
//
// Thread-safety: Handle is an immutable value; the free functions are
// reentrant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/posix.h"
#include "common/status.h"

namespace pdm::dm {

enum class HandleType : uint8_t {
  kFs = 1,    // a whole file system
  kFile = 2,  // a file, directory, symlink or special file
};

inline constexpr uint32_t kHandleMagic = 0x484D4450;  // "PDMH" read as LE u32
inline constexpr uint8_t kHandleVersion = 1;
inline constexpr size_t kHandleHeaderSize = 26;
// Mirrors MAX_HANDLE_SZ from <fcntl.h>; static_assert'ed in handle.cc.
inline constexpr size_t kMaxKernelHandleBytes = 128;
// Largest handle any function here produces or accepts.
inline constexpr size_t kMaxHandleSize = kHandleHeaderSize + 4 + kMaxKernelHandleBytes;

class Handle {
 public:
  // Validates bytes (magic, version, type, lengths, fs-handle fields) and
  // copies them. Fails with InvalidArgument(EBADF) on any violation.
  static Result<Handle> Parse(std::span<const uint8_t> bytes);

  std::span<const uint8_t> bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }
  HandleType type() const { return type_; }
  uint64_t fsid() const { return fsid_; }
  uint64_t ino() const { return ino_; }
  uint32_t igen() const { return igen_; }
  // True when the handle carries a kernel file handle, i.e. Open() can work.
  bool has_kernel_part() const { return bytes_.size() > kHandleHeaderSize; }
  // Lower-case hex of bytes(), for logs and messages.
  std::string ToHex() const;

 private:
  friend class HandleBuilder;
  Handle() = default;
  std::vector<uint8_t> bytes_;
  HandleType type_ = HandleType::kFile;
  uint64_t fsid_ = 0;
  uint64_t ino_ = 0;
  uint32_t igen_ = 0;
};

// True if bytes would Parse.
bool IsValid(std::span<const uint8_t> bytes);

// Total order on identity (type, fsid, ino, igen): <0, 0, >0.
int Compare(const Handle& a, const Handle& b);
inline bool operator==(const Handle& a, const Handle& b) { return Compare(a, b) == 0; }
inline bool operator<(const Handle& a, const Handle& b) { return Compare(a, b) < 0; }
// XXH64 (seed 0) of the little-endian identity fields: equal handles hash
// equal, on every node and across releases.
uint64_t Hash(const Handle& h);

struct HandleHasher {
  size_t operator()(const Handle& h) const { return static_cast<size_t>(Hash(h)); }
};

inline uint64_t HandleToFsid(const Handle& h) { return h.fsid(); }
inline uint64_t HandleToIno(const Handle& h) { return h.ino(); }
inline uint32_t HandleToIgen(const Handle& h) { return h.igen(); }

// A file handle without a kernel part: valid for comparison, hashing and as a
// table key; Open() on it fails with InvalidArgument(EBADF).
Handle MakeHandle(uint64_t fsid, uint64_t ino, uint32_t igen);
Handle MakeFsHandle(uint64_t fsid);
// The handle of the file system h lives on.
Handle HandleToFsHandle(const Handle& h);

// fsid of the file system holding fd / path (statfs f_fsid as u64).
Result<uint64_t> FsidOfFd(int fd);

// Full file handle of the object fd refers to (any fd, O_PATH included).
Result<Handle> FdToHandle(int fd);
// Full file handle of path. Follows a final symlink, as open(2) would.
Result<Handle> PathToHandle(const std::string& path);
// Full file handle of dirfd/name without following a final symlink: the
// handle of a directory entry as dm_get_dirattrs reports it.
Result<Handle> HandleAt(int dirfd, const std::string& name);
// File-system handle of the file system holding path.
Result<Handle> PathToFsHandle(const std::string& path);

// Opens the object named by h. mount_fd is any non-O_PATH fd on the same file
// system (the mount root, a bind mount of it, any file in it; the kernel
// rejects O_PATH mount fds with EBADF). flags are passed to
// open_by_handle_at (O_CLOEXEC is always added); O_PATH works for any type.
// A file-system handle opens the directory mount_fd refers to.
// Errors: InvalidArgument(EBADF) when h has no kernel part, names a different
// file system than mount_fd, or its kernel part leads to an inode other than
// h.ino()/h.igen(); ESTALE (PosixError) when the object no longer exists;
// EPERM without CAP_DAC_READ_SEARCH.
Result<UniqueFd> Open(const Handle& h, int mount_fd, int flags);

// A path to the object named by h, through the mount at mount_path (so a bind
// mount yields a path under that bind mount). Found by opening h with O_PATH
// and reading /proc/self/fd/N. The result is verified to stat to the same
// inode; when the kernel cannot produce a usable path (object unlinked, or a
// disconnected dentry not under mount_path) the result is NotFound(ENOENT),
// never a wrong path.
Result<std::string> HandleToPath(const Handle& h, const std::string& mount_path);

}  // namespace pdm::dm
