#include "cluster/tables.h"

namespace pdm {

flatbuffers::Offset<wire::SessionRec> BuildSession(flatbuffers::FlatBufferBuilder& fbb, const SessionRecord& s) {
  auto info = fbb.CreateString(s.info);
  auto group = fbb.CreateString(s.group);
  return wire::CreateSessionRec(fbb, s.sid, s.owner, info, group, s.create_origin, s.create_req);
}

SessionRecord ReadSession(const wire::SessionRec& r) {
  SessionRecord s;
  s.sid = r.sid();
  s.owner = r.owner();
  if (r.info()) s.info = r.info()->str();
  if (r.group()) s.group = r.group()->str();
  s.create_origin = r.create_origin();
  s.create_req = r.create_req();
  return s;
}

void Tables::Apply(const wire::Change& c) {
  switch (c.kind()) {
    case wire::ChangeKind::UpsertSession:
      if (c.session()) {
        SessionRecord s = ReadSession(*c.session());
        sessions[s.sid] = std::move(s);
      }
      break;
    case wire::ChangeKind::RemoveSession: {
      sessions.erase(c.sid());
      for (auto it = disps.begin(); it != disps.end();)
        it = it->first.second == c.sid() ? disps.erase(it) : std::next(it);
      break;
    }
    case wire::ChangeKind::SetDisp:
      if (!sessions.count(c.sid())) break;
      if (c.events() == 0)
        disps.erase({c.fsid(), c.sid()});
      else
        disps[{c.fsid(), c.sid()}] = c.events();
      break;
    case wire::ChangeKind::SetFsEvents:
      if (c.events() == 0)
        fs_events.erase(c.fsid());
      else
        fs_events[c.fsid()] = c.events();
      break;
    case wire::ChangeKind::NodeDead:
      dead.insert(c.rank());
      break;
    case wire::ChangeKind::Rewatch:
      break;  // not table state: the node's event source acts on it
  }
}

void Tables::LoadFrom(const wire::TablesMsg& t) {
  term = t.term();
  seq = t.seq();
  next_sid = t.next_sid();
  sessions.clear();
  disps.clear();
  fs_events.clear();
  dead.clear();
  if (t.sessions())
    for (const auto* r : *t.sessions()) {
      SessionRecord s = ReadSession(*r);
      sessions[s.sid] = std::move(s);
    }
  if (t.disps())
    for (const auto* d : *t.disps()) disps[{d->fsid(), d->sid()}] = d->events();
  if (t.fs_events())
    for (const auto* f : *t.fs_events()) fs_events[f->fsid()] = f->events();
  if (t.dead())
    for (int r : *t.dead()) dead.insert(r);
}

flatbuffers::Offset<wire::TablesMsg> Tables::Build(flatbuffers::FlatBufferBuilder& fbb) const {
  std::vector<flatbuffers::Offset<wire::SessionRec>> ss;
  ss.reserve(sessions.size());
  for (const auto& [sid, s] : sessions) ss.push_back(BuildSession(fbb, s));
  std::vector<flatbuffers::Offset<wire::DispRec>> ds;
  for (const auto& [k, ev] : disps) ds.push_back(wire::CreateDispRec(fbb, k.first, k.second, ev));
  std::vector<flatbuffers::Offset<wire::FsEventsRec>> fs;
  for (const auto& [fsid, ev] : fs_events) fs.push_back(wire::CreateFsEventsRec(fbb, fsid, ev));
  std::vector<int> dv(dead.begin(), dead.end());
  return wire::CreateTablesMsg(fbb, term, seq, next_sid, fbb.CreateVector(ss), fbb.CreateVector(ds),
                               fbb.CreateVector(fs), fbb.CreateVector(dv));
}

const SessionRecord* Tables::Find(uint64_t sid) const {
  auto it = sessions.find(sid);
  return it == sessions.end() ? nullptr : &it->second;
}

std::vector<uint64_t> Tables::Holders(uint64_t fsid, unsigned event) const {
  std::vector<uint64_t> out;
  const uint64_t bit = uint64_t(1) << event;
  for (auto it = disps.lower_bound({fsid, 0}); it != disps.end() && it->first.first == fsid; ++it)
    if (it->second & bit) out.push_back(it->first.second);
  return out;
}

Status Tables::CheckDisp(uint64_t sid, uint64_t fsid, uint64_t events) const {
  const SessionRecord* me = Find(sid);
  if (!me) return InvalidArgument("unknown session " + std::to_string(sid));
  for (auto it = disps.lower_bound({fsid, 0}); it != disps.end() && it->first.first == fsid; ++it) {
    if (it->first.second == sid || (it->second & events) == 0) continue;
    const SessionRecord* other = Find(it->first.second);
    if (other && !me->group.empty() && other->group == me->group) continue;
    return FailedPrecondition("disposition already held by session " + std::to_string(it->first.second) +
                                  " on file system " + std::to_string(fsid),
                              EBUSY);
  }
  return Status::Ok();
}

int Tables::SessionsOwnedBy(int rank) const {
  int n = 0;
  for (const auto& [sid, s] : sessions) n += s.owner == rank;
  return n;
}

}  // namespace pdm
