// Writes one valid frame of each kind into DIR, the fuzzer's seed corpus, so
// that mutations start from frames that get past the verifier.
#include <cstdio>
#include <string>

#include "wire/codec.h"

using Fbb = flatbuffers::FlatBufferBuilder;

static void Write(const std::string& dir, const std::string& name, const Fbb& fbb) {
  FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
  if (!f) return;
  std::fwrite(fbb.GetBufferPointer(), 1, fbb.GetSize(), f);
  std::fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  using namespace pdm;
  {
    Fbb fbb;
    auto ev = wire::CreateEvent(fbb, 7, 1, 2, 16, true, 3, false, fbb.CreateVector(std::vector<uint8_t>{1, 2, 3}));
    fbb.Finish(wire::CreateEnvelope(fbb, wire::kClusterVersion, wire::Body::Event, ev.Union()));
    Write(dir, "event", fbb);
  }
  {
    Fbb fbb;
    auto rec = wire::CreateSessionRec(fbb, 5, 1, fbb.CreateString("info"), fbb.CreateString("g"), 1, 9);
    auto ch = wire::CreateChange(fbb, wire::ChangeKind::UpsertSession, rec);
    std::vector<flatbuffers::Offset<wire::Change>> cs{ch};
    auto snap = wire::CreateTablesMsg(fbb, 1, 2, 3);
    auto u = wire::CreateUpdate(fbb, 11, fbb.CreateVector(std::vector<int>{0, 1, 2}), 4, 1, 2, 3,
                                fbb.CreateVector(cs), snap);
    fbb.Finish(wire::CreateEnvelope(fbb, wire::kClusterVersion, wire::Body::Update, u.Union()));
    Write(dir, "update", fbb);
  }
  {
    Fbb fbb;
    auto r = wire::CreateSmRequest(fbb, 3, wire::SmOp::SetDisp, 5, fbb.CreateString("x"), 0, 7, 0x30000, 1);
    fbb.Finish(wire::CreateEnvelope(fbb, wire::kClusterVersion, wire::Body::SmRequest, r.Union()));
    Write(dir, "smrequest", fbb);
  }
  {
    Fbb fbb;
    fbb.Finish(local::CreateRequest(fbb, wire::kLocalVersion, local::Op::Raise, 1, 0, fbb.CreateString("i"), 0, 7,
                                    0, 0, 0, false, 0, 0, 16, true, 0, fbb.CreateVector(std::vector<uint8_t>{4, 5})));
    Write(dir, "request", fbb);
  }
  return 0;
}
