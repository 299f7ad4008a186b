// pdm-cluster: look at (and poke) a running pdmd cluster through the local
// node agent: membership, the session manager, sessions.
//
//   pdm-cluster status [--json]
//   pdm-cluster sessions [--json]
//   pdm-cluster create-session --info TEXT      prints the new session id
//   pdm-cluster destroy-session SID
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "client/local_client.h"

namespace {

int Report(const pdm::Status& st, const char* what) {
  std::fprintf(stderr, "pdm-cluster: %s: %s\n", what, st.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pdm-cluster: cluster membership and sessions of a running pdmd"};
  app.set_version_flag("--version", "0.1.0");
  std::string socket;
  bool json = false;
  app.add_option("--socket", socket, "Node agent socket (default $DMAPI_SOCKET or /run/pdm/dmapi.sock)");
  app.add_flag("--json", json, "Machine-readable output");
  auto* status = app.add_subcommand("status", "Nodes, liveness and the session manager");
  auto* sessions = app.add_subcommand("sessions", "Every session in the cluster");
  auto* create = app.add_subcommand("create-session", "Create a session owned by this node");
  std::string info;
  create->add_option("--info", info, "Session info string")->required();
  auto* destroy = app.add_subcommand("destroy-session", "Destroy a session of this node");
  uint64_t sid = 0;
  destroy->add_option("sid", sid, "Session id")->required();
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);

  auto client = pdm::LocalClient::Connect(socket);
  if (!client.ok()) return Report(client.status(), "connect");
  auto& c = **client;

  if (*status) {
    auto v = c.Cluster();
    if (!v.ok()) return Report(v.status(), "status");
    if (json) {
      nlohmann::json j{{"rank", v->rank}, {"session_manager", v->session_manager}, {"nodes", nlohmann::json::array()}};
      for (size_t i = 0; i < v->nodes.size(); ++i)
        j["nodes"].push_back({{"rank", v->nodes[i].rank}, {"pid", v->nodes[i].pid}, {"alive", bool(v->alive[i])},
                              {"view", v->nodes[i].view}, {"socket", v->nodes[i].socket}});
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("asked node %d; session manager: node %d\n", v->rank, v->session_manager);
      for (size_t i = 0; i < v->nodes.size(); ++i)
        std::printf("  node %d  pid %-7d %-5s view %s\n", v->nodes[i].rank, v->nodes[i].pid,
                    v->alive[i] ? "up" : "DOWN", v->nodes[i].view.c_str());
    }
    return 0;
  }
  if (*sessions) {
    auto v = c.AllSessions();
    if (!v.ok()) return Report(v.status(), "sessions");
    if (json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& s : *v)
        j.push_back({{"sid", s.rec.sid}, {"node", s.rec.owner}, {"node_alive", s.owner_alive}, {"info", s.rec.info}});
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%zu sessions (seen from node %d)\n", v->size(), c.rank());
      for (const auto& s : *v)
        std::printf("  sid %-20llu node %d%s  \"%s\"\n", static_cast<unsigned long long>(s.rec.sid), s.rec.owner,
                    s.owner_alive ? "" : " (node down)", s.rec.info.c_str());
    }
    return 0;
  }
  if (*create) {
    auto r = c.CreateSession(0, info);
    if (!r.ok()) return Report(r.status(), "create-session");
    std::printf("%llu\n", static_cast<unsigned long long>(*r));
    return 0;
  }
  if (*destroy) {
    auto st = c.DestroySession(sid);
    if (!st.ok()) return Report(st, "destroy-session");
    return 0;
  }
  return 0;
}
