// FanotifyGroup: one owned fanotify notification group of class
// FAN_CLASS_PRE_CONTENT, the kernel building block that turns file I/O into
// DM events (Linux 6.14+ "pre-content" or HSM events).
//
// How the kernel behaves (observed on Linux 6.18, ext4; the unit tests in
// tests/unit/fanotify_test.cc prove the points about read, write, truncate,
// mmap, ranges, errnos, the event fd, open-time decision, marks and group
// lifetime; sendfile, fallocate and filesystem marks were seen by hand):
//  * A FAN_PRE_ACCESS mark makes read(2)/pread(2)/sendfile(2), write(2),
//    truncate(2)/ftruncate(2), fallocate(2) and mmap(2) of the file block in
//    the kernel until the group answers. All of them report FAN_PRE_ACCESS;
//    there is no separate "pre-modify" bit, so the agent cannot tell a read
//    from a write by the mask.
//  * The page cache does not hide events: the hook runs before the cache is
//    consulted, so the 1000th read of a cached page raises an event just like
//    the first.
//  * mmap raises ONE event, at mmap(2) time, for the whole mapped range;
//    page faults on the mapping raise none. An agent must therefore fill
//    the whole mapped range before it answers.
//  * Each pre-access event carries a FAN_EVENT_INFO_TYPE_RANGE record. The
//    range is rounded out to whole pages: pread(100 bytes @ 5000) reports
//    4096+4096; truncate to size S reports the page holding S.
//  * The group answers FAN_ALLOW, FAN_DENY (the caller sees EPERM) or
//    FAN_DENY_ERRNO(err) (the caller sees err; pre-content groups only;
//    accepted: EPERM, EIO, EAGAIN, EBUSY, ETXTBSY, ENOSPC, EDQUOT). Any
//    other errno is refused with EINVAL by the response write and the event
//    stays pending (answer it again). Writing a FAN_NOFD response to probe
//    for errno support gets EINVAL for valid and invalid errnos alike on
//    6.18, so it cannot be used as a feature test; use the kernel version.
//  * The fd delivered with an event is opened FMODE_NONOTIFY: I/O through it
//    raises no event, which is how the agent fills a file without deadlocking
//    on itself. Every other fd raises events, including the agent's own: an
//    agent that opens or writes a marked file by path waits on itself.
//  * Whether a file raises pre-content events is decided at open(2): a file
//    opened while no pre-content mark existed on its file system stays silent
//    even after a mark is added. Mark before the application opens.
//  * Only file systems that opt in (ext4 here; not tmpfs) accept pre-content
//    marks (EOPNOTSUPP otherwise). A FAN_CLASS_CONTENT group gets EINVAL.
//    Inode, mount and filesystem marks all work; FAN_REPORT_FID is not
//    required. An ignore mark (FAN_MARK_IGNORE | FAN_MARK_EVICTABLE) with
//    FAN_PRE_ACCESS on one inode silences that inode under a mount mark; a
//    write to the file clears it again unless FAN_MARK_IGNORED_SURV_MODIFY
//    was given too.
//  * When the last reference to the group closes, the kernel answers every
//    pending permission event FAN_ALLOW: the application reads whatever is on
//    disk (for a stub: zeros). An event read but never answered stays
//    pending (its reader blocks, killable) until the group closes, and the
//    kernel matches a response to its event by the fd *number* the reader
//    got. Hence the event supervisor (events/supervisor.h): the group and
//    every unanswered event's fd live in a process that outlives the agent.
//    Also: fork(2) copies the group fd, so a forked child that keeps it also
//    keeps the group alive.
//
// Thread-safety: a FanotifyGroup is a move-only value with one owner. Read and
// Allow/Deny may be called from different threads on the same group (they are
// plain read(2)/write(2) on the group fd), but one thread should read.
#pragma once

#include <fcntl.h>
#include <linux/fanotify.h>
#include <sys/fanotify.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/posix.h"
#include "common/status.h"

// Constants missing from Debian 12's linux-libc-dev (6.1 headers). Values are
// kernel ABI; guarded so newer headers win.

// Linux 6.14: pre-content permission event, raised before file content is
// accessed (read, write, mmap). Needs a FAN_CLASS_PRE_CONTENT group.
#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif

// Linux 6.14: info record carrying the accessed range of a pre-content event.
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
#endif

// Linux 6.14: the errno of a FAN_DENY response lives in the top 8 bits of
// fanotify_response.response; old kernels reject those bits with EINVAL.
#ifndef FAN_ERRNO_BITS
#define FAN_ERRNO_BITS 8
#endif
#ifndef FAN_ERRNO_SHIFT
#define FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)
#endif
#ifndef FAN_ERRNO_MASK
#define FAN_ERRNO_MASK ((1 << FAN_ERRNO_BITS) - 1)
#endif
#ifndef FAN_DENY_ERRNO
#define FAN_DENY_ERRNO(err) (FAN_DENY | ((((__u32)(err)) & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT))
#endif

// Linux 6.13: report a failed event-fd open as -errno in event->fd instead of
// failing read(2) of the group.
#ifndef FAN_REPORT_FD_ERROR
#define FAN_REPORT_FD_ERROR 0x00002000
#endif

