#include "events/fanotify.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace pdm::events {

namespace {

// Large enough for a burst of events: each pre-content event is 24 bytes of
// metadata plus a 24-byte range record. Aligned because the kernel writes
// fanotify_event_metadata (with a u64 member) at the start.
constexpr size_t kReadBufferBytes = 16 * 1024;

Status MarkError(unsigned int flags, uint64_t mask, const std::string& path, int err) {
  std::string what = path + (flags & FAN_MARK_REMOVE ? " remove" : " add") +
                     " mask=0x" + [mask] {
                       char buf[24];
                       std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(mask));
                       return std::string(buf);
                     }();
  return PosixError("fanotify_mark", what, err);
}

// Parses the info records that follow the metadata of one event. Only the
// range record is interpreted; unknown records are skipped by their length, as
// the uapi asks, so a newer kernel adding records does not break us.
Status ParseInfoRecords(const uint8_t* p, size_t len, FanotifyEvent* ev) {
  while (len > 0) {
    if (len < sizeof(fanotify_event_info_header)) {
      return Internal("fanotify: truncated info record header");
    }
    fanotify_event_info_header hdr;
    std::memcpy(&hdr, p, sizeof hdr);
    if (hdr.len < sizeof hdr || hdr.len > len) {
      return Internal("fanotify: info record length out of bounds");
    }
    if (hdr.info_type == FAN_EVENT_INFO_TYPE_RANGE) {
      if (hdr.len < sizeof(FanotifyInfoRange)) return Internal("fanotify: short range record");
      FanotifyInfoRange r;
      std::memcpy(&r, p, sizeof r);
      ev->range = FileRange{r.offset, r.count};
    }
    p += hdr.len;
    len -= hdr.len;
  }
  return Status::Ok();
}

}  // namespace

bool FanotifyEvent::NeedsResponse() const {
  constexpr uint64_t kPermEvents = FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM |
                                   FAN_PRE_ACCESS;
  return (mask & kPermEvents) != 0;
}

Result<FanotifyGroup> FanotifyGroup::Create(const Options& options) {
  int fd = ::fanotify_init(options.init_flags, options.event_f_flags);
  if (fd < 0) return PosixError("fanotify_init", "pre-content group", errno);
  return FanotifyGroup(UniqueFd(fd));
}

Result<FanotifyGroup> FanotifyGroup::Adopt(UniqueFd fd) {
  if (!fd.valid()) return InvalidArgument("FanotifyGroup::Adopt: invalid fd", EBADF);
  return FanotifyGroup(std::move(fd));
}

Status FanotifyGroup::Mark(unsigned int flags, uint64_t mask, int dirfd, const std::string& path) {
  if (::fanotify_mark(fd_.get(), flags, mask, dirfd, path.c_str()) != 0) {
    return MarkError(flags, mask, path, errno);
  }
  return Status::Ok();
}

Status FanotifyGroup::MarkInode(int dirfd, const std::string& path, uint64_t mask) {
  return Mark(FAN_MARK_ADD | FAN_MARK_INODE, mask, dirfd, path);
}
Status FanotifyGroup::UnmarkInode(int dirfd, const std::string& path, uint64_t mask) {
  return Mark(FAN_MARK_REMOVE | FAN_MARK_INODE, mask, dirfd, path);
}
Status FanotifyGroup::MarkMount(const std::string& path, uint64_t mask) {
  return Mark(FAN_MARK_ADD | FAN_MARK_MOUNT, mask, AT_FDCWD, path);
}
Status FanotifyGroup::UnmarkMount(const std::string& path, uint64_t mask) {
  return Mark(FAN_MARK_REMOVE | FAN_MARK_MOUNT, mask, AT_FDCWD, path);
}
Status FanotifyGroup::MarkFilesystem(const std::string& path, uint64_t mask) {
  return Mark(FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, path);
}
Status FanotifyGroup::UnmarkFilesystem(const std::string& path, uint64_t mask) {
  return Mark(FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, path);
}

Result<std::vector<FanotifyEvent>> FanotifyGroup::Read(std::chrono::milliseconds timeout) {
  std::vector<FanotifyEvent> events;
  // Poll unless the caller waits forever: on a blocking group an infinite
  // wait is just read(2), which saves a syscall on the hot path.
  if (timeout.count() >= 0) {
    pollfd pfd{fd_.get(), POLLIN, 0};
    const int64_t deadline = MonotonicNs() + timeout.count() * 1000000;
    for (;;) {
      int64_t left_ms = (deadline - MonotonicNs() + 999999) / 1000000;
      int n = ::poll(&pfd, 1, static_cast<int>(left_ms < 0 ? 0 : left_ms));
      if (n > 0) break;
      if (n == 0) return events;
      if (errno != EINTR) return PosixError("poll", "fanotify group", errno);
    }
  }

  alignas(fanotify_event_metadata) uint8_t buf[kReadBufferBytes];
  ssize_t len;
  do {
    len = ::read(fd_.get(), buf, sizeof buf);
  } while (len < 0 && errno == EINTR);
  if (len < 0) {
    if (errno == EAGAIN) return events;  // nonblocking group, raced with another reader
    return PosixError("read", "fanotify group", errno);
  }

  size_t off = 0;
  const size_t total = static_cast<size_t>(len);
  while (total - off >= sizeof(fanotify_event_metadata)) {
    fanotify_event_metadata meta;
    std::memcpy(&meta, buf + off, sizeof meta);
    if (meta.event_len < sizeof meta || meta.event_len > total - off ||
        meta.metadata_len < sizeof meta || meta.metadata_len > meta.event_len) {
      return Internal("fanotify: malformed event metadata");
    }
    if (meta.vers != FANOTIFY_METADATA_VERSION) {
      // Close any fd already handed to us so nothing leaks, then give up:
      // a different version means a different layout.
      if (meta.fd >= 0) ::close(meta.fd);
      return Internal("fanotify: unexpected metadata version");
    }
    FanotifyEvent ev;
    ev.mask = meta.mask;
    ev.pid = meta.pid;
    if (meta.fd >= 0) {
      ev.fd = UniqueFd(meta.fd);
      ev.id = meta.fd;
    } else if (meta.fd != FAN_NOFD) {
      ev.fd_error = -meta.fd;  // FAN_REPORT_FD_ERROR
    }
    // Take ownership of the fd before parsing so an error below closes it.
    events.push_back(std::move(ev));
    PDM_RETURN_IF_ERROR(ParseInfoRecords(buf + off + meta.metadata_len,
                                         meta.event_len - meta.metadata_len, &events.back()));
    off += meta.event_len;
  }
  return events;
}

Status FanotifyGroup::Respond(int event_fd, uint32_t response) {
  fanotify_response r{};
  r.fd = event_fd;
  r.response = response;
  ssize_t n;
  do {
    n = ::write(fd_.get(), &r, sizeof r);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PosixError("write", "fanotify response", errno);
  if (static_cast<size_t>(n) != sizeof r) return Internal("fanotify: short response write");
  return Status::Ok();
}

Status FanotifyGroup::Allow(const FanotifyEvent& event) {
  return Respond(event.id >= 0 ? event.id : event.fd.get(), FAN_ALLOW);
}

Status FanotifyGroup::Deny(const FanotifyEvent& event, int err) {
  // Plain FAN_DENY already means EPERM and works on every kernel.
  uint32_t response = err == EPERM ? FAN_DENY : FAN_DENY_ERRNO(err);
  return Respond(event.id >= 0 ? event.id : event.fd.get(), response);
}

}  // namespace pdm::events
