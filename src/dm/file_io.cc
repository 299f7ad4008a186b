#include "dm/file_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_set>

#include "common/posix.h"

namespace pdm::dm {

namespace {

std::string FdName(int fd) { return "fd " + std::to_string(fd); }

bool SameTime(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

uint64_t RoundUp(uint64_t v, uint64_t align) { return (v + align - 1) / align * align; }

}  // namespace

// ---- invisible I/O ----------------------------------------------------------

Result<size_t> ReadInvisible(int fd, uint64_t off, std::span<uint8_t> buf) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return PosixError("fcntl(F_GETFL)", FdName(fd), errno);
  // With O_NOATIME the kernel never touches atime, so there is nothing to
  // restore and no ctime change.
  const bool restore = !(fl & O_NOATIME);
  struct stat before;
  if (restore && ::fstat(fd, &before) != 0) return PosixError("fstat", FdName(fd), errno);

  size_t done = 0;
  Status st;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      st = PosixError("pread", FdName(fd), errno);
      break;
    }
    if (n == 0) break;  // EOF
    done += static_cast<size_t>(n);
  }

  if (restore) {
    struct stat after;
    // Only write the inode back if atime actually moved (relatime often
    // leaves it alone), to avoid a needless ctime change.
    if (::fstat(fd, &after) == 0 && !SameTime(after.st_atim, before.st_atim)) {
      timespec times[2] = {before.st_atim, {0, UTIME_OMIT}};
      if (::futimens(fd, times) != 0 && st.ok()) st = PosixError("futimens", FdName(fd), errno);
    }
  }
  if (!st.ok()) return st;
  return done;
}

namespace {
// Write-back starts per aligned window, not per call: measured on ext4 (8
// writers, 1 MiB calls, 1 GiB), starting it after every 1 MiB call took 3.4
// to 5.4 s, never starting it 1.7 to 3.8 s, and per 8 MiB window 1.5 to 1.8 s
// (sync included). Small windows make small, interleaved I/Os.
constexpr uint64_t kWritebackWindow = 8u << 20;
}  // namespace

Result<size_t> WriteInvisible(int fd, uint64_t off, std::span<const uint8_t> buf, bool sync) {
  struct stat before;
  if (::fstat(fd, &before) != 0) return PosixError("fstat", FdName(fd), errno);

  size_t done = 0;
  Status st;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      st = PosixError("pwrite", FdName(fd), errno);
      break;
    }
    done += static_cast<size_t>(n);
  }

  // Start write-back of each aligned window this write completes (a hint;
  // fsync reports errors). An HSM recall writes a file in slices from several
  // threads, each thread in order, and syncs it at the end; without this the
  // kernel would hold all of it dirty until then, and the recall would cost
  // reading plus writing instead of the larger.
  if (!sync && done > 0) {
    const uint64_t first = off / kWritebackWindow * kWritebackWindow;             // the window it starts in
    const uint64_t last = (off + done) / kWritebackWindow * kWritebackWindow;     // the highest boundary reached
    if (last > off)  // it completes the windows [first, last)
      (void)::sync_file_range(fd, static_cast<off_t>(first), static_cast<off_t>(last - first), SYNC_FILE_RANGE_WRITE);
  }

  // Restore even after a partial failure: the bytes that did land moved mtime.
  timespec times[2] = {before.st_atim, before.st_mtim};
  if (::futimens(fd, times) != 0 && st.ok()) st = PosixError("futimens", FdName(fd), errno);
  // fsync after futimens so that, with sync, the restored times are durable
  // together with the data.
  if (sync && st.ok() && ::fsync(fd) != 0) st = PosixError("fsync", FdName(fd), errno);
  if (!st.ok()) return st;
  return done;
}

// ---- holes ------------------------------------------------------------------

Result<uint64_t> AllocBlockSize(int fd) {
  struct statvfs sv;
  if (::fstatvfs(fd, &sv) != 0) return PosixError("fstatvfs", FdName(fd), errno);
  uint64_t b = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
  if (b == 0 || (b & (b - 1)) != 0) return Internal("file system reports a non-power-of-two block size");
  return b;
}

