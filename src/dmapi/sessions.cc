// libdmapi: sessions, events, messages, dispositions, event lists and rights
// — the calls that go to the node agent. Each is a thin adapter: check the C
// arguments, call LocalClient, translate the Status to errno (context.h).
#include <dmapi.h>
#include <fcntl.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "dm/attrs.h"
#include "dmapi/context.h"

using namespace pdm;
using namespace pdm::dmapi;

namespace {

constexpr size_t kMaxMessageData = 65536;  // DM_CONFIG_MAX_MESSAGE_DATA

// Appends one event message (header, then the payload as ev_data).
void AppendMessage(const QueuedEvent& e, LinkedRecords& out) {
  const size_t at = out.Append(sizeof(dm_eventmsg_t) + e.payload.size());
  dm_eventmsg_t m{};
  m.ev_type = static_cast<dm_eventtype_t>(e.type);
  m.ev_token = e.token;  // 0 (DM_INVALID_TOKEN) for asynchronous events
  m.ev_sequence = e.sequence;
  m.ev_data.vd_offset = static_cast<int>(sizeof(dm_eventmsg_t));
  m.ev_data.vd_length = static_cast<unsigned>(e.payload.size());
  m.ev_nodeid = e.raiser < 0 ? PDM_DMAPI_NO_NODEID : static_cast<dm_nodeid_t>(e.raiser);
  std::memcpy(out.at(at), &m, sizeof(m));
  if (!e.payload.empty()) std::memcpy(out.at(at) + sizeof(m), e.payload.data(), e.payload.size());
}

// The file system id of a disposition / event-list handle argument:
// 0 for the global handle.
Result<uint64_t> FsidArg(void* hanp, size_t hlen, bool allow_global) {
  if (IsGlobal(hanp, hlen)) {
    if (!allow_global) return InvalidArgument("the global handle is not valid here");
    return uint64_t(0);
  }
  PDM_ASSIGN_OR_RETURN(dm::Handle h, ParseHandle(hanp, hlen));
  if (h.type() != dm::HandleType::kFs) return InvalidArgument("not a file system handle");
  return h.fsid();
}

Result<dm_eventset_t> MaskArg(const dm_eventset_t* eventsetp, unsigned maxevent) {
  if (eventsetp == nullptr) return InvalidArgument("NULL event set", EFAULT);
  if (maxevent == 0 || maxevent > DM_EVENT_MAX) return InvalidArgument("maxevent out of range");
  dm_eventset_t mask = *eventsetp;
  if (maxevent < 64) mask &= (dm_eventset_t(1) << maxevent) - 1;
  return mask;
}

// XDSM: a set call with maxevent changes only the events below maxevent;
// those at or above it keep their current state.
dm_eventset_t MergeBelow(dm_eventset_t current, dm_eventset_t requested, unsigned maxevent) {
  if (maxevent >= 64) return requested;
  const dm_eventset_t below = (dm_eventset_t(1) << maxevent) - 1;
  return (current & ~below) | (requested & below);
}

constexpr dm_eventset_t Bit(dm_eventtype_t e) { return dm_eventset_t(1) << e; }

// Events a disposition may name on a file system handle. DM_EVENT_USER is a
// pdm extension: it routes dm_send_msg-less user events raised by a node
// agent (the HSM's requests) to the session holding it.
constexpr dm_eventset_t kFsDispEvents =
    Bit(DM_EVENT_PREUNMOUNT) | Bit(DM_EVENT_UNMOUNT) | Bit(DM_EVENT_NOSPACE) | Bit(DM_EVENT_DEBUT) |
    Bit(DM_EVENT_CREATE) | Bit(DM_EVENT_POSTCREATE) | Bit(DM_EVENT_REMOVE) | Bit(DM_EVENT_POSTREMOVE) |
    Bit(DM_EVENT_RENAME) | Bit(DM_EVENT_POSTRENAME) | Bit(DM_EVENT_LINK) | Bit(DM_EVENT_POSTLINK) |
    Bit(DM_EVENT_SYMLINK) | Bit(DM_EVENT_POSTSYMLINK) | Bit(DM_EVENT_READ) | Bit(DM_EVENT_WRITE) |
    Bit(DM_EVENT_TRUNCATE) | Bit(DM_EVENT_ATTRIBUTE) | Bit(DM_EVENT_DESTROY) | Bit(DM_EVENT_CLOSE) |
    Bit(DM_EVENT_USER);

// Rights are kept per object identity (fsid, ino, igen), not per handle
// encoding, so two handles of one file lock the same thing.
Result<std::string> RightKey(void* hanp, size_t hlen) {
  if (IsGlobal(hanp, hlen)) return InvalidArgument("no rights on the global handle");
  PDM_ASSIGN_OR_RETURN(dm::Handle h, ParseHandle(hanp, hlen));
  return std::to_string(static_cast<int>(h.type())) + ":" + std::to_string(h.fsid()) + ":" +
         std::to_string(h.ino()) + ":" + std::to_string(h.igen());
}

}  // namespace

