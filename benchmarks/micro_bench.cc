// Micro benchmarks of the control plane's hot code.
#include <benchmark/benchmark.h>

#include "cluster/tables.h"
#include "cluster/tree.h"
#include "wire/codec.h"

namespace {

using Fbb = flatbuffers::FlatBufferBuilder;

std::vector<uint8_t> EventFrame(size_t payload) {
  Fbb fbb;
  auto p = fbb.CreateVector(std::vector<uint8_t>(payload, 7));
  auto ev = pdm::wire::CreateEvent(fbb, 1, 2, 3, 16, true, 4, false, p);
  fbb.Finish(pdm::wire::CreateEnvelope(fbb, pdm::wire::kClusterVersion, pdm::wire::Body::Event, ev.Union()));
  return {fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize()};
}

void BM_DecodeEvent(benchmark::State& st) {
  auto f = EventFrame(static_cast<size_t>(st.range(0)));
  for (auto _ : st) benchmark::DoNotOptimize(pdm::wire::DecodeEnvelope(f));
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(f.size()));
}
BENCHMARK(BM_DecodeEvent)->Arg(64)->Arg(4096);

void BM_BuildEvent(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(EventFrame(64));
}
BENCHMARK(BM_BuildEvent);

void BM_SnapshotRoundTrip(benchmark::State& st) {
  pdm::Tables t;
  for (int i = 0; i < st.range(0); ++i) {
    pdm::SessionRecord s;
    s.sid = pdm::MakeSessionId(1, uint64_t(i + 1));
    s.owner = i % 8;
    s.info = "hsm session";
    t.sessions[s.sid] = s;
  }
  for (auto _ : st) {
    Fbb fbb;
    fbb.Finish(t.Build(fbb));
    pdm::Tables u;
    u.LoadFrom(*flatbuffers::GetRoot<pdm::wire::TablesMsg>(fbb.GetBufferPointer()));
    benchmark::DoNotOptimize(u.sessions.size());
  }
}
BENCHMARK(BM_SnapshotRoundTrip)->Arg(100)->Arg(4000);

void BM_HoldersLookup(benchmark::State& st) {
  pdm::Tables t;
  for (uint64_t fs = 0; fs < 16; ++fs)
    for (uint64_t sid = 1; sid <= 8; ++sid) t.disps[{fs, sid}] = 1ull << (sid + 8);
  for (auto _ : st) benchmark::DoNotOptimize(t.Holders(7, 16));
}
BENCHMARK(BM_HoldersLookup);

void BM_KnomialChildren(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(pdm::KnomialChildren(0, 1024, 4));
}
BENCHMARK(BM_KnomialChildren);

}  // namespace