namespace pdm::events {

// Layout of struct fanotify_event_info_range (Linux 6.14 uapi). Declared here
// under our own name so it never collides with a newer <linux/fanotify.h>.
struct FanotifyInfoRange {
  fanotify_event_info_header hdr;
  uint32_t pad;
  uint64_t offset;
  uint64_t count;
};
static_assert(sizeof(FanotifyInfoRange) == 24, "kernel ABI: fanotify_event_info_range");

// The byte range an access touches, from the event's range record.
struct FileRange {
  uint64_t offset = 0;
  uint64_t count = 0;
};

// One event read from the group. Owns the event's fd; the kernel matches a
// response to its event by that fd *number*, so answer before the event is
// destroyed. A permission event destroyed unanswered leaves the accessing
// process blocked until the group is closed.
struct FanotifyEvent {
  UniqueFd fd;     // FMODE_NONOTIFY, opened with the group's event_f_flags;
                   // invalid for FAN_Q_OVERFLOW
  // The number the kernel answers this event by: the fd number in the
  // process that read the group. The kernel compares only the number, so any
  // process holding the group may answer with it; the event supervisor
  // forwards events to the agent and the agent answers with this id (its own
  // copy of the fd has another number).
  int id = -1;
  int fd_error = 0;  // errno of a failed fd open (FAN_REPORT_FD_ERROR only)
  uint64_t mask = 0;  // FAN_PRE_ACCESS, FAN_OPEN_PERM, ...
  int32_t pid = 0;    // tgid of the accessing process (tid with FAN_REPORT_TID)
  std::optional<FileRange> range;  // present for pre-content events

  // True when the accessing process waits for Allow/Deny.
  bool NeedsResponse() const;
};

class FanotifyGroup {
 public:
  struct Options {
    // fanotify_init flags. FAN_NONBLOCK lets Read() return an empty batch
    // after poll; a blocking group is fine too (Read polls first unless the
    // timeout is infinite).
    unsigned int init_flags = FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK;
    // open flags of each event fd. O_RDWR because the agent writes the
    // recalled content through it; O_LARGEFILE for files over 2 GiB.
    unsigned int event_f_flags = O_RDWR | O_LARGEFILE | O_CLOEXEC;
  };

  // fanotify_init(2). Needs CAP_SYS_ADMIN. EINVAL on a kernel without the
  // requested flags.
  static Result<FanotifyGroup> Create(const Options& options);
  static Result<FanotifyGroup> Create() { return Create(Options{}); }
  // Takes ownership of a group fd obtained elsewhere (RecvFd). The fd must be
  // a fanotify group; this is not checked beyond validity.
  static Result<FanotifyGroup> Adopt(UniqueFd fd);

  FanotifyGroup(FanotifyGroup&&) noexcept = default;
  FanotifyGroup& operator=(FanotifyGroup&&) noexcept = default;
  FanotifyGroup(const FanotifyGroup&) = delete;
  FanotifyGroup& operator=(const FanotifyGroup&) = delete;
  ~FanotifyGroup() = default;  // closing the fd answers pending events ALLOW

  // fanotify_mark(2) on one inode, resolved as openat(dirfd, path) would
  // (AT_FDCWD for relative-to-cwd; path may be absolute). mask e.g.
  // FAN_PRE_ACCESS. EOPNOTSUPP if the file system has no HSM support.
  Status MarkInode(int dirfd, const std::string& path, uint64_t mask);
  Status UnmarkInode(int dirfd, const std::string& path, uint64_t mask);
  // Marks every file of the mount containing path.
  Status MarkMount(const std::string& path, uint64_t mask);
  Status UnmarkMount(const std::string& path, uint64_t mask);
  // Marks every file of the file system containing path (all its mounts).
  Status MarkFilesystem(const std::string& path, uint64_t mask);
  Status UnmarkFilesystem(const std::string& path, uint64_t mask);
  // Escape hatch for FAN_MARK_IGNORE, FAN_MARK_EVICTABLE and the like: flags
  // are passed to fanotify_mark as given (include FAN_MARK_ADD/REMOVE).
  Status Mark(unsigned int flags, uint64_t mask, int dirfd, const std::string& path);

  // Waits up to timeout (negative: forever; zero: do not wait) for events and
  // returns every event that one read(2) yields. Returns an empty vector when
  // none arrived in time; EINTR is retried.
  Result<std::vector<FanotifyEvent>> Read(std::chrono::milliseconds timeout);

  // Answers a permission event. Deny(err): the accessing syscall fails with
  // err (EPERM is sent as plain FAN_DENY, which every kernel accepts; others
  // need Linux 6.14 and the list above, else InvalidArgument(EINVAL) and the
  // event is still pending).
  Status Allow(const FanotifyEvent& event);
  Status Deny(const FanotifyEvent& event, int err = EPERM);
  // Raw response: response is FAN_ALLOW, FAN_DENY or FAN_DENY_ERRNO(err).
  Status Respond(int event_fd, uint32_t response);

  // The group fd, for epoll. Still owned by this object.
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }

 private:
  explicit FanotifyGroup(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace pdm::events
