#include "wire/codec.h"

#include <gtest/gtest.h>

#include <random>

namespace pdm {
namespace {

using Fbb = flatbuffers::FlatBufferBuilder;

std::vector<uint8_t> EventEnvelope(uint16_t version, uint8_t type, uint64_t token) {
  Fbb fbb;
  auto payload = fbb.CreateVector(std::vector<uint8_t>{1, 2, 3});
  auto ev = wire::CreateEvent(fbb, token, 42, 1, type, true, 7, false, payload);
  fbb.Finish(wire::CreateEnvelope(fbb, version, wire::Body::Event, ev.Union()));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

TEST(Codec, DecodesAValidEvent) {
  auto f = EventEnvelope(wire::kClusterVersion, 16, 99);
  auto env = wire::DecodeEnvelope(f);
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  const auto* e = (*env)->body_as_Event();
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->token(), 99u);
  EXPECT_EQ(e->sid(), 42u);
  EXPECT_EQ(e->payload()->size(), 3u);
}

TEST(Codec, RejectsWrongVersionWithEPROTO) {
  auto f = EventEnvelope(wire::kClusterVersion + 1, 16, 99);
  auto env = wire::DecodeEnvelope(f);
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().err(), EPROTO);
}

TEST(Codec, RejectsOutOfRangeEventTypeAndMissingToken) {
  EXPECT_EQ(wire::DecodeEnvelope(EventEnvelope(wire::kClusterVersion, 23, 1)).status().err(), EBADMSG);
  EXPECT_EQ(wire::DecodeEnvelope(EventEnvelope(wire::kClusterVersion, 16, 0)).status().err(), EBADMSG);
}

TEST(Codec, RejectsEmptyAndTruncatedAndGarbageFrames) {
  EXPECT_FALSE(wire::DecodeEnvelope({}).ok());
  auto f = EventEnvelope(wire::kClusterVersion, 16, 1);
  // A truncated frame is rejected, or (when only trailing padding was cut)
  // decodes to exactly the original fields: never a read past the end.
  int accepted = 0;
  for (size_t cut = 0; cut < f.size(); ++cut) {
    std::vector<uint8_t> t(f.begin(), f.begin() + static_cast<long>(cut));
    auto env = wire::DecodeEnvelope(t);
    if (!env.ok()) continue;
    ++accepted;
    const auto* e = (*env)->body_as_Event();
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->token(), 1u);
    EXPECT_EQ(e->payload()->size(), 3u);
  }
  EXPECT_LE(accepted, 8) << "only padding may be cut";
  std::mt19937 rng(1);
  int rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::vector<uint8_t> g(static_cast<size_t>(rng() % 200));
    for (auto& b : g) b = static_cast<uint8_t>(rng());
    rejected += !wire::DecodeEnvelope(g).ok();
  }
  EXPECT_GT(rejected, 1990);
}

TEST(Codec, RejectsAnOverlongSessionInfo) {
  Fbb fbb;
  auto info = fbb.CreateString(std::string(300, 'x'));
  auto req = wire::CreateSmRequest(fbb, 1, wire::SmOp::Create, 0, info);
  fbb.Finish(wire::CreateEnvelope(fbb, wire::kClusterVersion, wire::Body::SmRequest, req.Union()));
  std::vector<uint8_t> f(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  EXPECT_EQ(wire::DecodeEnvelope(f).status().err(), EBADMSG);
}

TEST(Codec, LocalRequestVersionChecked) {
  Fbb fbb;
  fbb.Finish(local::CreateRequest(fbb, wire::kLocalVersion + 7, local::Op::Hello));
  std::vector<uint8_t> f(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
  EXPECT_EQ(wire::DecodeRequest(f).status().err(), EPROTO);
}

}  // namespace
}  // namespace pdm
