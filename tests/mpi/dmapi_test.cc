// libdmapi against a real pdmd cluster (mpirun, 4 ranks). Every DMAPI call
// runs in a child process whose DMAPI_SOCKET names the node it is "on", the
// way DM applications on different nodes would run.
#include <dmapi.h>
#include <fcntl.h>
#include <sys/wait.h>

#include <fstream>
#include <set>
#include <sstream>

#include "dmapi_child.h"

namespace pdm::test {
namespace {


TEST(Dmapi, SampleCApplicationAnswersUserEventsFromOtherNodes) {
  LocalCluster lc(4);
  ASSERT_TRUE(lc.up());
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  pid_t app = fork();
  if (app == 0) {
    dup2(out[1], 1);
    close(out[0]);
    setenv("DMAPI_SOCKET", lc.Socket(1).c_str(), 1);
    execl(PDM_BINARY_DIR "/bin/dm_responder", "dm_responder", lc.View(1).c_str(), "5", nullptr);
    _exit(127);
  }
  close(out[1]);
  FILE* appout = fdopen(out[0], "r");
  std::string first = ReadLineFromFile(appout);
  ASSERT_EQ(first.rfind("session ", 0), 0u) << first;
  const dm_sessid_t sid = std::stoull(first.substr(8));

  auto sender = [&](int node, const char* text, dm_msgtype_t type, int want_errno) {
    return Child::Start(lc, node, [=](FILE*, FILE*) {
      int rc = dm_send_msg(sid, type, std::strlen(text), const_cast<char*>(text));
      if (want_errno == 0) CHILD_CHECK(rc == 0);
      else CHILD_CHECK(rc == -1 && errno == want_errno);
      return 0;
    });
  };
  std::vector<Child> kids;
  kids.push_back(sender(0, "hello from node 0", DM_MSGTYPE_SYNC, 0));
  kids.push_back(sender(2, "hello from node 2", DM_MSGTYPE_SYNC, 0));
  kids.push_back(sender(3, "hello from node 3", DM_MSGTYPE_SYNC, 0));
  kids.push_back(sender(3, "abort", DM_MSGTYPE_SYNC, EAGAIN));  // the ABORT's errno reaches the sender
  kids.push_back(sender(0, "async hello", DM_MSGTYPE_ASYNC, 0));
  for (auto& k : kids) EXPECT_EQ(k.Wait(), 0);

  std::string all;
  for (std::string l; !(l = ReadLineFromFile(appout)).empty();) all += l + "\n";
  int st = 0;
  waitpid(app, &st, 0);
  fclose(appout);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0) << all;
  for (const char* want : {"from node 0 token", "from node 2 token", "from node 3 token", ": abort",
                           "token 0: async hello", "done: 5 events, session destroyed"})
    EXPECT_NE(all.find(want), std::string::npos) << "missing '" << want << "' in:\n" << all;
}

TEST(Dmapi, GetAllSessionsOnNode3ListsSessionsOfNodes0To2) {
  LocalCluster lc(4);
  ASSERT_TRUE(lc.up());
  std::set<dm_sessid_t> made;
  for (int k = 0; k < 3; ++k) {
    Child c = Child::Start(lc, k, [k](FILE*, FILE* w) {
      dm_sessid_t sid;
      std::string info = "app on node " + std::to_string(k);
      CHILD_CHECK(dm_create_session(DM_NO_SESSION, info.c_str(), &sid) == 0);
      std::fprintf(w, "%llu\n", static_cast<unsigned long long>(sid));
      return 0;
    });
    made.insert(std::stoull(c.ReadLine()));
    ASSERT_EQ(c.Wait(), 0);
  }
  const dm_sessid_t sid0 = *made.begin();
  Child q = Child::Start(lc, 3, [sid0](FILE*, FILE* w) {
    unsigned n = 0;
    CHILD_CHECK(dm_getall_sessions(0, nullptr, &n) == -1 && errno == E2BIG && n == 3);
    dm_sessid_t ids[8];
    CHILD_CHECK(dm_getall_sessions(8, ids, &n) == 0 && n == 3);
    for (unsigned i = 0; i < n; ++i) std::fprintf(w, "%llu\n", static_cast<unsigned long long>(ids[i]));
    char buf[DM_SESSION_INFO_LEN];
    size_t rlen = 0;
    CHILD_CHECK(dm_query_session(sid0, 4, buf, &rlen) == -1 && errno == E2BIG && rlen == 14);
    CHILD_CHECK(dm_query_session(sid0, sizeof(buf), buf, &rlen) == 0 && std::string(buf) == "app on node 0");
    CHILD_CHECK(dm_query_session(12345, sizeof(buf), buf, &rlen) == -1 && errno == EINVAL);
    return 0;
  });
  std::set<dm_sessid_t> listed;
  for (int i = 0; i < 3; ++i) listed.insert(std::stoull(q.ReadLine()));
  EXPECT_EQ(q.Wait(), 0);
  EXPECT_EQ(listed, made);
}

TEST(Dmapi, HandleMadeOnNode0WorksOnNode3) {
  LocalCluster lc(4);
  ASSERT_TRUE(lc.up());
  const std::string content = "bytes written through node 0\n";
  { std::ofstream(lc.View(0) + "/data.txt") << content; }
  Child a = Child::Start(lc, 0, [&](FILE*, FILE* w) {
    void* h;
    size_t hl;
    CHILD_CHECK(dm_path_to_handle((lc.View(0) + "/data.txt").c_str(), &h, &hl) == 0);
    CHILD_CHECK(dm_handle_is_valid(h, hl) == DM_TRUE);
    std::fprintf(w, "%s\n", Hex(h, hl).c_str());
    return 0;
  });
  std::vector<uint8_t> handle = Unhex(a.ReadLine());
  ASSERT_EQ(a.Wait(), 0);
  ASSERT_FALSE(handle.empty());
  Child b = Child::Start(lc, 3, [&](FILE*, FILE*) {
    dm_sessid_t sid;
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, "reader on node 3", &sid) == 0);
    char buf[256] = {0};
    dm_ssize_t n = dm_read_invis(sid, handle.data(), handle.size(), DM_NO_TOKEN, 0, sizeof(buf), buf);
    CHILD_CHECK(n == static_cast<dm_ssize_t>(content.size()) && std::string(buf, n) == content);
    char path[4096];
    size_t rlen;
    void* fsh;
    size_t fshl;
    CHILD_CHECK(dm_handle_to_fshandle(handle.data(), handle.size(), &fsh, &fshl) == 0);
    CHILD_CHECK(dm_handle_to_path(fsh, fshl, handle.data(), handle.size(), sizeof(path), path, &rlen) == 0);
    CHILD_CHECK(std::string(path) == lc.View(3) + "/data.txt");
    dm_stat_t st;
    CHILD_CHECK(dm_get_fileattr(sid, handle.data(), handle.size(), DM_NO_TOKEN, DM_AT_STAT, &st) == 0);
    CHILD_CHECK(st.dt_size == static_cast<dm_off_t>(content.size()));
    dm_attrname_t name;
    std::memset(&name, 0, sizeof(name));
    std::memcpy(name.an_chars, "hsmstate", 8);
    CHILD_CHECK(dm_set_dmattr(sid, handle.data(), handle.size(), DM_NO_TOKEN, &name, 0, 8, (void*)"archived") == 0);
    char v[16];
    CHILD_CHECK(dm_get_dmattr(sid, handle.data(), handle.size(), DM_NO_TOKEN, &name, 2, v, &rlen) == -1 &&
                errno == E2BIG && rlen == 8);
    CHILD_CHECK(dm_get_dmattr(sid, handle.data(), handle.size(), DM_NO_TOKEN, &name, sizeof(v), v, &rlen) == 0 &&
                std::string(v, rlen) == "archived");
    // A handle with a broken header is refused, not followed.
    std::vector<uint8_t> bad = handle;
    bad[0] ^= 0xff;
    CHILD_CHECK(dm_read_invis(sid, bad.data(), bad.size(), DM_NO_TOKEN, 0, 1, buf) == -1 && errno == EBADF);
    CHILD_CHECK(dm_handle_is_valid(bad.data(), bad.size()) == DM_FALSE);
    CHILD_CHECK(dm_destroy_session(sid) == 0);
    return 0;
  });
  EXPECT_EQ(b.Wait(), 0);
}

