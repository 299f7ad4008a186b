// LocalServer: the node agent's DMAPI service socket, <state-dir>/node<rank>.sock.
//
// Protocol (wire/local.fbs): on each connection the client sends Request
// frames and gets one Reply per Request, in order. A frame is [u32 length,
// little endian][FlatBuffer]; a frame over wire::kMaxLocalFrame or one the
// decoder rejects ends the connection after an EBADMSG reply. The socket is
// mode 0600 and every connection's credentials are checked with SO_PEERCRED:
// a non-root peer gets one Reply with EPERM and is disconnected.
//
// One thread serves each connection, so a client blocked in GetEvents(wait)
// or in a synchronous Raise does not hold up anybody else.
//
// Thread-safety: Start/Stop from one thread; the serving threads only call
// the (thread-safe) Node.
#pragma once

#include <atomic>
#include <condition_variable>
#include <list>
#include <set>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/node.h"
#include "common/posix.h"

namespace pdm {

class LocalServer {
 public:
  LocalServer(Node* node, std::string path);
  ~LocalServer();
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;

  Status Start();
  void Stop();  // call after Node::Stop so blocked calls have returned
  const std::string& path() const { return path_; }
  // True while process `pid` has a connection open: it is a DM application
  // (its I/O raises no data events, see events/source.h).
  bool IsClientPid(int pid);

 private:
  void AcceptLoop();
  void Serve(int fd);

  Node* const node_;
  const std::string path_;
  UniqueFd listen_fd_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::list<int> client_fds_;     // GUARDED_BY(mu_): shut down on Stop
  int active_ = 0;                  // GUARDED_BY(mu_): serving threads
  std::multiset<int> client_pids_;  // GUARDED_BY(mu_)
  std::condition_variable idle_;
  std::thread acceptor_;
};

}  // namespace pdm
