#include "cluster/tables.h"

#include <gtest/gtest.h>

namespace pdm {
namespace {

using Fbb = flatbuffers::FlatBufferBuilder;

// Builds one Change, lets `t` apply it.
template <typename F>
void Apply(Tables& t, F make) {
  Fbb fbb;
  fbb.Finish(make(fbb));
  t.Apply(*flatbuffers::GetRoot<wire::Change>(fbb.GetBufferPointer()));
}

void Upsert(Tables& t, uint64_t sid, int owner, const std::string& group = "") {
  SessionRecord s;
  s.sid = sid;
  s.owner = owner;
  s.group = group;
  Apply(t, [&](Fbb& fbb) { return wire::CreateChange(fbb, wire::ChangeKind::UpsertSession, BuildSession(fbb, s)); });
}
void Disp(Tables& t, uint64_t sid, uint64_t fsid, uint64_t ev) {
  Apply(t, [&](Fbb& fbb) { return wire::CreateChange(fbb, wire::ChangeKind::SetDisp, 0, sid, fsid, ev); });
}

TEST(Tables, DispositionsArePartitionedAmongSessions) {
  Tables t;
  Upsert(t, 1, 0);
  Upsert(t, 2, 1);
  ASSERT_TRUE(t.CheckDisp(1, 7, 1u << 16).ok());
  Disp(t, 1, 7, 1u << 16);
  Status st = t.CheckDisp(2, 7, (1u << 16) | (1u << 17));
  EXPECT_EQ(st.err(), EBUSY);
  EXPECT_TRUE(t.CheckDisp(2, 7, 1u << 17).ok());  // another event: fine
  EXPECT_TRUE(t.CheckDisp(2, 8, 1u << 16).ok());  // another file system: fine
  EXPECT_TRUE(t.CheckDisp(1, 7, 1u << 16).ok());  // the holder itself: fine
  EXPECT_EQ(t.CheckDisp(99, 7, 1).err(), EINVAL);
  EXPECT_EQ(t.Holders(7, 16), std::vector<uint64_t>{1});
  EXPECT_TRUE(t.Holders(7, 17).empty());
}

TEST(Tables, ParallelGroupMembersShareADisposition) {
  Tables t;
  Upsert(t, 1, 0, "hsm");
  Upsert(t, 2, 1, "hsm");
  Upsert(t, 3, 2, "other");
  Disp(t, 1, 7, 1u << 16);
  EXPECT_TRUE(t.CheckDisp(2, 7, 1u << 16).ok());
  Disp(t, 2, 7, 1u << 16);
  EXPECT_EQ(t.CheckDisp(3, 7, 1u << 16).err(), EBUSY);
  EXPECT_EQ(t.Holders(7, 16), (std::vector<uint64_t>{1, 2}));
}

TEST(Tables, RemovingASessionDropsItsDispositionsAndApplyIsIdempotent) {
  Tables t;
  Upsert(t, 1, 0);
  Disp(t, 1, 7, 1u << 16);
  Disp(t, 1, 7, 1u << 16);
  Apply(t, [](Fbb& fbb) { return wire::CreateChange(fbb, wire::ChangeKind::RemoveSession, 0, 1); });
  Apply(t, [](Fbb& fbb) { return wire::CreateChange(fbb, wire::ChangeKind::RemoveSession, 0, 1); });
  EXPECT_TRUE(t.sessions.empty());
  EXPECT_TRUE(t.disps.empty());
}

TEST(Tables, SnapshotRoundTrips) {
  Tables t;
  t.term = 3;
  t.seq = 9;
  t.next_sid = 5;
  Upsert(t, MakeSessionId(3, 1), 2);
  Disp(t, MakeSessionId(3, 1), 7, 0x30000);
  t.fs_events[7] = 0x10;
  t.dead.insert(1);
  Fbb fbb;
  fbb.Finish(t.Build(fbb));
  Tables u;
  u.LoadFrom(*flatbuffers::GetRoot<wire::TablesMsg>(fbb.GetBufferPointer()));
  EXPECT_EQ(u.term, 3u);
  EXPECT_EQ(u.seq, 9u);
  EXPECT_EQ(u.next_sid, 5u);
  ASSERT_EQ(u.sessions.size(), 1u);
  EXPECT_EQ(u.sessions.begin()->second.owner, 2);
  EXPECT_EQ(u.disps.size(), 1u);
  EXPECT_EQ(u.fs_events[7], 0x10u);
  EXPECT_EQ(u.dead, std::set<int>{1});
}

TEST(Tables, SessionIdsCarryTheTerm) {
  EXPECT_NE(MakeSessionId(1, 1), MakeSessionId(2, 1));
  EXPECT_EQ(MakeSessionId(2, 1) >> 32, 2u);
}

}  // namespace
}  // namespace pdm