namespace {

struct HoleGeometry {
  HoleRange range;
  uint64_t size;
  uint64_t block;
};

Result<HoleGeometry> ComputeHole(int fd, uint64_t off, uint64_t len) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return PosixError("fstat", FdName(fd), errno);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("hole: not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (off + len < off || off + len > size) return InvalidArgument("hole: range extends beyond end of file", E2BIG);
  PDM_ASSIGN_OR_RETURN(uint64_t align, AllocBlockSize(fd));

  HoleRange r;
  r.offset = RoundUp(off, align);
  if (r.offset >= size || (len != 0 && len < align)) return InvalidArgument("hole: range smaller than a block");
  if (len == 0 || off + len == size) {
    r.length = 0;  // to end of file
  } else {
    uint64_t rest = len - (r.offset - off);
    r.length = rest - rest % align;
    if (r.length == 0) return InvalidArgument("hole: range rounds to nothing");
  }
  return HoleGeometry{r, size, align};
}

}  // namespace

Result<HoleRange> ProbeHole(int fd, uint64_t off, uint64_t len) {
  PDM_ASSIGN_OR_RETURN(HoleGeometry g, ComputeHole(fd, off, len));
  return g.range;
}

Status PunchHole(int fd, uint64_t off, uint64_t len) {
  PDM_ASSIGN_OR_RETURN(HoleGeometry g, ComputeHole(fd, off, len));
  if (g.range.offset != off) return InvalidArgument("punch: offset not block aligned (see ProbeHole)");
  uint64_t punch_len;
  if (g.range.length == 0) {
    // To EOF: cover the partial last block too, so it is freed, not zeroed.
    punch_len = RoundUp(g.size - off, g.block);
  } else {
    if (g.range.length != len) return InvalidArgument("punch: length not block aligned (see ProbeHole)");
    punch_len = len;
  }
  // Invisible, like dm_write_invis: the file keeps its times. An HSM
  // compares mtime with its archive copy's, and users' tools (backups,
  // purges by age) must not see a release as a change.
  struct stat before;
  if (::fstat(fd, &before) != 0) return PosixError("fstat", FdName(fd), errno);
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(punch_len)) != 0)
    return PosixError("fallocate(PUNCH_HOLE)", FdName(fd), errno);
  timespec times[2] = {before.st_atim, before.st_mtim};
  if (::futimens(fd, times) != 0) return PosixError("futimens", FdName(fd), errno);
  return Status::Ok();
}

// ---- allocation map -----------------------------------------------------

