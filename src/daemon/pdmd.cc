// pdmd: the pdm node agent, one MPI rank per node.
//
// Bootstrap is the only MPI traffic: ranks exchange host names, transport
// addresses and pids (MPI_Allgather) and rank 0 hands out the job secret
// (MPI_Bcast). After the barrier that says every rank is up, sessions,
// events and failure detection run over our own transport, so a rank killed
// with kill -9 (under mpirun --enable-recovery or srun --no-kill) leaves the
// others working.
#include <mpi.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cluster/node.h"
#include "common/log.h"
#include "daemon/local_server.h"
#include "events/source.h"
#include "hsm/service.h"
#include "events/namespace_source.h"
#include "transport/auth.h"
#include "transport/transport.h"

namespace {

constexpr const char* kVersion = "0.1.0";

struct Options {
  std::string fs_root;
  std::string view = "";           // %r is replaced by the rank
  std::string state_dir = "/run/pdm";
  std::string transport = "auto";
  std::string bind = "auto";
  int heartbeat_timeout_ms = 2000;
  int session_failure_timeout_ms = 60000;
  int connect_timeout_ms = 60000;
  int radix = 4;
  int max_sessions_per_node = 4000;
  std::string log_level = "info";
  std::string events = "auto";
  int64_t event_timeout_ms = 0;
  std::string archive;
  uint32_t archive_id = 1;
  int hsm_archive_threads = 4;
  int hsm_restore_threads = 2;
  uint64_t hsm_chunk_mib = 64;
  bool hsm_keep_on_destroy = false;
};

// pdm-eventd lives next to pdmd.
std::string SiblingExe(const char* name) {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return name;
  std::string dir(self, static_cast<size_t>(n));
  return dir.substr(0, dir.rfind('/') + 1) + name;
}

std::string ExpandRank(std::string pattern, int rank) {
  for (size_t p; (p = pattern.find("%r")) != std::string::npos;) pattern.replace(p, 2, std::to_string(rank));
  return pattern;
}

// Fixed-width strings for MPI_Allgather.
constexpr int kSlot = 256;
std::vector<std::string> AllgatherStrings(const std::string& mine, int size) {
  std::vector<char> send(kSlot, 0), recv(size_t(kSlot) * size, 0);
  std::strncpy(send.data(), mine.c_str(), kSlot - 1);
  MPI_Allgather(send.data(), kSlot, MPI_CHAR, recv.data(), kSlot, MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> out;
  for (int i = 0; i < size; ++i) out.emplace_back(recv.data() + size_t(i) * kSlot);
  return out;
}

int Fail(const std::string& what) {
  spdlog::critical("{}", what);
  MPI_Abort(MPI_COMM_WORLD, 1);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"pdmd: pdm node agent (run one rank per node with mpirun or srun)"};
  app.set_version_flag("--version", kVersion);
  app.add_option("--fs-root", o.fs_root, "The shared file system this cluster manages")->required();
  app.add_option("--view", o.view, "This node's view (mount point) of it; %r = rank (default: --fs-root)");
  app.add_option("--state-dir", o.state_dir, "Sockets and cluster.json go here")->capture_default_str();
  app.add_option("--transport", o.transport, "Control plane: auto (verbs if an RDMA device exists), tcp, verbs")
      ->capture_default_str();
  app.add_option("--bind", o.bind, "Address to listen on; auto = 127.0.0.1 when all ranks share a host, else the "
                                   "host name's address")
      ->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", o.heartbeat_timeout_ms,
                 "A node silent this long is declared failed (heartbeats every 1/4 of it)")
      ->capture_default_str()
      ->check(CLI::Range(100, 600000));
  app.add_option("--session-failure-timeout-ms", o.session_failure_timeout_ms,
                 "Synchronous events of a failed session node fail with EIO unless the session is assumed "
                 "within this time")
      ->capture_default_str()
      ->check(CLI::Range(0, 86400000));
  app.add_option("--connect-timeout-ms", o.connect_timeout_ms, "Bootstrap: time for every rank to connect")
      ->capture_default_str();
  app.add_option("--radix", o.radix, "k of the k-nomial broadcast tree")->capture_default_str()->check(
      CLI::Range(2, 64));
  app.add_option("--max-sessions-per-node", o.max_sessions_per_node, "Session limit per node (ENOMEM beyond)")
      ->capture_default_str();
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--events", o.events,
                 "Kernel data events (fanotify pre-content) on the view: auto (on where the file system "
                 "supports them), on (fail without them), off")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_option("--event-timeout-ms", o.event_timeout_ms,
                 "An access to a managed range that waits with no node agent attached (agent killed or "
                 "restarting) fails with EIO after this long; 0 = wait for the agent (as GPFS without "
                 "dmapiEventTimeout)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(86400000)));
  app.add_option("--archive", o.archive,
                 "Run the HSM (coordinator on the lowest live rank, workers on every rank) with this archive: "
                 "posix:DIR or hdf5:DIR (DIR shared by every node)");
  app.add_option("--archive-id", o.archive_id, "Archive number recorded in file states")->capture_default_str();
  app.add_option("--hsm-archive-threads", o.hsm_archive_threads, "Worker threads per rank that copy out")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--hsm-restore-threads", o.hsm_restore_threads,
                 "Worker threads per rank for recalls only (restores never wait behind archives)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--hsm-chunk-mib", o.hsm_chunk_mib, "Big files move in chunks of this many MiB, in parallel")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  app.add_flag("--hsm-keep-on-destroy", o.hsm_keep_on_destroy,
               "Keep the archive copy of a file that is deleted (default: drop it on DESTROY)");
  CLI11_PARSE(app, argc, argv);

  auto kind = pdm::ParseTransportKind(o.transport);
  if (!kind.ok()) {
    std::fprintf(stderr, "pdmd: %s\n", kind.status().message().c_str());
    return 2;
  }

  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  pdm::InitLogging("pdmd." + std::to_string(rank), o.log_level);
  if (geteuid() != 0) spdlog::warn("pdmd is not running as root: DMAPI clients must be root, and so should pdmd");

  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  auto hosts = AllgatherStrings(host, size);
  std::string bind = o.bind;
  if (bind == "auto") {
    bool one_host = true;
    for (const auto& h : hosts) one_host &= h == hosts[0];
    bind = one_host ? "127.0.0.1" : host;
  }

  ::mkdir(o.state_dir.c_str(), 0755);
  pdm::TransportOptions topts;
  topts.rank = rank;
  topts.size = size;
  topts.bind_host = bind;
  topts.failure_timeout_ms = o.heartbeat_timeout_ms;
  topts.connect_timeout_ms = o.connect_timeout_ms;
  if (rank == 0) topts.secret = pdm::auth::NewJobSecret();
  MPI_Bcast(topts.secret.data(), static_cast<int>(topts.secret.size()), MPI_BYTE, 0, MPI_COMM_WORLD);

  auto transport = pdm::MakeTransport(*kind, topts);
  if (!transport.ok()) return Fail("transport: " + transport.status().ToString());
  auto addr = (*transport)->Listen();
  if (!addr.ok()) return Fail("transport listen: " + addr.status().ToString());
  auto addrs = AllgatherStrings(*addr, size);
  auto pids = AllgatherStrings(std::to_string(getpid()), size);

  pdm::NodeOptions nopts;
  nopts.rank = rank;
  nopts.size = size;
  nopts.radix = o.radix;
  nopts.session_failure_timeout_ms = o.session_failure_timeout_ms;
  nopts.max_sessions_per_node = o.max_sessions_per_node;
  nopts.state_dir = o.state_dir;
  for (int r = 0; r < size; ++r)
    nopts.nodes.push_back(pdm::NodeStatic{r, std::atoi(pids[r].c_str()),
                                          ExpandRank(o.view.empty() ? o.fs_root : o.view, r),
                                          o.state_dir + "/node" + std::to_string(r) + ".sock"});
  // The event source and the node refer to each other: the node tells the
  // source when a file got managed regions (Rewatch).
  std::atomic<pdm::events::EventSource*> source_ptr{nullptr};
  nopts.rewatch = [&source_ptr](const std::string& object) {
    if (auto* s = source_ptr.load()) s->Rewatch(object);
  };
  pdm::Node node(nopts, transport->get());
  if (auto st = (*transport)->Start(addrs, &node); !st.ok()) return Fail("transport start: " + st.ToString());
  pdm::LocalServer server(&node, nopts.nodes[rank].socket);
  if (auto st = server.Start(); !st.ok()) return Fail("local API: " + st.ToString());
  std::unique_ptr<pdm::events::EventSource> source;
  if (o.events != "off") {
    pdm::events::EventSource::Options eo;
    eo.view = nopts.nodes[rank].view;
    eo.is_dm_app = [&server](int pid) { return server.IsClientPid(pid); };
    eo.supervisor_socket = o.state_dir + "/node" + std::to_string(rank) + ".eventd.sock";
    eo.supervisor_exe = SiblingExe("pdm-eventd");
    eo.supervisor_log = o.state_dir + "/node" + std::to_string(rank) + ".eventd.log";
    eo.event_timeout_ms = o.event_timeout_ms;
    source = std::make_unique<pdm::events::EventSource>(std::move(eo), &node);
    if (auto st = source->Start(); !st.ok()) {
      if (o.events == "on") return Fail("kernel events on " + nopts.nodes[rank].view + ": " + st.ToString());
      spdlog::warn("rank {}: no kernel data events on {} ({}); DM events come only from the DMAPI", rank,
                   nopts.nodes[rank].view, st.message());
      source.reset();
    } else {
      source_ptr = source.get();
      node.SetGeneratedEvents((1u << 16) | (1u << 17) | (1u << 18) | (1u << 22));  // READ WRITE TRUNCATE USER
    }
  }

  // Namespace, metadata and mount events (events/namespace_source.h). The
  // kernel reports a file system's namespace changes through every mount of
  // it, so on each host only the lowest rank raises them; every rank raises
  // CLOSE and the mount events of its own view.
  std::unique_ptr<pdm::events::NamespaceSource> ns_source;
  if (o.events != "off") {
    pdm::events::NamespaceSource::Options no;
    no.view = nopts.nodes[rank].view;
    no.is_dm_app = [&server](int pid) { return server.IsClientPid(pid); };
    int lowest_here = rank;
    for (int r = size - 1; r >= 0; --r)
      if (hosts[r] == hosts[rank]) lowest_here = r;
    no.raise_namespace = lowest_here == rank;
    for (int r = 0; r < size; ++r) {
      if (r == rank || hosts[r] != hosts[rank]) continue;
      no.other_agent_pids.push_back(nopts.nodes[r].pid);
      no.other_dmapi_sockets.push_back(nopts.nodes[r].socket);
    }
    ns_source = std::make_unique<pdm::events::NamespaceSource>(std::move(no), &node);
    if (auto st = ns_source->Start(); !st.ok()) {
      if (o.events == "on") return Fail("namespace events on " + nopts.nodes[rank].view + ": " + st.ToString());
      spdlog::warn("rank {}: no namespace events on {} ({})", rank, nopts.nodes[rank].view, st.message());
      ns_source.reset();
    } else {
      node.SetGeneratedEvents(node.generated_events() | pdm::events::NamespaceSource::GeneratedEvents());
    }
  }

  // Block the stop signals before any thread we start next inherits the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  MPI_Barrier(MPI_COMM_WORLD);  // every rank is up
  // Finalize now, while every rank is alive: it is collective, so later it
  // would hang on a dead rank, and a rank that dies still inside MPI makes
  // Slurm's PMIx plugin kill the whole job step (srun --no-kill does not
  // help). From here on we speak only our own transport.
  MPI_Finalize();
  node.Start();
  std::unique_ptr<pdm::hsm::Service> hsm;
  if (!o.archive.empty()) {
    pdm::hsm::Service::Options ho;
    ho.archive = o.archive;
    ho.archive_id = o.archive_id;
    ho.view = nopts.nodes[rank].view;
    ho.socket = nopts.nodes[rank].socket;
    ho.archive_threads = o.hsm_archive_threads;
    ho.restore_threads = o.hsm_restore_threads;
    ho.chunk_size = o.hsm_chunk_mib << 20;
    ho.remove_on_destroy = !o.hsm_keep_on_destroy;
    hsm = std::make_unique<pdm::hsm::Service>(std::move(ho), &node);
    // After node.Start: the HSM is a DM application of this very agent.
    if (auto st = hsm->Start(); !st.ok()) spdlog::critical("rank {}: HSM not started: {}", rank, st.ToString());
  }
  spdlog::info("rank {}/{} up: transport {} at {}, socket {}, view {}", rank, size, (*transport)->name(), *addr,
               nopts.nodes[rank].socket, nopts.nodes[rank].view);

  int sig = 0;
  sigwait(&stop, &sig);
  spdlog::info("rank {}: signal {}, stopping", rank, sig);
  if (ns_source) ns_source->Stop();  // before the node stops: PREUNMOUNT and UNMOUNT still go out
  node.Stop();
  source_ptr = nullptr;
  if (source) source->Stop();
  server.Stop();
  (*transport)->Stop();
  spdlog::shutdown();
  // MPI was finalized at start-up (see above), so ranks stop one by one.
  _exit(0);
}
