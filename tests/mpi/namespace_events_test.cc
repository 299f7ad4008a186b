// Namespace, metadata and mount events end to end on a 4-node local
// cluster: unmodified programs (mkdir, touch, echo, chmod, mv, ln, rm) work
// through node 3's view; a DM application on node 1 holds the dispositions
// and receives the asynchronous POST events, ATTRIBUTE, CLOSE and DESTROY;
// a rank stopped with SIGTERM raises PREUNMOUNT (which waits for the
// session's answer) and UNMOUNT.
#include <dmapi.h>
#include <signal.h>

#include <chrono>
#include <deque>
#include <sstream>
#include <thread>

#include "dmapi_child.h"

namespace pdm::test {
namespace {

using namespace std::chrono_literals;

int Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

std::string Printable(const void* p, size_t n) {
  std::string s(static_cast<const char*>(p), n);
  if (!s.empty() && s.back() == '\0') s.pop_back();
  return s.empty() ? "-" : s;
}

// One event as the DM application reports it:
//   "event TYPE NODE TOKEN h1=HEX h2=HEX n1=NAME n2=NAME"  (namespace layout)
//   "event 20 NODE TOKEN h1=HEX attr=NAME copy=VALUE"       (DESTROY)
struct Ev {
  int type = -1;
  unsigned node = 0;
  unsigned long long token = 0;
  std::string h1, h2, n1, n2, attr, copy;
};
Ev ParseEv(const std::string& line) {
  Ev e;
  std::istringstream in(line);
  std::string word;
  in >> word >> e.type >> e.node >> e.token;
  while (in >> word) {
    auto eq = word.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = word.substr(0, eq), v = word.substr(eq + 1);
    if (k == "h1") e.h1 = v;
    if (k == "h2") e.h2 = v;
    if (k == "n1") e.n1 = v;
    if (k == "n2") e.n2 = v;
    if (k == "attr") e.attr = v;
    if (k == "copy") e.copy = v;
  }
  return e;
}

// The DM application on node 1. Commands, one reply line each:
//   handle PATH        -> hex of dm_path_to_handle
//   setattr PATH VAL   -> dm_set_dmattr(rod attribute) -> "ok"
//   next MS            -> the next event within MS ms, or "none"
//   respond            -> CONTINUE to the last synchronous event -> "ok"
int DmApp(const std::string& view, uint64_t disp, uint64_t fs_list, bool mount_disp, FILE* r, FILE* w) {
  dm_sessid_t sid;
  CHILD_CHECK(dm_create_session(DM_NO_SESSION, "namespace events test", &sid) == 0);
  void* fsh;
  size_t fshl;
  CHILD_CHECK(dm_path_to_fshandle(view.c_str(), &fsh, &fshl) == 0);
  dm_eventset_t ev = disp;
  CHILD_CHECK(dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
  ev = fs_list;
  CHILD_CHECK(dm_set_eventlist(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
  if (mount_disp) {
    DMEV_ZERO(ev);
    DMEV_SET(DM_EVENT_MOUNT, ev);
    CHILD_CHECK(dm_set_disp(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
  }
  dm_attrname_t rod{};
  std::memcpy(rod.an_chars, "rodattr", 7);
  CHILD_CHECK(dm_set_return_on_destroy(sid, fsh, fshl, DM_NO_TOKEN, &rod, DM_TRUE) == 0);
  std::fprintf(w, "ready %s\n", Hex(fsh, fshl).c_str());
  static char buf[65536] __attribute__((aligned(8)));
  dm_token_t last = DM_INVALID_TOKEN;
  for (std::string cmd; !(cmd = ReadLineFromFile(r)).empty();) {
    std::istringstream in(cmd);
    std::string op;
    in >> op;
    if (op == "handle") {
      std::string path;
      in >> path;
      void* h;
      size_t hl;
      CHILD_CHECK(dm_path_to_handle(path.c_str(), &h, &hl) == 0);
      std::fprintf(w, "%s\n", Hex(h, hl).c_str());
      dm_handle_free(h, hl);
    } else if (op == "setattr") {
      std::string path, value;
      in >> path >> value;
      void* h;
      size_t hl;
      CHILD_CHECK(dm_path_to_handle(path.c_str(), &h, &hl) == 0);
      CHILD_CHECK(dm_set_dmattr(sid, h, hl, DM_NO_TOKEN, &rod, 0, value.size(), value.data()) == 0);
      dm_handle_free(h, hl);
      std::fprintf(w, "ok\n");
    } else if (op == "next") {
      int ms = 0;
      in >> ms;
      size_t rlen = 0;
      int rc = -1;
      for (int waited = 0;; waited += 20) {
        rc = dm_get_events(sid, 1, 0, sizeof(buf), buf, &rlen);
        if (rc == 0 || errno != EAGAIN || waited >= ms) break;
        std::this_thread::sleep_for(20ms);
      }
      if (rc != 0) {
        CHILD_CHECK(errno == EAGAIN);
        std::fprintf(w, "none\n");
        continue;
      }
      auto* m = reinterpret_cast<dm_eventmsg_t*>(buf);
      last = m->ev_token;
      std::string line = "event " + std::to_string(m->ev_type) + " " + std::to_string(m->ev_nodeid) + " " +
                         std::to_string(m->ev_token);
      if (m->ev_type == DM_EVENT_DESTROY) {
        auto* ds = DM_GET_VALUE(m, ev_data, dm_destroy_event_t*);
        line += " h1=" + Hex(DM_GET_VALUE(ds, ds_handle, void*), DM_GET_LEN(ds, ds_handle));
        line += " attr=" + Printable(ds->ds_attrname.an_chars, strnlen(reinterpret_cast<char*>(ds->ds_attrname.an_chars), 8));
        line += " copy=" + Printable(DM_GET_VALUE(ds, ds_attrcopy, void*), DM_GET_LEN(ds, ds_attrcopy));
      } else if (m->ev_type != DM_EVENT_MOUNT) {
        auto* ne = DM_GET_VALUE(m, ev_data, dm_namesp_event_t*);
        line += " h1=" + Hex(DM_GET_VALUE(ne, ne_handle1, void*), DM_GET_LEN(ne, ne_handle1));
        line += " h2=" + Hex(DM_GET_VALUE(ne, ne_handle2, void*), DM_GET_LEN(ne, ne_handle2));
        line += " n1=" + Printable(DM_GET_VALUE(ne, ne_name1, void*), DM_GET_LEN(ne, ne_name1));
        line += " n2=" + Printable(DM_GET_VALUE(ne, ne_name2, void*), DM_GET_LEN(ne, ne_name2));
      }
      std::fprintf(w, "%s\n", line.c_str());
    } else if (op == "respond") {
      CHILD_CHECK(dm_respond_event(sid, last, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
      std::fprintf(w, "ok\n");
    }
  }
  return 0;
}

constexpr uint64_t Bit(int e) { return uint64_t(1) << e; }

class NamespaceEvents : public ::testing::Test {
 protected:
  void StartApp(uint64_t disp, uint64_t fs_list, bool mount_disp) {
    ASSERT_TRUE(lc_.up());
    app_ = Child::Start(lc_, 1, [=, this](FILE* r, FILE* w) { return DmApp(lc_.View(1), disp, fs_list, mount_disp, r, w); });
    const std::string ready = app_.ReadLine();
    ASSERT_EQ(ready.rfind("ready ", 0), 0u) << ready;
    fs_handle_ = ready.substr(6);
  }
  void TearDown() override {
    if (app_.pid > 0) {
      fclose(app_.out);
      app_.out = nullptr;
      EXPECT_EQ(app_.Wait(), 0);
    }
  }
  std::string Ask(const std::string& cmd) {
    app_.Send(cmd);
    return app_.ReadLine();
  }
  // The first event (already received, or arriving within the deadline)
  // that matches; others stay in the backlog. Events of different raisers
  // (CLOSE comes from node 3, the rest from node 0) are not ordered.
  template <typename P>
  std::optional<Ev> WaitFor(P pred, int ms = 8000) {
    for (auto it = backlog_.begin(); it != backlog_.end(); ++it)
      if (pred(*it)) {
        Ev e = *it;
        backlog_.erase(it);
        return e;
      }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string line = Ask("next 500");
      if (line == "none") continue;
      if (line.rfind("event ", 0) != 0) {
        ADD_FAILURE() << "DM application said: " << line;
        return std::nullopt;
      }
      Ev e = ParseEv(line);
      if (pred(e)) return e;
      backlog_.push_back(e);
    }
    return std::nullopt;
  }
  std::optional<Ev> WaitFor(int type, const std::string& n1) {
    return WaitFor([&](const Ev& e) { return e.type == type && e.n1 == n1; });
  }
  std::optional<Ev> WaitForHandle(int type, const std::string& h1) {
    return WaitFor([&](const Ev& e) { return e.type == type && e.h1 == h1; });
  }

  LocalCluster lc_{4};
  Child app_;
  std::string fs_handle_;
  std::deque<Ev> backlog_;
};

TEST_F(NamespaceEvents, ProgramsOnNode3RaisePostEventsAttributeCloseAndDestroyAtTheSession) {
  const uint64_t wanted = Bit(DM_EVENT_POSTCREATE) | Bit(DM_EVENT_POSTREMOVE) | Bit(DM_EVENT_POSTRENAME) |
                          Bit(DM_EVENT_ATTRIBUTE) | Bit(DM_EVENT_CLOSE) | Bit(DM_EVENT_DESTROY);
  // POSTLINK has a disposition but is in no event list: never delivered.
  StartApp(wanted | Bit(DM_EVENT_POSTLINK), wanted, false);
  const std::string v3 = lc_.View(3), v1 = lc_.View(1);
  const std::string root = Ask("handle " + v1);

  ASSERT_EQ(Sh("mkdir " + v3 + "/d"), 0);
  auto e = WaitFor(DM_EVENT_POSTCREATE, "d");
  ASSERT_TRUE(e.has_value()) << "mkdir: POSTCREATE";
  EXPECT_EQ(e->token, 0u) << "asynchronous";
  EXPECT_EQ(e->h1, root) << "handle1: the parent, as dm_path_to_handle names it";
  const std::string d = Ask("handle " + v1 + "/d");
  EXPECT_EQ(e->h2, d) << "handle2: the new directory";

  ASSERT_EQ(Sh("touch " + v3 + "/d/f"), 0);
  e = WaitFor(DM_EVENT_POSTCREATE, "f");
  ASSERT_TRUE(e.has_value()) << "touch: POSTCREATE";
  EXPECT_EQ(e->h1, d);
  const std::string f = Ask("handle " + v1 + "/d/f");
  EXPECT_EQ(e->h2, f);
  // touch opens the new file for writing and sets its times, so it raises a
  // CLOSE (node 3) and an ATTRIBUTE (node 0) of its own. Both are taken
  // here: CLOSE and node 0's events are not ordered with each other, and a
  // leftover of touch's would be taken for the next command's (touch's
  // CLOSE for echo's, then touch's ATTRIBUTE for chmod's, leaving chmod's
  // to look like the DM application's below).
  e = WaitForHandle(DM_EVENT_ATTRIBUTE, f);
  ASSERT_TRUE(e.has_value()) << "touch's utimes: ATTRIBUTE";
  e = WaitFor([&](const Ev& x) { return x.type == DM_EVENT_CLOSE && x.h1 == f; });
  ASSERT_TRUE(e.has_value()) << "touch's close: CLOSE";

  ASSERT_EQ(Sh("sh -c 'echo hello > " + v3 + "/d/f'"), 0);
  e = WaitFor([&](const Ev& x) { return x.type == DM_EVENT_CLOSE && x.h1 == f; });
  ASSERT_TRUE(e.has_value()) << "a written file's close: CLOSE";
  EXPECT_EQ(e->node, 3u) << "CLOSE comes from the node whose view was written";

  ASSERT_EQ(Sh("chmod 600 " + v3 + "/d/f"), 0);
  e = WaitForHandle(DM_EVENT_ATTRIBUTE, f);
  ASSERT_TRUE(e.has_value()) << "chmod: ATTRIBUTE";

  ASSERT_EQ(Sh("mv " + v3 + "/d/f " + v3 + "/d/g"), 0);
  e = WaitFor(DM_EVENT_POSTRENAME, "f");
  ASSERT_TRUE(e.has_value()) << "mv: POSTRENAME";
  EXPECT_EQ(e->n2, "g");
  EXPECT_EQ(e->h1, d);
  EXPECT_EQ(e->h2, d);

  // Node 0 raises in order: once the fence's POSTCREATE is here, so is
  // every ATTRIBUTE of the commands above, and none may be left over.
  ASSERT_EQ(Sh("mkdir " + v3 + "/d/fence"), 0);
  ASSERT_TRUE(WaitFor(DM_EVENT_POSTCREATE, "fence").has_value());
  for (const Ev& x : backlog_)
    EXPECT_FALSE(x.type == DM_EVENT_ATTRIBUTE && x.h1 == f) << "an ATTRIBUTE no command above accounts for";

  // The HSM records where the data went; its own dm_set_dmattr raises no
  // ATTRIBUTE (node 0 raises these namespace events and must recognise a
  // DM application of node 1: IsUnixClientOf), a hard link no POSTLINK (not
  // enabled), and the marker's POSTCREATE comes after anything they would
  // have raised. Several changes, several chances to miss one.
  backlog_.clear();
  for (const char* value : {"archive-40", "archive-41", "archive-42"})
    ASSERT_EQ(Ask("setattr " + v1 + "/d/g " + value), "ok");
  ASSERT_EQ(Sh("ln " + v3 + "/d/g " + v3 + "/d/h && rm " + v3 + "/d/h"), 0);
  ASSERT_EQ(Sh("mkdir " + v3 + "/d/marker"), 0);
  ASSERT_TRUE(WaitFor(DM_EVENT_POSTCREATE, "marker").has_value());
  for (const Ev& x : backlog_) {
    EXPECT_NE(x.type, DM_EVENT_POSTLINK) << "POSTLINK is not enabled";
    EXPECT_FALSE(x.type == DM_EVENT_ATTRIBUTE && x.h1 == f) << "a DM application's change raised ATTRIBUTE";
  }
  EXPECT_TRUE(WaitFor(DM_EVENT_POSTREMOVE, "h").has_value()) << "rm of the second link";

  ASSERT_EQ(Sh("rm " + v3 + "/d/g"), 0);
  e = WaitFor(DM_EVENT_POSTREMOVE, "g");
  ASSERT_TRUE(e.has_value()) << "rm: POSTREMOVE";
  EXPECT_EQ(e->h1, d);
  e = WaitForHandle(DM_EVENT_DESTROY, f);
  ASSERT_TRUE(e.has_value()) << "the last link went: DESTROY";
  EXPECT_EQ(e->attr, "rodattr");
  EXPECT_EQ(e->copy, "archive-42") << "the return-on-destroy attribute is copied in";

  ASSERT_EQ(Sh("rmdir " + v3 + "/d/marker"), 0);
  e = WaitFor(DM_EVENT_POSTREMOVE, "marker");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->h1, d);
  EXPECT_FALSE(WaitFor([](const Ev& x) { return x.type == DM_EVENT_POSTLINK; }, 300).has_value());
}

TEST_F(NamespaceEvents, SigtermOfARankRaisesPreunmountWaitsForTheAnswerThenUnmount) {
  const uint64_t mnt = Bit(DM_EVENT_PREUNMOUNT) | Bit(DM_EVENT_UNMOUNT);
  StartApp(mnt, mnt, true);
  const int pid = lc_.Pid(3);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  auto e = WaitFor([](const Ev& x) { return x.type == DM_EVENT_PREUNMOUNT; });
  ASSERT_TRUE(e.has_value()) << "PREUNMOUNT";
  EXPECT_EQ(e->node, 3u);
  EXPECT_NE(e->token, 0u) << "synchronous";
  EXPECT_EQ(e->h1, fs_handle_);
  EXPECT_EQ(e->h2, Ask("handle " + lc_.View(1))) << "handle2: the root";
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(::kill(pid, 0), 0) << "the rank waits for the answer before it detaches";
  EXPECT_FALSE(WaitFor([](const Ev& x) { return x.type == DM_EVENT_UNMOUNT; }, 200).has_value());
  ASSERT_EQ(Ask("respond"), "ok");
  e = WaitFor([](const Ev& x) { return x.type == DM_EVENT_UNMOUNT; });
  ASSERT_TRUE(e.has_value()) << "UNMOUNT";
  EXPECT_EQ(e->node, 3u);
  EXPECT_EQ(e->token, 0u) << "asynchronous";
  EXPECT_EQ(e->h1, fs_handle_);
  // The other ranks raised none: only the stopped rank detached.
  EXPECT_FALSE(WaitFor([](const Ev& x) { return x.type == DM_EVENT_PREUNMOUNT || x.type == DM_EVENT_UNMOUNT; }, 300)
                   .has_value());
}

}  // namespace
}  // namespace pdm::test
