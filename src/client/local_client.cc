#include "client/local_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "wire/codec.h"

namespace pdm {

struct LocalClient::Req {
  local::Op op = local::Op::Hello;
  uint64_t sid = 0, oldsid = 0, fsid = 0, events = 0, token = 0, target_sid = 0;
  std::string info, group;
  unsigned max_msgs = 0, timeout_ms = 0;
  bool wait = false, sync = false;
  int response = 0, err = 0;
  unsigned type = 0;
  const std::vector<uint8_t>* payload = nullptr;
  const std::string* object = nullptr;
  int right = 0;
  uint64_t max_bytes = 0;
  unsigned overhead = 0;
  bool no_payload = false;
};

namespace {

const local::Reply* Reply(const std::vector<uint8_t>& buf) { return flatbuffers::GetRoot<local::Reply>(buf.data()); }

QueuedEvent ReadEvent(const local::EventInfo& e) {
  QueuedEvent ev;
  ev.token = e.token();
  ev.sid = e.sid();
  ev.type = e.type();
  ev.sync = e.sync();
  ev.raiser = e.raiser();
  ev.fsid = e.fsid();
  ev.notice = e.notice();
  ev.sequence = e.sequence();
  if (e.payload()) ev.payload.assign(e.payload()->begin(), e.payload()->end());
  return ev;
}

std::vector<QueuedEvent> EventsOf(const local::Reply* r) {
  std::vector<QueuedEvent> v;
  if (auto* e = r->events())
    for (const auto* x : *e) v.push_back(ReadEvent(*x));
  return v;
}

SessionView ReadSessionInfo(const local::SessionInfo& s) {
  SessionView v;
  v.rec.sid = s.sid();
  v.rec.owner = s.owner();
  v.owner_alive = s.owner_alive();
  if (s.info()) v.rec.info = s.info()->str();
  if (s.group()) v.rec.group = s.group()->str();
  return v;
}

}  // namespace

std::string LocalClient::DefaultSocketPath() {
  const char* env = std::getenv("DMAPI_SOCKET");
  return env && *env ? env : "/run/pdm/dmapi.sock";
}

Result<std::unique_ptr<LocalClient>> LocalClient::Connect(const std::string& path_in) {
  const std::string path = path_in.empty() ? DefaultSocketPath() : path_in;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) return InvalidArgument("socket path too long: " + path, ENAMETOOLONG);
  std::strcpy(sa.sun_path, path.c_str());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return PosixError("socket", path, errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    int e = errno;
    // The socket is root-only (0600): a non-root caller is refused here, and
    // DMAPI says a caller without privilege gets EPERM.
    if (e == EACCES) return PermissionDenied("connect(" + path + "): DMAPI is root only", EPERM);
    return PosixError("connect", path, e);
  }
  std::unique_ptr<LocalClient> c(new LocalClient(std::move(fd)));
  Req hello;
  hello.op = local::Op::Hello;
  PDM_RETURN_IF_ERROR(c->Call(hello));
  c->rank_ = Reply(c->reply_buf_)->rank();
  return c;
}

Status LocalClient::Do(const Req& q) {
  std::lock_guard<std::mutex> lk(mu_);
  return Call(q);
}

Status LocalClient::Call(const Req& q) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto info = fbb.CreateString(q.info);
  auto group = fbb.CreateString(q.group);
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> payload = 0;
  if (q.payload) payload = fbb.CreateVector(*q.payload);
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> object = 0;
  if (q.object) object = fbb.CreateVector(reinterpret_cast<const uint8_t*>(q.object->data()), q.object->size());
  auto req = local::CreateRequest(fbb, wire::kLocalVersion, q.op, q.sid, q.oldsid, info, group, q.fsid, q.events,
                                  q.token, q.max_msgs, q.wait, q.response, q.err, static_cast<uint8_t>(q.type), q.sync,
                                  q.target_sid, payload, q.timeout_ms, object, q.right, q.max_bytes,
                                  q.overhead, q.no_payload);
  fbb.Finish(req);
  uint32_t len = fbb.GetSize();
  uint8_t hdr[4];
  std::memcpy(hdr, &len, 4);
  Status sent = WriteAll(fd_.get(), {hdr, 4}, "node agent");
  if (sent.ok()) sent = WriteAll(fd_.get(), {fbb.GetBufferPointer(), fbb.GetSize()}, "node agent");
  // An agent that refuses a caller (not root) answers at once and closes:
  // a write racing that close fails, but the answer saying why is there.
  if (!sent.ok() && sent.err() != EPIPE && sent.err() != ECONNRESET) return sent;
  if (Status got = ReadExact(fd_.get(), {hdr, 4}, "node agent"); !got.ok()) return sent.ok() ? got : sent;
  std::memcpy(&len, hdr, 4);
  if (len > wire::kMaxLocalFrame) return InvalidArgument("node agent sent an oversized reply", EBADMSG);
  reply_buf_.resize(len);
  PDM_RETURN_IF_ERROR(ReadExact(fd_.get(), reply_buf_, "node agent"));
  auto r = wire::DecodeReply(reply_buf_);
  if (!r.ok()) return r.status();
  if ((*r)->err() != 0) return FromErrno((*r)->err(), (*r)->message() ? (*r)->message()->str() : "node agent error");
  return sent;  // an answer to a request that did not go out is no success
}

