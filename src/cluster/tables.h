// Tables: the cluster state every node holds a replica of — sessions,
// dispositions and file-system event lists — and the rules that keep
// dispositions consistently partitioned among sessions (claims 6-8).
//
// The SM is the only writer of record: it validates a request against its
// Tables, turns it into Changes, and broadcasts them; every node (the SM too)
// applies Changes in the same order. Apply is idempotent so a change that
// arrives twice (a subtree re-sent after a forwarder died) does no harm.
//
// Thread-safety: none; the owner (Node) guards a Tables with its mutex.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cluster/types.h"
#include "common/status.h"
#include "pdm/cluster_generated.h"

namespace pdm {

// A session id: (SM term << 32) | counter. A new SM takes a term above every
// term any live node has seen, so ids never repeat across SM failover.
inline uint64_t MakeSessionId(uint64_t term, uint64_t counter) { return (term << 32) | (counter & 0xffffffffu); }

class Tables {
 public:
  uint64_t term = 0;
  uint64_t seq = 0;
  uint64_t next_sid = 1;
  std::map<uint64_t, SessionRecord> sessions;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> disps;  // (fsid, sid) -> event set
  std::map<uint64_t, uint64_t> fs_events;                   // fsid -> event set
  std::set<int> dead;

  // Applies one change; unknown sessions in SetDisp are ignored.
  void Apply(const wire::Change& c);
  void LoadFrom(const wire::TablesMsg& t);
  flatbuffers::Offset<wire::TablesMsg> Build(flatbuffers::FlatBufferBuilder& fbb) const;

  const SessionRecord* Find(uint64_t sid) const;
  // Sessions holding a disposition for `event` on `fsid`: none, one, or the
  // members of one parallel group.
  std::vector<uint64_t> Holders(uint64_t fsid, unsigned event) const;
  // EBUSY if an event in `events` is held on `fsid` by a session other than
  // `sid` and not of the same parallel group; EINVAL for an unknown session.
  Status CheckDisp(uint64_t sid, uint64_t fsid, uint64_t events) const;
  int SessionsOwnedBy(int rank) const;
};

flatbuffers::Offset<wire::SessionRec> BuildSession(flatbuffers::FlatBufferBuilder& fbb, const SessionRecord& s);
SessionRecord ReadSession(const wire::SessionRec& r);

}  // namespace pdm
