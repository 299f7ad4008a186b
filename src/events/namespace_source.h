// NamespaceSource: namespace, metadata and mount events of this node's view
// of the file system, raised as asynchronous DM events at this node's rank
// (issue 4, item 1, second half). The data events are EventSource's
// (events/source.h); this is the notification side.
//
// One fanotify *notification* group (FAN_CLASS_NOTIF) reporting file ids and
// names (FAN_REPORT_DFID_NAME_TARGET: the directory's fid and the entry name,
// plus the child's fid), so every event names its objects by kernel file
// handle and needs no fd. What the kernel does (Linux 6.18, ext4; checked by
// tests/unit/namespace_source_test.cc):
//  * create/delete/rename (dirent) events and FAN_ATTRIB / FAN_DELETE_SELF
//    cannot use mount marks (EINVAL), only inode or filesystem marks. A
//    filesystem mark sees every change of the file system through every
//    mount of it, so on one host all views (bind mounts) see each change.
//    Hence Options::raise_namespace: on each host only one rank (pdmd picks
//    the lowest rank on the host) has the filesystem mark and raises
//    POSTCREATE, POSTREMOVE, POSTRENAME, POSTLINK, POSTSYMLINK, ATTRIBUTE and
//    DESTROY; on a real cluster every rank is alone on its host, so every
//    node raises the events of its own node.
//  * FAN_CLOSE_WRITE does work with a mount mark, so CLOSE is raised by
//    every rank for its own view only: it comes from the node where the
//    file was written, as the data events do.
//  * A rename is one FAN_RENAME with the old and the new (dir fid, name).
//    link(2) and unlink(2) report FAN_ATTRIB on the inode *without* a
//    directory record (the link count changed), next to the FAN_CREATE /
//    FAN_DELETE in the directory; chmod, chown, utimes and setxattr report
//    FAN_ATTRIB with the directory record. That is how a new hard link
//    (POSTLINK) is told from a creation, and how a link-count change is kept
//    from becoming DM_EVENT_ATTRIBUTE. A symlink is a creation whose child
//    is a symlink (POSTSYMLINK).
//  * The kernel merges queued events of one object (e.g. CREATE|CLOSE_WRITE)
//    into one mask; the bits are raised in the order create, attribute,
//    close, rename, remove, destroy.
//
// DESTROY. The inode is gone by FAN_DELETE_SELF, so its return-on-destroy
// attribute (the fs-wide name in trusted.pdm.rod on the root, dm/attrs.h)
// can no longer be read. We therefore hold an fd to every file that carries
// that attribute or has DESTROY in its own event list, learnt from the
// FAN_ATTRIB that setxattr raises (dm_set_dmattr and dm_set_eventlist are
// setxattr). An open fd keeps the inode, and its xattrs, alive after the
// last unlink: when a link-count change shows nlink 0 through the held fd,
// the copy is read, DESTROY is raised, and the fd is closed so the kernel
// frees the inode. Objects without the attribute raise DESTROY at
// FAN_DELETE_SELF with an empty copy, if the file system's event list has
// DESTROY (their own list died with them). Holding fds, rather than
// copying every value into memory, keeps the copy exact (the value may
// change many times) and costs one fd per such file, only while a session
// holds the DESTROY disposition; at most Options::max_held_files (more
// files get an empty copy, with a warning). Files that got the attribute
// while no agent ran are not held (no scan at start): their DESTROY carries
// an empty copy. DESTROY comes at the last unlink, not at the last close:
// another process's open fd cannot be seen.
//
// Mount events: MOUNT when the agent attaches (Start) goes to the session
// holding the global (mount) disposition, as a synchronous event that Start
// does not wait for; PREUNMOUNT (synchronous: Stop waits for the answer, at
// most Options::preunmount_timeout) and UNMOUNT (asynchronous) when it
// detaches (Stop) go by the file system's disposition, when the file
// system's event list enables them. Every rank raises its own.
//
// Nothing is paid when nobody asked: right after each read of the group the
// dispositions of the file system are looked up once (from this node's
// replica; dm_set_disp returns only when every node has it, so an event that
// follows it sees it), and an event without a disposition is dropped before
// any syscall. An event with one is raised only if enabled: in the file
// system's event list, or the object's own (ATTRIBUTE, CLOSE, DESTROY) or
// the parent directory's (the POST events; either directory of a rename)
// list in trusted.pdm.events.
//
// Events caused by the agent itself, by other agents on this host, and by DM
// applications (Options::is_dm_app, or a process connected to one of
// Options::other_dmapi_sockets: the DMAPI sockets of the other ranks on this
// host, whose changes the filesystem mark sees too) raise nothing, so a DM
// application's dm_set_dmattr or dm_write_invis raises no ATTRIBUTE. DESTROY
// is the exception: it happens when the last link goes, whoever unlinked.
// The socket check runs when the event is read: a process that has exited
// or closed its connection by then is not recognised (nothing is left to
// look at), so a DM application's changes just before it exits may raise
// events.
//
// Thread-safety: Start/Stop from one thread. One reader thread; raising is
// asynchronous (Node::RaiseAsync), so the reader never waits for a session.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/node.h"
#include "cluster/types.h"
#include "common/posix.h"
#include "common/status.h"