Result<uint64_t> LocalClient::CreateSession(uint64_t oldsid, const std::string& info, const std::string& group) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::CreateSession;
  q.oldsid = oldsid;
  q.info = info;
  q.group = group;
  PDM_RETURN_IF_ERROR(Call(q));
  return Reply(reply_buf_)->sid();
}

Status LocalClient::DestroySession(uint64_t sid) {
  Req q;
  q.op = local::Op::DestroySession;
  q.sid = sid;
  return Do(q);
}

Status LocalClient::ModifySession(uint64_t sid, const std::string& info) {
  Req q;
  q.op = local::Op::ModifySession;
  q.sid = sid;
  q.info = info;
  return Do(q);
}

Result<SessionView> LocalClient::QuerySession(uint64_t sid) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::QuerySession;
  q.sid = sid;
  PDM_RETURN_IF_ERROR(Call(q));
  auto* s = Reply(reply_buf_)->sessions();
  if (!s || s->size() != 1) return Internal("node agent: query reply without the session");
  return ReadSessionInfo(*s->Get(0));
}

Result<std::vector<SessionView>> LocalClient::AllSessions() {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::GetAllSessions;
  PDM_RETURN_IF_ERROR(Call(q));
  std::vector<SessionView> v;
  if (auto* s = Reply(reply_buf_)->sessions())
    for (const auto* x : *s) v.push_back(ReadSessionInfo(*x));
  return v;
}

Status LocalClient::SetDisp(uint64_t sid, uint64_t fsid, uint64_t events) {
  Req q;
  q.op = local::Op::SetDisp;
  q.sid = sid;
  q.fsid = fsid;
  q.events = events;
  return Do(q);
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> LocalClient::GetAllDisp(uint64_t sid) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::GetAllDisp;
  q.sid = sid;
  PDM_RETURN_IF_ERROR(Call(q));
  std::vector<std::pair<uint64_t, uint64_t>> v;
  if (auto* d = Reply(reply_buf_)->disps())
    for (const auto* x : *d) v.emplace_back(x->fsid(), x->events());
  return v;
}

Status LocalClient::SetFsEvents(uint64_t sid, uint64_t fsid, uint64_t events) {
  Req q;
  q.op = local::Op::SetFsEvents;
  q.sid = sid;
  q.fsid = fsid;
  q.events = events;
  return Do(q);
}

Result<uint64_t> LocalClient::GetFsEvents(uint64_t fsid) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::GetFsEvents;
  q.fsid = fsid;
  PDM_RETURN_IF_ERROR(Call(q));
  return Reply(reply_buf_)->events_mask();
}

Result<std::vector<QueuedEvent>> LocalClient::GetEvents(uint64_t sid, unsigned max_msgs, bool wait,
                                                        unsigned timeout_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::GetEvents;
  q.sid = sid;
  q.max_msgs = max_msgs;
  q.wait = wait;
  q.timeout_ms = timeout_ms;
  PDM_RETURN_IF_ERROR(Call(q));
  return EventsOf(Reply(reply_buf_));
}

Result<std::vector<QueuedEvent>> LocalClient::GetEventsFitting(uint64_t sid, unsigned max_msgs, bool wait,
                                                               size_t max_bytes, size_t overhead, size_t* needed) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::GetEvents;
  q.sid = sid;
  q.max_msgs = max_msgs;
  q.wait = wait;
  q.max_bytes = max_bytes;
  q.overhead = static_cast<unsigned>(overhead);
  Status st = Call(q);
  if (needed && !reply_buf_.empty()) *needed = Reply(reply_buf_)->needed();
  PDM_RETURN_IF_ERROR(st);
  return EventsOf(Reply(reply_buf_));
}

Result<uint64_t> LocalClient::CreateUserEvent(uint64_t sid, const std::vector<uint8_t>& payload) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::CreateUserEvent;
  q.sid = sid;
  q.payload = &payload;
  PDM_RETURN_IF_ERROR(Call(q));
  return Reply(reply_buf_)->token();
}