Result<AllocBatch> AllocInfo(int fd, uint64_t start_off, size_t max_extents) {
  if (max_extents == 0) return InvalidArgument("AllocInfo: max_extents is 0");
  struct stat st;
  if (::fstat(fd, &st) != 0) return PosixError("fstat", FdName(fd), errno);
  if (!S_ISREG(st.st_mode)) return InvalidArgument("AllocInfo: not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);

  // SEEK_DATA/SEEK_HOLE move the file offset, which callers may share; put it
  // back afterwards.
  off_t saved = ::lseek(fd, 0, SEEK_CUR);
  if (saved < 0) return PosixError("lseek(SEEK_CUR)", FdName(fd), errno);

  AllocBatch out;
  uint64_t pos = start_off;
  Status status;
  while (pos < size && out.extents.size() < max_extents) {
    off_t d = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    uint64_t data;
    if (d < 0) {
      if (errno != ENXIO) {
        status = PosixError("lseek(SEEK_DATA)", FdName(fd), errno);
        break;
      }
      data = size;  // nothing but hole up to EOF
    } else {
      data = std::min<uint64_t>(static_cast<uint64_t>(d), size);
    }
    if (data > pos) {
      out.extents.push_back({ExtentType::kHole, pos, data - pos});
      pos = data;
      continue;
    }
    off_t h = ::lseek(fd, static_cast<off_t>(pos), SEEK_HOLE);
    if (h < 0) {
      status = PosixError("lseek(SEEK_HOLE)", FdName(fd), errno);
      break;
    }
    uint64_t hole = std::min<uint64_t>(static_cast<uint64_t>(h), size);
    if (hole <= pos) {  // file shrank under us
      break;
    }
    out.extents.push_back({ExtentType::kResident, pos, hole - pos});
    pos = hole;
  }
  if (::lseek(fd, saved, SEEK_SET) < 0 && status.ok()) status = PosixError("lseek(SEEK_SET)", FdName(fd), errno);
  if (!status.ok()) return status;
  out.next_offset = std::max(pos, start_off);
  out.more = pos < size;
  return out;
}

// ---- file attributes --------------------------------------------------------

FileAttr FromStat(const struct stat& st) {
  FileAttr a;
  a.dev = st.st_dev;
  a.ino = st.st_ino;
  a.mode = st.st_mode;
  a.nlink = st.st_nlink;
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = st.st_rdev;
  a.size = static_cast<uint64_t>(st.st_size);
  a.blksize = static_cast<uint64_t>(st.st_blksize);
  a.blocks = static_cast<uint64_t>(st.st_blocks);
  a.atime = st.st_atim;
  a.mtime = st.st_mtim;
  a.ctime = st.st_ctim;
  return a;
}

Result<FileAttr> GetFileAttr(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return PosixError("fstat", FdName(fd), errno);
  return FromStat(st);
}

Status SetFileAttr(int fd, uint32_t mask, const FileAttr& v) {
  if (mask & ~kSetAllBits) return InvalidArgument("SetFileAttr: unknown mask bits");
  if (mask & kSetSize) {
    if (v.size > static_cast<uint64_t>(INT64_MAX)) return InvalidArgument("SetFileAttr: size too large", EFBIG);
    if (::ftruncate(fd, static_cast<off_t>(v.size)) != 0) return PosixError("ftruncate", FdName(fd), errno);
  }
  if (mask & (kSetUid | kSetGid)) {
    uid_t uid = (mask & kSetUid) ? v.uid : static_cast<uid_t>(-1);
    gid_t gid = (mask & kSetGid) ? v.gid : static_cast<gid_t>(-1);
    if (::fchown(fd, uid, gid) != 0) return PosixError("fchown", FdName(fd), errno);
  }
  if (mask & kSetMode) {
    if (::fchmod(fd, v.mode & 07777) != 0) return PosixError("fchmod", FdName(fd), errno);
  }
  if (mask & (kSetAtime | kSetMtime)) {
    timespec times[2] = {(mask & kSetAtime) ? v.atime : timespec{0, UTIME_OMIT},
                         (mask & kSetMtime) ? v.mtime : timespec{0, UTIME_OMIT}};
    if (::futimens(fd, times) != 0) return PosixError("futimens", FdName(fd), errno);
  }
  return Status::Ok();
}

Status SyncFile(int fd) {
  if (::fsync(fd) != 0) return PosixError("fsync", FdName(fd), errno);
  return Status::Ok();
}

// ---- directory iteration ------------------------------------------------

namespace {

bool IsDots(const char* n) { return n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0)); }

// One getdents64 record, as the kernel lays it out.
struct Dirent64View {
  uint64_t ino;
  int64_t off;
  const char* name;
};

class DirReader {
 public:
  explicit DirReader(int fd) : fd_(fd) {}
  // Next record; false at end of directory. Errors via status().
  bool Next(Dirent64View* out) {
    if (pos_ >= len_) {
      ssize_t n = ::getdents64(fd_, buf_, sizeof(buf_));
      if (n < 0) {
        status_ = PosixError("getdents64", FdName(fd_), errno);
        return false;
      }
      if (n == 0) return false;
      len_ = static_cast<size_t>(n);
      pos_ = 0;
    }
    auto* d = reinterpret_cast<const struct dirent64*>(buf_ + pos_);
    out->ino = d->d_ino;
    out->off = d->d_off;
    out->name = d->d_name;
    pos_ += d->d_reclen;
    return true;
  }
  // True if another record is available without consuming it from the
  // caller's point of view (reads ahead into the buffer).
  bool HasMore() {
    if (pos_ < len_) return true;
    ssize_t n = ::getdents64(fd_, buf_, sizeof(buf_));
    if (n <= 0) return false;
    len_ = static_cast<size_t>(n);
    pos_ = 0;
    return true;
  }
  const Status& status() const { return status_; }

 private:
  int fd_;
  alignas(struct dirent64) char buf_[32768];
  size_t len_ = 0;
  size_t pos_ = 0;
  Status status_;
};

}  // namespace

