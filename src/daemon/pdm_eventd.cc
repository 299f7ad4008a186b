// pdm-eventd: a node's event supervisor (events/supervisor.h). pdmd starts
// it on demand and attaches to it; it outlives pdmd so that a killed or
// restarted agent never lets a released range read as zeros.
//
//   pdm-eventd --view DIR --socket PATH [--group-fd N]
//
// SIGTERM or SIGINT detaches the node from the file system: accesses still
// waiting fail with EIO, then the group closes. It writes PATH.pid while it
// runs (scripts/localcluster.sh down stops it through that file).
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <thread>

#include "common/log.h"
#include "events/supervisor.h"

int main(int argc, char** argv) {
  pdm::events::Supervisor::Options o;
  std::string log_level = "info";
  CLI::App app{"pdm-eventd: holds a node's fanotify pre-content group across node-agent restarts"};
  app.set_version_flag("--version", "0.1.0");
  app.add_option("--view", o.view, "The node's view (mount point) of the file system")->required();
  app.add_option("--socket", o.socket, "Unix socket the node agent attaches to")->required();
  app.add_option("--group-fd", o.inherit_group_fd, "Adopt this fanotify group fd instead of creating one");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  pdm::InitLogging("pdm-eventd", log_level);

  // Signals go to one thread, which stops the loop; the loop then fails what
  // is held with EIO. Blocked before any thread exists so all inherit it.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  pdm::events::Supervisor sup(o);
  if (auto st = sup.Start(); !st.ok()) {
    spdlog::critical("cannot start on {}: {}", o.view, st.ToString());
    return st.err() == EADDRINUSE ? 0 : 1;  // another supervisor serves the node: fine
  }
  const std::string pidfile = o.socket + ".pid";
  std::ofstream(pidfile) << getpid() << "\n";
  spdlog::info("serving {} at {}", o.view, o.socket);
  std::thread sigs([&] {
    int sig = 0;
    sigwait(&stop, &sig);
    spdlog::info("signal {}: detaching from {}", sig, o.view);
    sup.Stop();
  });
  auto st = sup.Run();
  ::unlink(pidfile.c_str());
  if (!st.ok()) spdlog::error("{}", st.ToString());
  // The signal thread may still wait; leave without joining it.
  spdlog::shutdown();
  _exit(st.ok() ? 0 : 1);
}