TEST(Dmapi, ExclusiveRightsExcludeEachOtherAcrossNodes) {
  LocalCluster lc(4);
  ASSERT_TRUE(lc.up());
  { std::ofstream(lc.View(0) + "/locked.txt") << "x"; }
  auto holder = [&](int node) {
    return [&lc, node](FILE* r, FILE* w) {
      dm_sessid_t sid;
      dm_token_t tok;
      void* h;
      size_t hl;
      CHILD_CHECK(dm_create_session(DM_NO_SESSION, "rights", &sid) == 0);
      CHILD_CHECK(dm_create_userevent(sid, 0, nullptr, &tok) == 0);
      CHILD_CHECK(dm_path_to_handle((lc.View(node) + "/locked.txt").c_str(), &h, &hl) == 0);
      for (std::string cmd; !(cmd = ReadLineFromFile(r)).empty();) {
        int rc = 0;
        if (cmd == "excl") rc = dm_request_right(sid, h, hl, tok, 0, DM_RIGHT_EXCL);
        if (cmd == "shared") rc = dm_request_right(sid, h, hl, tok, 0, DM_RIGHT_SHARED);
        if (cmd == "excl-wait") rc = dm_request_right(sid, h, hl, tok, DM_RR_WAIT, DM_RIGHT_EXCL);
        if (cmd == "release") rc = dm_release_right(sid, h, hl, tok);
        if (cmd == "query") {
          dm_right_t right;
          rc = dm_query_right(sid, h, hl, tok, &right);
          if (rc == 0) rc = static_cast<int>(right);
        }
        if (cmd == "quit") break;
        std::fprintf(w, "%d %d\n", rc, rc == -1 ? errno : 0);
      }
      CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
      CHILD_CHECK(dm_destroy_session(sid) == 0);
      return 0;
    };
  };
  Child a = Child::Start(lc, 1, holder(1));
  Child b = Child::Start(lc, 2, holder(2));
  a.Send("excl");
  EXPECT_EQ(a.ReadLine(), "0 0");
  b.Send("excl");
  EXPECT_EQ(b.ReadLine(), "-1 " + std::to_string(EAGAIN));
  b.Send("shared");
  EXPECT_EQ(b.ReadLine(), "-1 " + std::to_string(EAGAIN));
  a.Send("query");
  EXPECT_EQ(a.ReadLine(), "2 0");
  b.Send("excl-wait");  // blocks until node 1 lets go
  a.Send("release");
  EXPECT_EQ(a.ReadLine(), "0 0");
  EXPECT_EQ(b.ReadLine(), "0 0");
  a.Send("shared");
  EXPECT_EQ(a.ReadLine(), "-1 " + std::to_string(EAGAIN));
  a.Send("quit");
  b.Send("quit");
  EXPECT_EQ(a.Wait(), 0);
  EXPECT_EQ(b.Wait(), 0);
}

