// The plumbing of libdmapi: the per-thread connection to the node agent,
// the one place a Status becomes errno, and helpers for the C calling
// conventions (E2BIG with the needed length, handle arguments).
//
// Thread-safety: every thread gets its own LocalClient (a thread blocked in
// dm_get_events(DM_EV_WAIT) must not hold up the thread that answers the
// events), opened on first use and closed when the thread exits.
#pragma once

#include <dmapi.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>

#include "client/local_client.h"
#include "common/status.h"
#include "dm/handle.h"

namespace pdm::dmapi {

// The calling thread's connection; EPERM for non-root, EIO if no agent.
Result<LocalClient*> Client();

// Sets errno from the status (EIO if it carries none) and returns -1.
int Fail(const Status& st);
inline int Fail(int err) {
  errno = err;
  return -1;
}

// Parses a caller's handle argument; EFAULT for NULL, EBADF when malformed.
Result<dm::Handle> ParseHandle(const void* hanp, size_t hlen);
inline bool IsGlobal(const void* hanp, size_t hlen) { return hanp == DM_GLOBAL_HANP && hlen == DM_GLOBAL_HLEN; }

// The session must exist somewhere in the cluster (EINVAL otherwise).
// A confirmed session is remembered for a second (see context.cc).
Status CheckSession(dm_sessid_t sid);
// Drops sid from that memory, and its tokens (dm_destroy_session).
void ForgetSession(dm_sessid_t sid);
// sid was created or assumed by this process: tokens confirmed on it are
// remembered for a second too (dm_create_session).
void OwnSession(dm_sessid_t sid);
// This process answered or moved the token: not valid here any more.
void ForgetToken(dm_sessid_t sid, dm_token_t token);
// A file-level call's (sid, token): sid valid; token DM_NO_TOKEN or
// outstanding on sid at its session node (ESRCH otherwise; see context.cc
// for what is remembered).
Status CheckSessionToken(dm_sessid_t sid, dm_token_t token);

// Opens the object of a handle on this node's file system, through a
// detached clone of its view that no access event covers (see context.cc).
// Returns a descriptor of its own; an open object is remembered for a second
// so repeated calls on one file (invisible I/O in blocks) do not reopen it.
Result<UniqueFd> OpenHandle(const dm::Handle& h, int flags);
// This node's view (mount point) of the file system with that id.
Result<std::string> ViewOf(uint64_t fsid);

// A call on a whole file system: (sid, token) checked, the handle a file
// system handle (EINVAL otherwise), and this node's view of it.
struct FsArg {
  dm::Handle handle;
  std::string view;
};
Result<FsArg> FsHandleArg(dm_sessid_t sid, const void* hanp, size_t hlen, dm_token_t token);

// Copies bytes to a caller's buffer with the XDSM E2BIG convention:
// *rlenp = needed always; E2BIG (nothing copied) if buflen is too small.
int CopyOut(std::span<const uint8_t> src, size_t buflen, void* bufp, size_t* rlenp);

// malloc'ed copy of a handle for the caller (freed by dm_handle_free).
int ReturnHandle(const dm::Handle& h, void** hanpp, size_t* hlenp);

constexpr size_t Align8(size_t n) { return (n + 7) & ~size_t(7); }

// The _link-chained record lists XDSM returns: dm_eventmsg_t,
// dm_dispinfo_t, dm_attrlist_t and dm_stat_t all begin with an int32 _link,
// the offset from this record to the next (0 on the last). Records are
// zeroed and 8-aligned; the caller fills each one after Append.
class LinkedRecords {
 public:
  // Makes room for a record of `size` bytes, links the previous record to
  // it, and returns its offset.
  size_t Append(size_t size) {
    const size_t off = buf_.size();
    buf_.resize(off + Align8(size), 0);
    if (has_last_) {
      const int32_t link = static_cast<int32_t>(off - last_);
      std::memcpy(buf_.data() + last_, &link, sizeof(link));
    }
    last_ = off;
    has_last_ = true;
    return off;
  }
  uint8_t* at(size_t off) { return buf_.data() + off; }
  const std::vector<uint8_t>& bytes() const { return buf_; }

 private:
  std::vector<uint8_t> buf_;
  size_t last_ = 0;
  bool has_last_ = false;
};

}  // namespace pdm::dmapi
