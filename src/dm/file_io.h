// File data and metadata operations of a DM application: invisible I/O,
// holes, allocation maps, file attributes, and directory / whole-file-system
// attribute iteration (dm_read_invis, dm_write_invis, dm_punch_hole,
// dm_probe_hole, dm_get_allocinfo, dm_get_fileattr, dm_set_fileattr,
// dm_sync_by_handle, dm_get_dirattrs, dm_get_bulkattr).
//
// Everything takes an fd (typically from dm::Open on a handle) and works on
// any local or parallel file system with SEEK_DATA/SEEK_HOLE and
// FALLOC_FL_PUNCH_HOLE; nothing here is ext4-specific.
//
// "Invisible" here means timestamps only. Not generating DM events for the
// agent's own I/O is the caller's job: the event source recognises the
// agent's I/O and does not turn it into events (tracked separately).
//
// Thread-safety: reentrant. Timestamp restoration in the *Invisible calls is
// a read-modify-write of the inode's times: a concurrent visible write by
// someone else between our fstat and futimens loses its mtime update, which
// is why callers hold DM_RIGHT_EXCL (writes) or SHARED (reads) on the object.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "dm/handle.h"

namespace pdm::dm {

// ---- invisible I/O ----------------------------------------------------------

// pread of up to buf.size() bytes at off; returns the count (short only at
// EOF). atime is left as it was: callers should open with O_NOATIME (then no
// update happens at all); otherwise the saved atime is put back with futimens,
// which moves ctime.
Result<size_t> ReadInvisible(int fd, uint64_t off, std::span<uint8_t> buf);

// pwrite of all of buf at off (retrying short writes). atime and mtime are put
// back to their values before the write (ctime moves; Linux cannot restore
// it). sync = DM_WRITE_SYNC: the data and metadata are on stable storage
// before return (fdatasync). May extend the file; a write that fails midway
// reports the error, and the bytes already written stay. Without sync, a
// write of 1 MiB or more starts its write-back at once (sync_file_range).
Result<size_t> WriteInvisible(int fd, uint64_t off, std::span<const uint8_t> buf, bool sync);

// ---- holes ------------------------------------------------------------------

// The hole geometry the file system would punch (dm_probe_hole, following
// XFS's xfs_dm_round_hole): offset rounded up and length rounded down to
// the allocation block size. length 0 in the result means "to end of file".
struct HoleRange {
  uint64_t offset = 0;
  uint64_t length = 0;  // 0 = to end of file
};
// len 0 = to end of file. Errors (all XFS-compatible):
//   off + len > file size                → InvalidArgument(E2BIG)
//   not a regular file                   → InvalidArgument(EINVAL)
//   rounded offset at/after EOF, or len  → InvalidArgument(EINVAL)
//   shorter than a block, or rounding to nothing
// A range that ends exactly at EOF is reported as "to end of file".
Result<HoleRange> ProbeHole(int fd, uint64_t off, uint64_t len);

// Frees the blocks of [off, off+len) (len 0 = to end of file); the file size
// never changes and the range reads back as zeros. The range must be exactly
// what ProbeHole returns for it (block aligned), else EINVAL — so a caller
// never frees less than it thinks; a range ending exactly at EOF is also
// accepted (XFS insists on len 0 there). off + len > size → E2BIG. Punching
// to EOF also frees the partial last block and any preallocation past EOF.
// Invisible: atime and mtime are kept (ctime moves, as for every change).
Status PunchHole(int fd, uint64_t off, uint64_t len);

// The allocation block size used for the rounding above (statvfs f_frsize).
Result<uint64_t> AllocBlockSize(int fd);

// ---- allocation map -----------------------------------------------------

enum class ExtentType : uint8_t {
  kResident = 1,  // DM_EXTENT_RES: has data (or at least allocated blocks)
  kHole = 2,      // DM_EXTENT_HOLE: reads as zeros, no blocks
};
struct Extent {
  ExtentType type;
  uint64_t offset;
  uint64_t length;
  friend bool operator==(const Extent&, const Extent&) = default;
};
struct AllocBatch {
  std::vector<Extent> extents;
  uint64_t next_offset = 0;  // where the next call resumes (dm_get_allocinfo *offp)
  bool more = false;         // false: the map up to EOF is complete
};
// Extents from start_off up to EOF, at most max_extents (0 → EINVAL). The
// first extent begins at start_off exactly; extents alternate and together
// cover [start_off, size) without gaps. start_off >= size → empty, more =
// false. Uses SEEK_DATA/SEEK_HOLE, so unwritten (preallocated) extents count
// as holes, matching what a read returns. Resume by passing next_offset.
Result<AllocBatch> AllocInfo(int fd, uint64_t start_off, size_t max_extents);

// ---- file attributes --------------------------------------------------------

// dm_stat_t / dm_fileattr_t content.
struct FileAttr {
  dev_t dev = 0;
  ino_t ino = 0;
  mode_t mode = 0;
  nlink_t nlink = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  dev_t rdev = 0;
  uint64_t size = 0;
  uint64_t blksize = 0;
  uint64_t blocks = 0;  // 512-byte units, as st_blocks
  timespec atime{};
  timespec mtime{};
  timespec ctime{};
};
FileAttr FromStat(const struct stat& st);
Result<FileAttr> GetFileAttr(int fd);

// Mask for SetFileAttr; bits are ours, libdmapi maps DM_AT_*. ctime/dtime are
// not settable on Linux: libdmapi must reject or ignore DM_AT_CTIME/DTIME.
enum SetAttrBits : uint32_t {
  kSetMode = 1u << 0,
  kSetUid = 1u << 1,
  kSetGid = 1u << 2,
  kSetAtime = 1u << 3,
  kSetMtime = 1u << 4,
  kSetSize = 1u << 5,
};
inline constexpr uint32_t kSetAllBits = kSetMode | kSetUid | kSetGid | kSetAtime | kSetMtime | kSetSize;

// Applies the fields of `values` selected by mask, in the order size, owner,
// mode, times — so that a truncate's mtime update and chown's clearing of
// set-id bits do not undo what the caller asked for. Unknown mask bits →
// EINVAL (nothing changed). Not atomic: a failure midway leaves the earlier
// fields applied. A size change without kSetMtime updates mtime as truncate
// does.
Status SetFileAttr(int fd, uint32_t mask, const FileAttr& values);

// fsync: data and metadata on stable storage (dm_sync_by_handle).
Status SyncFile(int fd);

// ---- directory iteration (dm_get_dirattrs) ----------------------------------

struct DirEntry {
  std::string name;
  uint64_t ino = 0;
  FileAttr attr;   // lstat of the entry (symlinks are not followed)
  Handle handle;   // HandleAt(dir, name)
};
struct DirBatch {
  std::vector<DirEntry> entries;
  uint64_t next_cookie = 0;  // pass to the next call (dm_attrloc_t)
  bool done = false;         // no entries after next_cookie
};
struct DirOptions {
  bool include_dots = false;  // report "." and ".."; dm_get_dirattrs users rarely want them
};
// Up to max_entries entries of the directory dirfd (0 → EINVAL), starting at
// cookie (0 = beginning; dm_init_attrloc yields 0).
//
// Cookie (the dm_attrloc_t): the directory offset d_off that getdents64
// reports for the last returned entry, i.e. the file system's own readdir
// cookie (ext4: a 63-bit hash position; what NFS uses across reboots). It is
// stable across calls, opens and nodes, and entries created or removed
// meanwhile do not make others repeat or vanish. dirfd's own offset is not
// touched (we read through a fresh open of the directory). An entry removed
// between readdir and its lstat is skipped.
Result<DirBatch> ReadDir(int dirfd, uint64_t cookie, size_t max_entries, const DirOptions& opts = {});

// ---- whole-file-system scan (dm_get_bulkattr) -------------------------------

struct BulkEntry {
  Handle handle;
  FileAttr attr;
  std::string path;  // one name of the inode, relative to mount_fd ("." for the root)
};
struct BulkBatch {
  std::vector<BulkEntry> entries;  // ascending inode number
  uint64_t next_cookie = 0;
  bool done = false;
};
// Up to max (0 → EINVAL) inodes of the tree under mount_fd, confined to
// mount_fd's file system (other mounts below it are not entered; a directory
// reached twice, e.g. via a bind mount of the same file system, is walked
// once).
//
// Cookie scheme (XFS bulkstat's): the cookie is the last inode number
// returned, 0 to start. Each call walks the tree and returns the `max`
// smallest inode numbers greater than the cookie, each inode once however
// many hard links it has. Resumable at any point, every inode present for
// the whole scan is returned exactly once, and renames during the scan cannot
// cause repeats or omissions (order is by inode, not by position in the
// tree). Cost is one tree walk per call, O(N log max); use a large max on big
// file systems.
Result<BulkBatch> BulkScan(int mount_fd, uint64_t cookie, size_t max);

}  // namespace pdm::dm