namespace pdm::events {

// Where a NamespaceSource sends its events: the Node, or a fake in tests.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // The file system's event list (dm_set_eventlist on its handle).
  virtual uint64_t FsEvents(uint64_t fsid) = 0;
  // The union of the events some session holds the disposition of on fsid
  // (fsid 0: the global mount disposition).
  virtual uint64_t Dispositions(uint64_t fsid) = 0;
  virtual void Raise(const RaiseSpec& spec, Node::RaiseDone done) = 0;
};

// EventSink over a Node (the node agent).
class NodeSink final : public EventSink {
 public:
  explicit NodeSink(Node* node) : node_(node) {}
  uint64_t FsEvents(uint64_t fsid) override { return node_->GetFsEvents(fsid); }
  uint64_t Dispositions(uint64_t fsid) override;
  void Raise(const RaiseSpec& spec, Node::RaiseDone done) override { node_->RaiseAsync(spec, std::move(done)); }

 private:
  Node* const node_;
};

class NamespaceSource {
 public:
  struct Options {
    std::string view;  // this node's mount of the file system
    // Mark the whole file system and raise its namespace and metadata
    // events (see the top of this file). Default true: right for a node
    // alone on its host.
    bool raise_namespace = true;
    // True for this node's DM applications (LocalServer::IsClientPid).
    std::function<bool(int pid)> is_dm_app;
    // The other ranks on this host: their agents' pids, and their DMAPI
    // sockets (a process connected to one is a DM application). Empty on a
    // host with one rank.
    std::vector<int> other_agent_pids;
    std::vector<std::string> other_dmapi_sockets;
    // How long Stop waits for the answer to PREUNMOUNT (default 10 s).
    std::chrono::milliseconds preunmount_timeout{10000};
    // At most this many files are held open for DESTROY's attribute copy.
    size_t max_held_files = 65536;
  };

  // The DM events a NamespaceSource raises (for dm_get_config_events).
  static uint64_t GeneratedEvents();

  NamespaceSource(Options opts, Node* node);
  // sink must outlive the source.
  NamespaceSource(Options opts, EventSink* sink);
  ~NamespaceSource();
  NamespaceSource(const NamespaceSource&) = delete;
  NamespaceSource& operator=(const NamespaceSource&) = delete;

  // Creates the group and its marks, starts the reader, raises MOUNT.
  // Errors: the view cannot be opened, fanotify_init / fanotify_mark fail
  // (e.g. EPERM without CAP_SYS_ADMIN). Nothing runs after a failure.
  Status Start();
  // PREUNMOUNT (waits for its answer), stops the reader, closes the group
  // and the held files, UNMOUNT. Idempotent; a no-op if Start failed.
  void Stop();
  uint64_t fsid() const { return fsid_; }
  // Files held open for DESTROY (reader-thread state; for tests).
  size_t held_files() const { return held_count_.load(); }

 private:
  struct State;  // the reader thread's state
  void Run();
  void RaiseMount();
  void RaiseUnmount(unsigned type);

  const Options opts_;
  std::unique_ptr<NodeSink> own_sink_;
  EventSink* const sink_;
  UniqueFd view_fd_;
  uint64_t fsid_ = 0;
  UniqueFd group_;
  std::unique_ptr<State> state_;
  std::atomic<size_t> held_count_{0};
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  bool stopped_ = false;
  std::thread thread_;
};

// True if process pid has a Unix socket connected to a socket bound at one of
// paths (found with sock_diag: the peer of each of its sockets, and that
// peer's bound name). False when pid is gone, has no sockets, or paths is
// empty. Needs root to see other users' processes.
bool IsUnixClientOf(int pid, const std::vector<std::string>& paths);

}  // namespace pdm::events