Result<DirBatch> ReadDir(int dirfd, uint64_t cookie, size_t max_entries, const DirOptions& opts) {
  if (max_entries == 0) return InvalidArgument("ReadDir: max_entries is 0");
  // A private open file description, so dirfd's offset is not disturbed and
  // concurrent ReadDir calls on one dirfd do not interfere.
  UniqueFd d(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid()) return PosixError("openat", "directory " + FdName(dirfd), errno);
  if (cookie != 0 && ::lseek(d.get(), static_cast<off_t>(cookie), SEEK_SET) < 0)
    return PosixError("lseek", "directory cookie " + std::to_string(cookie), errno);

  DirBatch out;
  out.next_cookie = cookie;
  auto reader = std::make_unique<DirReader>(d.get());
  Dirent64View e;
  while (out.entries.size() < max_entries) {
    if (!reader->Next(&e)) {
      if (!reader->status().ok()) return reader->status();
      out.done = true;
      return out;
    }
    // Advance past this record whatever happens to it below.
    out.next_cookie = static_cast<uint64_t>(e.off);
    if (!opts.include_dots && IsDots(e.name)) continue;
    struct stat st;
    if (::fstatat(d.get(), e.name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // removed since readdir
      return PosixError("fstatat", e.name, errno);
    }
    auto h = HandleAt(d.get(), e.name);
    if (!h.ok()) {
      if (h.status().err() == ENOENT) continue;
      return h.status();
    }
    out.entries.push_back(DirEntry{e.name, static_cast<uint64_t>(st.st_ino), FromStat(st), std::move(h).value()});
  }
  out.done = !reader->HasMore();
  return out;
}

// ---- whole-file-system scan ---------------------------------------------

Result<BulkBatch> BulkScan(int mount_fd, uint64_t cookie, size_t max) {
  if (max == 0) return InvalidArgument("BulkScan: max is 0");
  struct stat root;
  if (::fstat(mount_fd, &root) != 0) return PosixError("fstat", "mount " + FdName(mount_fd), errno);
  if (!S_ISDIR(root.st_mode)) return InvalidArgument("BulkScan: mount_fd is not a directory");

  // The `max` smallest inode numbers above the cookie seen so far, with one
  // path each. `more` records that some candidate did not fit.
  std::map<uint64_t, std::string> chosen;
  bool more = false;
  auto consider = [&](uint64_t ino, const std::string& path) {
    if (ino <= cookie || chosen.count(ino)) return;
    if (chosen.size() < max) {
      chosen.emplace(ino, path);
      return;
    }
    more = true;
    if (ino < chosen.rbegin()->first) {
      chosen.erase(std::prev(chosen.end()));
      chosen.emplace(ino, path);
    }
  };

  consider(root.st_ino, ".");
  std::vector<std::string> stack{"."};
  std::unordered_set<uint64_t> visited{static_cast<uint64_t>(root.st_ino)};
  while (!stack.empty()) {
    std::string dir = std::move(stack.back());
    stack.pop_back();
    UniqueFd dfd(::openat(mount_fd, dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dfd.valid()) {
      // Removed or replaced by a non-directory since we saw it: nothing to walk.
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) continue;
      return PosixError("openat", dir, errno);
    }
    // Heap-allocated: the 32 KiB buffer is too big for a frame we may run in
    // a worker thread with a small stack.
    auto reader = std::make_unique<DirReader>(dfd.get());
    Dirent64View e;
    while (reader->Next(&e)) {
      if (IsDots(e.name)) continue;
      // lstat every entry rather than trusting d_ino/d_type: d_ino of a mount
      // point is the covered inode, and we must not leave the file system.
      struct stat st;
      if (::fstatat(dfd.get(), e.name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;
        return PosixError("fstatat", e.name, errno);
      }
      if (st.st_dev != root.st_dev) continue;
      std::string path = dir == "." ? std::string(e.name) : dir + "/" + e.name;
      consider(static_cast<uint64_t>(st.st_ino), path);
      // Directories cannot be hard-linked, so a directory seen twice means a
      // bind mount of this file system inside itself: walk it once.
      if (S_ISDIR(st.st_mode) && visited.insert(static_cast<uint64_t>(st.st_ino)).second)
        stack.push_back(std::move(path));
    }
    if (!reader->status().ok()) return reader->status();
  }

  BulkBatch out;
  out.next_cookie = chosen.empty() ? cookie : chosen.rbegin()->first;
  out.done = !more;
  for (auto& [ino, path] : chosen) {
    // The inode may have been removed or its name reused since the walk; only
    // report what still is that inode.
    struct stat st;
    if (::fstatat(mount_fd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_ino != ino) continue;
    auto h = HandleAt(mount_fd, path);
    if (!h.ok()) {
      if (h.status().err() == ENOENT) continue;
      return h.status();
    }
    if (h->ino() != ino) continue;
    out.entries.push_back(BulkEntry{std::move(h).value(), FromStat(st), path});
  }
  return out;
}

}  // namespace pdm::dm