TEST(Dmapi, EventsAndErrorsFollowTheSpec) {
  LocalCluster lc(2);
  ASSERT_TRUE(lc.up());
  Child c = Child::Start(lc, 1, [&](FILE*, FILE*) {
    dm_sessid_t sid, other;
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, nullptr, &sid) == -1 && errno == EFAULT);
    std::string longinfo(DM_SESSION_INFO_LEN, 'x');
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, longinfo.c_str(), &sid) == -1 && errno == E2BIG);
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, "events", &sid) == 0);
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, "other", &other) == 0);
    CHILD_CHECK(dm_create_session(999999, "assume unknown", &other) == -1 && errno == EINVAL);
    CHILD_CHECK(dm_destroy_session(424242) == -1 && errno == EINVAL);
    char buf[4096] __attribute__((aligned(8)));
    size_t rlen;
    CHILD_CHECK(dm_get_events(sid, 0, 0, sizeof(buf), buf, &rlen) == -1 && errno == EAGAIN);
    // A user message to ourselves: E2BIG keeps it queued and says the size.
    const char* text = "0123456789abcdef0123456789";
    CHILD_CHECK(dm_send_msg(sid, DM_MSGTYPE_ASYNC, std::strlen(text), const_cast<char*>(text)) == 0);
    CHILD_CHECK(dm_get_events(sid, 0, DM_EV_WAIT, 16, buf, &rlen) == -1 && errno == E2BIG &&
                rlen >= sizeof(dm_eventmsg_t) + std::strlen(text));
    CHILD_CHECK(dm_get_events(sid, 0, DM_EV_WAIT, sizeof(buf), buf, &rlen) == 0);
    auto* m = reinterpret_cast<dm_eventmsg_t*>(buf);
    CHILD_CHECK(m->ev_type == DM_EVENT_USER && m->ev_token == DM_INVALID_TOKEN && m->ev_nodeid == 1);
    CHILD_CHECK(DM_GET_LEN(m, ev_data) == std::strlen(text) &&
                std::memcmp(DM_GET_VALUE(m, ev_data, char*), text, std::strlen(text)) == 0);
    CHILD_CHECK(DM_STEP_TO_NEXT(m, dm_eventmsg_t*) == nullptr);
    CHILD_CHECK(dm_send_msg(sid, DM_MSGTYPE_INVALID, 1, buf) == -1 && errno == EINVAL);
    CHILD_CHECK(dm_send_msg(0, DM_MSGTYPE_ASYNC, 1, buf) == -1 && errno == EINVAL);
    // Tokens: user-event tokens are outstanding at once; respond rules.
    dm_token_t tok;
    CHILD_CHECK(dm_create_userevent(sid, 3, (void*)"abc", &tok) == 0);
    dm_token_t toks[4];
    unsigned n;
    CHILD_CHECK(dm_getall_tokens(sid, 0, toks, &n) == -1 && errno == E2BIG && n == 1);
    CHILD_CHECK(dm_getall_tokens(sid, 4, toks, &n) == 0 && n == 1 && toks[0] == tok);
    CHILD_CHECK(dm_find_eventmsg(sid, tok, sizeof(buf), buf, &rlen) == 0 && m->ev_token == tok);
    CHILD_CHECK(DM_GET_LEN(m, ev_data) == 3 && std::memcmp(DM_GET_VALUE(m, ev_data, char*), "abc", 3) == 0);
    CHILD_CHECK(dm_pending(sid, tok, nullptr) == 0);
    CHILD_CHECK(dm_destroy_session(sid) == -1 && errno == EBUSY);
    CHILD_CHECK(dm_respond_event(sid, tok + 1, DM_RESP_CONTINUE, 0, 0, nullptr) == -1 && errno == ESRCH);
    CHILD_CHECK(dm_respond_event(sid, DM_NO_TOKEN, DM_RESP_CONTINUE, 0, 0, nullptr) == -1 && errno == EINVAL);
    CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_ABORT, 0, 0, nullptr) == -1 && errno == EINVAL);
    CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_DONTCARE, 0, 0, nullptr) == -1 && errno == EINVAL);
    dm_token_t moved;
    CHILD_CHECK(dm_move_event(sid, tok, other, &moved) == 0 && moved == tok);
    CHILD_CHECK(dm_respond_event(sid, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == -1 && errno == ESRCH);
    CHILD_CHECK(dm_respond_event(other, tok, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
    // Dispositions: partitioned (EBUSY), only MOUNT on the global handle.
    void* fsh;
    size_t fshl;
    CHILD_CHECK(dm_path_to_fshandle(lc.View(1).c_str(), &fsh, &fshl) == 0);
    dm_eventset_t ev;
    DMEV_ZERO(ev);
    DMEV_SET(DM_EVENT_READ, ev);
    CHILD_CHECK(dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
    CHILD_CHECK(dm_set_disp(other, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == -1 && errno == EBUSY);
    CHILD_CHECK(dm_set_disp(sid, DM_GLOBAL_HANP, DM_GLOBAL_HLEN, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == -1 &&
                errno == EINVAL);
    CHILD_CHECK(dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, 0) == -1 && errno == EINVAL);
    CHILD_CHECK(dm_getall_disp(sid, 0, buf, &rlen) == -1 && errno == E2BIG && rlen > 0);
    CHILD_CHECK(dm_getall_disp(sid, sizeof(buf), buf, &rlen) == 0);
    auto* di = reinterpret_cast<dm_dispinfo_t*>(buf);
    CHILD_CHECK(DMEV_ISSET(DM_EVENT_READ, di->di_eventset) &&
                dm_handle_cmp(DM_GET_VALUE(di, di_fshandle, void*), DM_GET_LEN(di, di_fshandle), fsh, fshl) == 0);
    // Configuration and the optional parts we do not support.
    dm_size_t val;
    CHILD_CHECK(dm_get_config(fsh, fshl, DM_CONFIG_PUNCH_HOLE, &val) == 0 && val == 1);
    CHILD_CHECK(dm_get_config(fsh, fshl, DM_CONFIG_MAX_HANDLE_SIZE, &val) == 0 && val == DM_MAX_HANDLE_SIZE);
    CHILD_CHECK(dm_obj_ref_hold(sid, DM_NO_TOKEN, fsh, fshl) == -1 && errno == ENOSYS);
    CHILD_CHECK(dm_handle_is_valid((void*)"garbage!", 8) == DM_FALSE);
    DMEV_ZERO(ev);
    CHILD_CHECK(dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
    CHILD_CHECK(dm_destroy_session(sid) == 0 && dm_destroy_session(other) == 0);
    return 0;
  });
  EXPECT_EQ(c.Wait(), 0);
  // Non-root: EPERM from every call.
  Child nobody = Child::Start(lc, 0, [](FILE*, FILE*) {
    CHILD_CHECK(setgid(65534) == 0 && setuid(65534) == 0);
    dm_sessid_t sid;
    CHILD_CHECK(dm_create_session(DM_NO_SESSION, "x", &sid) == -1 && errno == EPERM);
    return 0;
  });
  EXPECT_EQ(nobody.Wait(), 0);
}

}  // namespace
}  // namespace pdm::test
