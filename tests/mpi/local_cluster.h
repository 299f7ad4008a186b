// LocalCluster: a real pdmd job (mpirun -np N, one process per rank) started
// with scripts/localcluster.sh for a test, and torn down after it.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "client/local_client.h"

namespace pdm::test {

class LocalCluster {
 public:
  LocalCluster(int n, const std::string& extra_args = "") : n_(n) {
    char tmpl[] = "/tmp/pdm-cluster-XXXXXX";
    dir_ = mkdtemp(tmpl);
    // %D in extra_args is the cluster's directory (e.g. --archive posix:%D/archive).
    std::string args = extra_args;
    for (size_t p; (p = args.find("%D")) != std::string::npos;) args.replace(p, 2, dir_);
    std::string cmd = std::string(PDM_SOURCE_DIR) + "/scripts/localcluster.sh up " + std::to_string(n) + " " + dir_ +
                      " -- --heartbeat-timeout-ms 1000 " + args + " > " + dir_ + "/up.log 2>&1";
    ::setenv("PDM_BUILD", PDM_BINARY_DIR, 1);
    ::setenv("PDM_BACKING_SIZE", "256M", 1);
    up_ = std::system(cmd.c_str()) == 0;
    if (!up_) std::system(("cat " + dir_ + "/up.log " + dir_ + "/state/pdmd.log >&2").c_str());
  }
  ~LocalCluster() {
    std::system((std::string(PDM_SOURCE_DIR) + "/scripts/localcluster.sh down " + dir_ + " >/dev/null 2>&1").c_str());
    std::system(("rm -rf " + dir_).c_str());
  }
  bool up() const { return up_; }
  const std::string& dir() const { return dir_; }
  std::string Socket(int k) const { return dir_ + "/state/node" + std::to_string(k) + ".sock"; }
  std::string View(int k) const { return dir_ + "/node" + std::to_string(k); }

  nlohmann::json ClusterJson() const {
    std::ifstream f(dir_ + "/state/cluster.json");
    nlohmann::json j;
    try {
      f >> j;
    } catch (...) {
    }
    return j;
  }
  int Pid(int k) const { return ClusterJson()["nodes"][k]["pid"].get<int>(); }
  // The real thing: SIGKILL to rank k's process.
  void Kill9(int k) const { ASSERT_EQ(::kill(Pid(k), SIGKILL), 0); }

  std::unique_ptr<LocalClient> Client(int k) const {
    auto c = LocalClient::Connect(Socket(k));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  template <typename P>
  static bool Eventually(P pred, int ms = 10000) {
    for (int i = 0; i < ms / 20; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
  }

 private:
  int n_;
  std::string dir_;
  bool up_ = false;
};

}  // namespace pdm::test