Status LocalClient::MoveEvent(uint64_t src, uint64_t token, uint64_t dst) {
  Req q;
  q.op = local::Op::MoveEvent;
  q.sid = src;
  q.token = token;
  q.target_sid = dst;
  return Do(q);
}

Status LocalClient::Pending(uint64_t sid, uint64_t token) {
  Req q;
  q.op = local::Op::PendingToken;
  q.sid = sid;
  q.token = token;
  return Do(q);
}

Status LocalClient::Rewatch(uint64_t sid, const std::string& object) {
  Req q;
  q.op = local::Op::Rewatch;
  q.sid = sid;
  q.object = &object;
  return Do(q);
}

Status LocalClient::Respond(uint64_t sid, uint64_t token, int response, int err) {
  Req q;
  q.op = local::Op::Respond;
  q.sid = sid;
  q.token = token;
  q.response = response;
  q.err = err;
  return Do(q);
}

Result<std::vector<QueuedEvent>> LocalClient::Outstanding(uint64_t sid) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::Pending;
  q.sid = sid;
  PDM_RETURN_IF_ERROR(Call(q));
  return EventsOf(Reply(reply_buf_));
}

Result<QueuedEvent> LocalClient::FindEvent(uint64_t sid, uint64_t token, bool with_payload) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::FindEvent;
  q.sid = sid;
  q.token = token;
  q.no_payload = !with_payload;
  PDM_RETURN_IF_ERROR(Call(q));
  auto* e = Reply(reply_buf_)->events();
  if (!e || e->size() != 1) return Internal("node agent: find reply without the event");
  return ReadEvent(*e->Get(0));
}

Result<RaiseResult> LocalClient::Raise(uint64_t fsid, unsigned type, bool sync, const std::vector<uint8_t>& payload,
                                       uint64_t target_sid) {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::Raise;
  q.fsid = fsid;
  q.type = type;
  q.sync = sync;
  q.payload = &payload;
  q.target_sid = target_sid;
  PDM_RETURN_IF_ERROR(Call(q));
  const local::Reply* r = Reply(reply_buf_);
  return RaiseResult{r->delivered(), r->response(), r->abort_errno(), r->sid()};
}

Result<uint64_t> LocalClient::GeneratedEvents() {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::ClusterInfo;
  PDM_RETURN_IF_ERROR(Call(q));
  return Reply(reply_buf_)->events_mask();
}

Status LocalClient::RightCall(int op, uint64_t sid, uint64_t token, const std::string& object, int right,
                              bool wait) {
  Req q;
  q.op = static_cast<local::Op>(op);
  q.sid = sid;
  q.token = token;
  q.object = &object;
  q.right = right;
  q.wait = wait;
  return Call(q);
}

Status LocalClient::RequestRight(uint64_t sid, uint64_t token, const std::string& object, int right, bool wait) {
  std::lock_guard<std::mutex> lk(mu_);
  return RightCall(static_cast<int>(local::Op::RequestRight), sid, token, object, right, wait);
}

Status LocalClient::ReleaseRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::lock_guard<std::mutex> lk(mu_);
  return RightCall(static_cast<int>(local::Op::ReleaseRight), sid, token, object, 0, false);
}

Result<int> LocalClient::QueryRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::lock_guard<std::mutex> lk(mu_);
  PDM_RETURN_IF_ERROR(RightCall(static_cast<int>(local::Op::QueryRight), sid, token, object, 0, false));
  return Reply(reply_buf_)->right();
}

Status LocalClient::UpgradeRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::lock_guard<std::mutex> lk(mu_);
  return RightCall(static_cast<int>(local::Op::UpgradeRight), sid, token, object, 0, false);
}

Status LocalClient::DowngradeRight(uint64_t sid, uint64_t token, const std::string& object) {
  std::lock_guard<std::mutex> lk(mu_);
  return RightCall(static_cast<int>(local::Op::DowngradeRight), sid, token, object, 0, false);
}

Result<ClusterView> LocalClient::Cluster() {
  std::lock_guard<std::mutex> lk(mu_);
  Req q;
  q.op = local::Op::ClusterInfo;
  PDM_RETURN_IF_ERROR(Call(q));
  const local::Reply* r = Reply(reply_buf_);
  ClusterView v;
  v.rank = r->rank();
  v.session_manager = r->session_manager();
  if (r->nodes())
    for (const auto* n : *r->nodes()) {
      v.nodes.push_back(NodeStatic{n->rank(), n->pid(), n->view() ? n->view()->str() : "",
                                   n->socket() ? n->socket()->str() : ""});
      v.alive.push_back(n->alive());
    }
  return v;
}

}  // namespace pdm
