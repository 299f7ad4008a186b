// pdm side of the cluster benchmarks, against a running cluster:
//   bench_pdm_client create STATE_DIR NODE ITERS
//       dm_create_session (+ destroy) from NODE: create returns only when
//       every live node has applied it, so its latency is "visible everywhere"
//   bench_pdm_client event STATE_DIR RAISE_NODE SESSION_NODE ITERS
//       a synchronous event raised on RAISE_NODE and answered by a session on
//       SESSION_NODE (a responder thread doing get_events + respond)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "client/local_client.h"

namespace {

std::unique_ptr<pdm::LocalClient> Connect(const std::string& dir, int node) {
  auto c = pdm::LocalClient::Connect(dir + "/node" + std::to_string(node) + ".sock");
  if (!c.ok()) {
    std::fprintf(stderr, "connect node %d: %s\n", node, c.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*c);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s create DIR NODE ITERS | event DIR RAISE_NODE SESSION_NODE ITERS\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  if (mode == "create") {
    const int node = std::atoi(argv[3]), iters = std::atoi(argv[4]);
    auto c = Connect(dir, node);
    std::vector<double> lat;
    int64_t total = 0;
    for (int i = 0; i < iters; ++i) {
      int64_t t0 = pdm::MonotonicNs();
      auto sid = c->CreateSession(0, "bench");
      int64_t dt = pdm::MonotonicNs() - t0;
      if (!sid.ok()) return 1;
      total += dt;
      lat.push_back(double(dt) / 1000.0);
      (void)c->DestroySession(*sid);
    }
    std::printf("pdm_create node=%d avg_us=%.2f median_us=%.2f\n", node, double(total) / iters / 1000.0, Median(lat));
    return 0;
  }
  if (mode == "event" && argc >= 6) {
    const int raiser = std::atoi(argv[3]), sess_node = std::atoi(argv[4]), iters = std::atoi(argv[5]);
    auto s = Connect(dir, sess_node);
    auto sid = s->CreateSession(0, "bench responder");
    if (!sid.ok()) return 1;
    const uint64_t fs = 0xbe;
    if (!s->SetDisp(*sid, fs, 1u << 22).ok()) return 1;
    std::thread responder([&] {
      for (;;) {
        auto evs = s->GetEvents(*sid, 0, true, 5000);
        if (!evs.ok()) return;
        bool stop = false;
        for (auto& e : *evs) {
          if (!e.payload.empty() && e.payload[0] == 0xff) stop = true;
          (void)s->Respond(*sid, e.token, 1, 0);
        }
        if (stop) return;
      }
    });
    auto r = Connect(dir, raiser);
    std::vector<uint8_t> payload(64, 0);
    for (int i = 0; i < 200; ++i) (void)r->Raise(fs, 22, true, payload);
    std::vector<double> lat;
    int64_t total = 0;
    for (int i = 0; i < iters; ++i) {
      int64_t t0 = pdm::MonotonicNs();
      auto out = r->Raise(fs, 22, true, payload);
      int64_t dt = pdm::MonotonicNs() - t0;
      if (!out.ok() || out->response != 1) return 1;
      total += dt;
      lat.push_back(double(dt) / 1000.0);
    }
    payload[0] = 0xff;
    (void)r->Raise(fs, 22, true, payload);
    responder.join();
    (void)s->SetDisp(*sid, fs, 0);
    (void)s->DestroySession(*sid);
    std::printf("pdm_event raise_node=%d session_node=%d avg_us=%.2f median_us=%.2f\n", raiser, sess_node,
                double(total) / iters / 1000.0, Median(lat));
    return 0;
  }
  return 2;
}