extern "C" {

// --- sessions ---------------------------------------------------------------

int dm_init_service(char** versionstrpp) {
  static char version[] = "pdm 0.1.0: X/Open XDSM DMAPI (C429), cluster-wide";
  if (versionstrpp == nullptr) return Fail(EFAULT);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  *versionstrpp = version;
  return 0;
}

int dm_create_session(dm_sessid_t oldsid, const char* sessinfop, dm_sessid_t* newsidp) {
  if (sessinfop == nullptr || newsidp == nullptr) return Fail(EFAULT);
  if (std::strlen(sessinfop) >= DM_SESSION_INFO_LEN) return Fail(E2BIG);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto sid = (*c)->CreateSession(oldsid, sessinfop);
  if (!sid.ok()) return Fail(sid.status());
  OwnSession(*sid);
  *newsidp = *sid;
  return 0;
}

int dm_destroy_session(dm_sessid_t sid) {
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->DestroySession(sid);
  if (st.ok()) ForgetSession(sid);
  return st.ok() ? 0 : Fail(st);
}

int dm_getall_sessions(unsigned int nelem, dm_sessid_t* sidbufp, unsigned int* nelemp) {
  if (nelemp == nullptr) return Fail(EFAULT);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto all = (*c)->AllSessions();
  if (!all.ok()) return Fail(all.status());
  *nelemp = static_cast<unsigned>(all->size());
  if (nelem < all->size()) return Fail(E2BIG);
  if (!all->empty() && sidbufp == nullptr) return Fail(EFAULT);
  for (size_t i = 0; i < all->size(); ++i) sidbufp[i] = (*all)[i].rec.sid;
  return 0;
}

int dm_query_session(dm_sessid_t sid, size_t buflen, void* bufp, size_t* rlenp) {
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto s = (*c)->QuerySession(sid);
  if (!s.ok()) return Fail(s.status());
  const std::string& info = s->rec.info;
  std::vector<uint8_t> bytes(info.begin(), info.end());
  bytes.push_back(0);
  return CopyOut(bytes, buflen, bufp, rlenp);
}

// --- events -----------------------------------------------------------------

int dm_get_events(dm_sessid_t sid, unsigned int maxmsgs, unsigned int flags, size_t buflen, void* bufp,
                  size_t* rlenp) {
  if (rlenp == nullptr || (bufp == nullptr && buflen > 0)) return Fail(EFAULT);
  if (flags & ~unsigned(DM_EV_WAIT)) return Fail(EINVAL);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  size_t needed = 0;
  // The agent reads a budget of 0 as "no limit"; a caller's 0 means no room.
  const size_t budget = buflen == 0 ? 1 : buflen;
  auto evs = (*c)->GetEventsFitting(sid, maxmsgs, (flags & DM_EV_WAIT) != 0, budget, sizeof(dm_eventmsg_t),
                                    &needed);
  if (!evs.ok()) {
    if (evs.status().err() == E2BIG) *rlenp = needed;
    return Fail(evs.status());
  }
  // The agent handed out only what fits in buflen.
  LinkedRecords msgs;
  for (const auto& e : *evs) AppendMessage(e, msgs);
  if (!msgs.bytes().empty()) std::memcpy(bufp, msgs.bytes().data(), msgs.bytes().size());
  *rlenp = msgs.bytes().size();
  return 0;
}

int dm_respond_event(dm_sessid_t sid, dm_token_t token, dm_response_t response, int reterror, size_t buflen,
                     void* respbufp) {
  (void)respbufp;  // XDSM reserves the response buffer; nothing is carried back
  if (buflen > kMaxMessageData) return Fail(E2BIG);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  ForgetToken(sid, token);  // first: a file call racing the answer must ask
  Status st = (*c)->Respond(sid, token, static_cast<int>(response), reterror);
  return st.ok() ? 0 : Fail(st);
}

int dm_move_event(dm_sessid_t srcsid, dm_token_t token, dm_sessid_t targetsid, dm_token_t* rtokenp) {
  if (rtokenp == nullptr) return Fail(EFAULT);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  ForgetToken(srcsid, token);
  Status st = (*c)->MoveEvent(srcsid, token, targetsid);
  if (!st.ok()) return Fail(st);
  *rtokenp = token;  // tokens are cluster-unique: the event keeps its token
  return 0;
}

int dm_pending(dm_sessid_t sid, dm_token_t token, dm_timestruct_t* delay) {
  (void)delay;  // no event timeout to extend: events wait for their answer
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->Pending(sid, token);
  return st.ok() ? 0 : Fail(st);
}

int dm_find_eventmsg(dm_sessid_t sid, dm_token_t token, size_t buflen, void* bufp, size_t* rlenp) {
  if (rlenp == nullptr) return Fail(EFAULT);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto e = (*c)->FindEvent(sid, token);
  if (!e.ok()) return Fail(e.status());
  LinkedRecords msg;
  AppendMessage(*e, msg);
  return CopyOut(msg.bytes(), buflen, bufp, rlenp);
}

int dm_getall_tokens(dm_sessid_t sid, unsigned int nelem, dm_token_t* tokenbufp, unsigned int* nelemp) {
  if (nelemp == nullptr) return Fail(EFAULT);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto out = (*c)->Outstanding(sid);
  if (!out.ok()) return Fail(out.status());
  *nelemp = static_cast<unsigned>(out->size());
  if (nelem < out->size()) return Fail(E2BIG);
  if (!out->empty() && tokenbufp == nullptr) return Fail(EFAULT);
  for (size_t i = 0; i < out->size(); ++i) tokenbufp[i] = (*out)[i].token;
  return 0;
}

int dm_create_userevent(dm_sessid_t sid, size_t msglen, void* msgdatap, dm_token_t* tokenp) {
  if (tokenp == nullptr || (msglen > 0 && msgdatap == nullptr)) return Fail(EFAULT);
  if (msglen > kMaxMessageData) return Fail(E2BIG);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  const auto* p = static_cast<const uint8_t*>(msgdatap);
  auto t = (*c)->CreateUserEvent(sid, std::vector<uint8_t>(p, p + msglen));
  if (!t.ok()) return Fail(t.status());
  *tokenp = *t;
  return 0;
}

int dm_send_msg(dm_sessid_t targetsid, dm_msgtype_t msgtype, size_t buflen, void* bufp) {
  if (msgtype != DM_MSGTYPE_SYNC && msgtype != DM_MSGTYPE_ASYNC) return Fail(EINVAL);
  if (buflen > kMaxMessageData) return Fail(E2BIG);
  if (buflen > 0 && bufp == nullptr) return Fail(EFAULT);
  if (targetsid == DM_NO_SESSION) return Fail(EINVAL);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  const auto* p = static_cast<const uint8_t*>(bufp);
  auto r = (*c)->Raise(0, DM_EVENT_USER, msgtype == DM_MSGTYPE_SYNC, std::vector<uint8_t>(p, p + buflen), targetsid);
  if (!r.ok()) return Fail(r.status());
  if (r->response == DM_RESP_ABORT) return Fail(r->abort_errno ? r->abort_errno : EIO);
  return 0;
}

// --- dispositions and event lists ------------------------------------------------

int dm_set_disp(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_eventset_t* eventsetp,
                unsigned int maxevent) {
  if (token != DM_NO_TOKEN) return Fail(EINVAL);
  auto mask = MaskArg(eventsetp, maxevent);
  if (!mask.ok()) return Fail(mask.status());
  auto fsid = FsidArg(hanp, hlen, true);
  if (!fsid.ok()) return Fail(fsid.status());
  const dm_eventset_t allowed = *fsid == 0 ? Bit(DM_EVENT_MOUNT) : kFsDispEvents;
  if (*mask & ~allowed) return Fail(EINVAL);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->SetDisp(sid, *fsid, *mask);
  return st.ok() ? 0 : Fail(st);
}

int dm_getall_disp(dm_sessid_t sid, size_t buflen, void* bufp, size_t* rlenp) {
  if (rlenp == nullptr) return Fail(EFAULT);
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto d = (*c)->GetAllDisp(sid);
  if (!d.ok()) return Fail(d.status());
  LinkedRecords out;
  for (const auto& [fsid, events] : *d) {
    // The global (mount) disposition has no file system handle: length 0.
    dm::Handle h = dm::MakeFsHandle(fsid);
    std::span<const uint8_t> hb = fsid == 0 ? std::span<const uint8_t>() : h.bytes();
    const size_t at = out.Append(sizeof(dm_dispinfo_t) + hb.size());
    dm_dispinfo_t di{};
    di.di_fshandle.vd_offset = static_cast<int>(sizeof(dm_dispinfo_t));
    di.di_fshandle.vd_length = static_cast<unsigned>(hb.size());
    di.di_eventset = events;
    std::memcpy(out.at(at), &di, sizeof(di));
    if (!hb.empty()) std::memcpy(out.at(at) + sizeof(di), hb.data(), hb.size());
  }
  return CopyOut(out.bytes(), buflen, bufp, rlenp);
}

int dm_set_eventlist(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_eventset_t* eventsetp,
                     unsigned int maxevent) {
  auto mask = MaskArg(eventsetp, maxevent);
  if (!mask.ok()) return Fail(mask.status());
  if (IsGlobal(hanp, hlen)) return Fail(EINVAL);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  if (h->type() == dm::HandleType::kFs) {
    if (token != DM_NO_TOKEN) return Fail(EINVAL);
    auto c = Client();
    if (!c.ok()) return Fail(c.status());
    auto cur = (*c)->GetFsEvents(h->fsid());
    if (!cur.ok()) return Fail(cur.status());
    Status st = (*c)->SetFsEvents(sid, h->fsid(), MergeBelow(*cur, *mask, maxevent));
    return st.ok() ? 0 : Fail(st);
  }
  if (Status st = CheckSessionToken(sid, token); !st.ok()) return Fail(st);
  auto fd = OpenHandle(*h, O_RDONLY | O_CLOEXEC);
  if (!fd.ok()) return Fail(fd.status());
  auto cur = dm::GetEventList(fd->get());
  if (!cur.ok()) return Fail(cur.status());
  Status st = dm::SetEventList(fd->get(), MergeBelow(*cur, *mask, maxevent));
  return st.ok() ? 0 : Fail(st);
}

int dm_get_eventlist(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int nelem,
                     dm_eventset_t* eventsetp, unsigned int* nelemp) {
  if (eventsetp == nullptr || nelemp == nullptr) return Fail(EFAULT);
  if (IsGlobal(hanp, hlen)) return Fail(EINVAL);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  dm_eventset_t mask = 0;
  if (h->type() == dm::HandleType::kFs) {
    if (Status st = CheckSession(sid); !st.ok()) return Fail(st);
    auto c = Client();
    if (!c.ok()) return Fail(c.status());
    auto m = (*c)->GetFsEvents(h->fsid());
    if (!m.ok()) return Fail(m.status());
    mask = *m;
  } else {
    if (Status st = CheckSessionToken(sid, token); !st.ok()) return Fail(st);
    auto fd = OpenHandle(*h, O_RDONLY | O_CLOEXEC);
    if (!fd.ok()) return Fail(fd.status());
    auto m = dm::GetEventList(fd->get());
    if (!m.ok()) return Fail(m.status());
    mask = *m;
  }
  *nelemp = DM_EVENT_MAX;
  if (nelem < DM_EVENT_MAX && (mask >> nelem) != 0) return Fail(E2BIG);
  *eventsetp = nelem >= 64 ? mask : (mask & ((dm_eventset_t(1) << nelem) - 1));
  return 0;
}

int dm_get_config_events(void* hanp, size_t hlen, unsigned int nelem, dm_eventset_t* eventsetp,
                         unsigned int* nelemp) {
  if (eventsetp == nullptr || nelemp == nullptr) return Fail(EFAULT);
  if (IsGlobal(hanp, hlen)) return Fail(EBADF);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  *nelemp = DM_EVENT_MAX;
  if (nelem < DM_EVENT_MAX) return Fail(E2BIG);
  // User events and messages always; the data events when this node's
  // kernel event source runs (see pdmd --events).
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto gen = (*c)->GeneratedEvents();
  if (!gen.ok()) return Fail(gen.status());
  *eventsetp = *gen;
  return 0;
}

int dm_set_return_on_destroy(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_attrname_t* attrnamep,
                             dm_boolean_t enable) {
  if (Status st = CheckSessionToken(sid, token); !st.ok()) return Fail(st);
  auto h = ParseHandle(hanp, hlen);
  if (!h.ok()) return Fail(h.status());
  if (h->type() != dm::HandleType::kFs) return Fail(EINVAL);
  std::optional<dm::AttrName> name;
  if (enable) {
    if (attrnamep == nullptr) return Fail(EFAULT);
    auto n = dm::AttrName::FromBytes(std::span<const uint8_t, 8>(reinterpret_cast<const uint8_t*>(attrnamep), 8));
    if (!n.ok()) return Fail(n.status());
    name = *n;
  }
  auto fd = OpenHandle(*h, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!fd.ok()) return Fail(fd.status());
  Status st = dm::SetReturnOnDestroy(fd->get(), name);
  return st.ok() ? 0 : Fail(st);
}

int dm_get_mountinfo(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, size_t buflen, void* bufp,
                     size_t* rlenp) {
  if (rlenp == nullptr) return Fail(EFAULT);
  auto fs = FsHandleArg(sid, hanp, hlen, token);
  if (!fs.ok()) return Fail(fs.status());
  const dm::Handle* h = &fs->handle;
  const std::string* view = &fs->view;
  auto root = dm::PathToHandle(*view);
  if (!root.ok()) return Fail(root.status());
  // dm_mount_event_t followed by: fs handle, root handle, mount point path.
  std::span<const uint8_t> fsb = h->bytes(), rb = root->bytes();
  std::vector<uint8_t> out(sizeof(dm_mount_event_t));
  auto append = [&](std::span<const uint8_t> b, dm_vardata_t& vd) {
    vd.vd_offset = static_cast<int>(out.size());
    vd.vd_length = static_cast<unsigned>(b.size());
    out.insert(out.end(), b.begin(), b.end());
    out.resize(Align8(out.size()));
  };
  dm_mount_event_t me{};
  me.me_mode = 0;
  append(fsb, me.me_handle1);
  append(rb, me.me_roothandle);
  std::vector<uint8_t> name(view->begin(), view->end());
  name.push_back(0);
  append(name, me.me_name1);
  std::memcpy(out.data(), &me, sizeof(me));
  return CopyOut(out, buflen, bufp, rlenp);
}

// --- rights -----------------------------------------------------------------

int dm_request_right(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, unsigned int flags,
                     dm_right_t right) {
  if (token == DM_NO_TOKEN || token == DM_INVALID_TOKEN) return Fail(EINVAL);
  if (flags & ~unsigned(DM_RR_WAIT)) return Fail(EINVAL);
  if (right == DM_RIGHT_NULL) return 0;
  if (right != DM_RIGHT_SHARED && right != DM_RIGHT_EXCL) return Fail(EINVAL);
  auto key = RightKey(hanp, hlen);
  if (!key.ok()) return Fail(key.status());
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->RequestRight(sid, token, *key, static_cast<int>(right), (flags & DM_RR_WAIT) != 0);
  return st.ok() ? 0 : Fail(st);
}

int dm_release_right(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token) {
  if (token == DM_NO_TOKEN || token == DM_INVALID_TOKEN) return Fail(EINVAL);
  auto key = RightKey(hanp, hlen);
  if (!key.ok()) return Fail(key.status());
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->ReleaseRight(sid, token, *key);
  return st.ok() ? 0 : Fail(st);
}

int dm_query_right(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token, dm_right_t* rightp) {
  if (rightp == nullptr) return Fail(EFAULT);
  if (token == DM_NO_TOKEN || token == DM_INVALID_TOKEN) return Fail(EINVAL);
  auto key = RightKey(hanp, hlen);
  if (!key.ok()) return Fail(key.status());
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  auto r = (*c)->QueryRight(sid, token, *key);
  if (!r.ok()) return Fail(r.status());
  *rightp = static_cast<dm_right_t>(*r);
  return 0;
}

int dm_upgrade_right(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token) {
  if (token == DM_NO_TOKEN || token == DM_INVALID_TOKEN) return Fail(EINVAL);
  auto key = RightKey(hanp, hlen);
  if (!key.ok()) return Fail(key.status());
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->UpgradeRight(sid, token, *key);
  return st.ok() ? 0 : Fail(st);
}

int dm_downgrade_right(dm_sessid_t sid, void* hanp, size_t hlen, dm_token_t token) {
  if (token == DM_NO_TOKEN || token == DM_INVALID_TOKEN) return Fail(EINVAL);
  auto key = RightKey(hanp, hlen);
  if (!key.ok()) return Fail(key.status());
  auto c = Client();
  if (!c.ok()) return Fail(c.status());
  Status st = (*c)->DowngradeRight(sid, token, *key);
  return st.ok() ? 0 : Fail(st);
}

}  // extern "C"
