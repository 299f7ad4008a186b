// Kernel data events end to end: unmodified programs (cat, dd, truncate,
// python3 mmap) read and write through one node's view; a DM application on
// another node receives DM_EVENT_READ / WRITE / TRUNCATE from that node,
// fills the data with dm_write_invis and answers; its answer decides what
// the program sees.
#include <dmapi.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>
#include <vector>

#include "dmapi_child.h"

namespace pdm::test {
namespace {

std::string Pattern(size_t n) {
  std::string s(n, 0);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7) % 26);
  return s;
}

std::pair<int, std::string> Sh(const std::string& cmd) { return RunShell(cmd, false); }

// The DM application: commands on its pipe, one reply line each.
//   manage PATH FLAGS        region over the whole file (flags: DM_REGION_*),
//                            punch the data out, enable events -> "ok"
//   manage-many N PREFIX FLAGS
//                            the same for PREFIX0 .. PREFIX(N-1), from N
//                            threads at once -> "ok"
//   next                     wait for an event -> "event TYPE NODE OFF LEN"
//   poll                     the same without waiting; "none" if no event
//   fill SRC                 write SRC's bytes into the file invisibly,
//                            clear the region, answer CONTINUE -> "ok"
//   continue / abort ERR     answer the event -> "ok"
int DmApp(const std::string& view, FILE* r, FILE* w) {
  dm_sessid_t sid;
  CHILD_CHECK(dm_create_session(DM_NO_SESSION, "events test HSM", &sid) == 0);
  void* fsh;
  size_t fshl;
  CHILD_CHECK(dm_path_to_fshandle(view.c_str(), &fsh, &fshl) == 0);
  dm_eventset_t ev;
  DMEV_ZERO(ev);
  DMEV_SET(DM_EVENT_READ, ev);
  DMEV_SET(DM_EVENT_WRITE, ev);
  DMEV_SET(DM_EVENT_TRUNCATE, ev);
  CHILD_CHECK(dm_set_disp(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
  CHILD_CHECK(dm_set_eventlist(sid, fsh, fshl, DM_NO_TOKEN, &ev, DM_EVENT_MAX) == 0);
  std::fprintf(w, "ready\n");
  static char buf[65536] __attribute__((aligned(8)));
  dm_token_t token = DM_NO_TOKEN;
  std::vector<uint8_t> handle;
  for (std::string cmd; !(cmd = ReadLineFromFile(r)).empty();) {
    std::istringstream in(cmd);
    std::string op;
    in >> op;
    if (op == "manage") {
      std::string path;
      unsigned flags;
      in >> path >> flags;
      void* h;
      size_t hl;
      CHILD_CHECK(dm_path_to_handle(path.c_str(), &h, &hl) == 0);
      dm_region_t rg{};
      rg.rg_offset = 0;
      rg.rg_size = 0;  // to the end of the file
      rg.rg_flags = flags;
      dm_boolean_t exact;
      CHILD_CHECK(dm_set_region(sid, h, hl, DM_NO_TOKEN, 1, &rg, &exact) == 0);
      CHILD_CHECK(dm_punch_hole(sid, h, hl, DM_NO_TOKEN, 0, 0) == 0);
      dm_handle_free(h, hl);
      std::fprintf(w, "ok\n");
    } else if (op == "manage-many") {
      int n;
      std::string prefix;
      unsigned flags;
      in >> n >> prefix >> flags;
      std::vector<std::thread> ts;
      for (int k = 0; k < n; ++k)
        ts.emplace_back([&, k] {
          const std::string path = prefix + std::to_string(k);
          void* h;
          size_t hl;
          CHILD_CHECK(dm_path_to_handle(path.c_str(), &h, &hl) == 0);
          dm_region_t rg{};
          rg.rg_flags = flags;
          dm_boolean_t exact;
          CHILD_CHECK(dm_set_region(sid, h, hl, DM_NO_TOKEN, 1, &rg, &exact) == 0);
          CHILD_CHECK(dm_punch_hole(sid, h, hl, DM_NO_TOKEN, 0, 0) == 0);
          dm_handle_free(h, hl);
        });
      for (auto& t : ts) t.join();
      std::fprintf(w, "ok\n");
    } else if (op == "next" || op == "poll") {
      size_t rlen;
      if (op == "poll" && dm_get_events(sid, 1, 0, sizeof(buf), buf, &rlen) != 0) {
        CHILD_CHECK(errno == EAGAIN);
        std::fprintf(w, "none\n");
        continue;
      }
      if (op == "next") CHILD_CHECK(dm_get_events(sid, 1, DM_EV_WAIT, sizeof(buf), buf, &rlen) == 0);
      auto* m = reinterpret_cast<dm_eventmsg_t*>(buf);
      auto* de = DM_GET_VALUE(m, ev_data, dm_data_event_t*);
      token = m->ev_token;
      auto* hp = DM_GET_VALUE(de, de_handle, uint8_t*);
      handle.assign(hp, hp + DM_GET_LEN(de, de_handle));
      std::fprintf(w, "event %d %u %lld %llu\n", static_cast<int>(m->ev_type), m->ev_nodeid,
                   static_cast<long long>(de->de_offset), static_cast<unsigned long long>(de->de_length));
    } else if (op == "fill") {
      std::string src;
      in >> src;
      std::ifstream f(src, std::ios::binary);
      std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      CHILD_CHECK(dm_write_invis(sid, handle.data(), handle.size(), token, 0, 0, data.size(), data.data()) ==
                  static_cast<dm_ssize_t>(data.size()));
      dm_boolean_t exact;
      CHILD_CHECK(dm_set_region(sid, handle.data(), handle.size(), token, 0, nullptr, &exact) == 0);
      CHILD_CHECK(dm_respond_event(sid, token, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
      std::fprintf(w, "ok\n");
    } else if (op == "continue") {
      CHILD_CHECK(dm_respond_event(sid, token, DM_RESP_CONTINUE, 0, 0, nullptr) == 0);
      std::fprintf(w, "ok\n");
    } else if (op == "abort") {
      int err;
      in >> err;
      CHILD_CHECK(dm_respond_event(sid, token, DM_RESP_ABORT, err, 0, nullptr) == 0);
      std::fprintf(w, "ok\n");
    }
  }
  return 0;
}

class Events : public ::testing::Test {
 protected:
  explicit Events(const std::string& pdmd_args = "") : lc_(4, pdmd_args) {}
  void SetUp() override {
    ASSERT_TRUE(lc_.up());
    app_ = Child::Start(lc_, 1, [this](FILE* r, FILE* w) { return DmApp(lc_.View(1), r, w); });
    ASSERT_EQ(app_.ReadLine(), "ready");
  }
  void TearDown() override {
    if (app_.pid > 0) {
      fclose(app_.out);
      app_.out = nullptr;
      EXPECT_EQ(app_.Wait(), 0);
    }
  }
  // Writes `content` through node 0, keeps a copy outside the cluster.
  std::string Make(const std::string& name, const std::string& content) {
    { std::ofstream(lc_.View(0) + "/" + name, std::ios::binary) << content; }
    const std::string copy = lc_.dir() + "/" + name + ".orig";
    { std::ofstream(copy, std::ios::binary) << content; }
    return copy;
  }
  std::string Ask(const std::string& cmd) {
    app_.Send(cmd);
    return app_.ReadLine();
  }
  LocalCluster lc_;
  Child app_;
};

// Accesses that wait with no agent fail with EIO after 3 s.
class EventsWithTimeout : public Events {
 protected:
  EventsWithTimeout() : Events("--event-timeout-ms 3000") {}
};

TEST_F(Events, ReadThroughAnotherNodeBlocksUntilTheSessionFillsTheDataAndReturnsIt) {
  const std::string content = Pattern(256 * 1024);
  const std::string orig = Make("big.dat", content);
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/big.dat " + std::to_string(DM_REGION_READ | DM_REGION_WRITE |
                                                                            DM_REGION_TRUNCATE)),
            "ok");
  struct stat st;
  ASSERT_EQ(stat((lc_.View(0) + "/big.dat").c_str(), &st), 0);
  EXPECT_LT(st.st_blocks * 512, 64 * 1024) << "the data was punched out";
  EXPECT_EQ(st.st_size, static_cast<off_t>(content.size())) << "the size is kept";

  auto reader = std::async(std::launch::async, [&] { return Sh("cat " + lc_.View(2) + "/big.dat"); });
  const std::string ev = Ask("next");
  std::istringstream in(ev);
  std::string word;
  int type;
  unsigned node;
  long long off;
  in >> word >> type >> node >> off;
  EXPECT_EQ(word, "event");
  EXPECT_EQ(type, DM_EVENT_READ);
  EXPECT_EQ(node, 2u) << "raised at the node where the read happened";
  EXPECT_EQ(reader.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
      << "the read must wait for the session";
  ASSERT_EQ(Ask("fill " + orig), "ok");
  auto [rc, out] = reader.get();
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(out == content) << "read " << out.size() << " bytes, not the data written";
  // The region is gone: the next read raises nothing and sees the data.
  EXPECT_EQ(Sh("cat " + lc_.View(3) + "/big.dat").second, content);
}

TEST_F(Events, AbortReachesTheProgramAsItsErrno) {
  Make("a.dat", Pattern(8192));
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/a.dat " + std::to_string(DM_REGION_READ)), "ok");
  auto eio = std::async(std::launch::async, [&] {
    return Sh("python3 -c \"import os,sys\ntry:\n os.read(os.open('" + lc_.View(2) +
              "/a.dat', os.O_RDONLY), 100)\nexcept OSError as e: print(e.errno)\"");
  });
  ASSERT_EQ(Ask("next").rfind("event 16 2 ", 0), 0u);
  ASSERT_EQ(Ask("abort " + std::to_string(EIO)), "ok");
  EXPECT_EQ(eio.get().second, std::to_string(EIO) + "\n");
  auto eagain = std::async(std::launch::async, [&] {
    return Sh("python3 -c \"import os,sys\ntry:\n os.read(os.open('" + lc_.View(3) +
              "/a.dat', os.O_RDONLY), 100)\nexcept OSError as e: print(e.errno)\"");
  });
  ASSERT_EQ(Ask("next").rfind("event 16 3 ", 0), 0u);
  ASSERT_EQ(Ask("abort " + std::to_string(EAGAIN)), "ok");
  EXPECT_EQ(eagain.get().second, std::to_string(EAGAIN) + "\n");
}

TEST_F(Events, WriteTruncateAndMmapRaiseTheirEvents) {
  Make("w.dat", Pattern(16384));
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/w.dat " + std::to_string(DM_REGION_WRITE)), "ok");
  auto dd = std::async(std::launch::async, [&] {
    // One write(2) of 3 bytes at offset 4096: one event.
    return Sh("printf XYZ | dd of=" + lc_.View(2) +
              "/w.dat bs=3 count=1 seek=4096 oflag=seek_bytes conv=notrunc status=none");
  });
  std::string e = Ask("next");
  EXPECT_EQ(e.rfind("event 17 2 4096 ", 0), 0u) << e;  // WRITE, at the page written
  ASSERT_EQ(Ask("continue"), "ok");
  EXPECT_EQ(dd.get().first, 0);

  Make("t.dat", Pattern(16384));
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/t.dat " + std::to_string(DM_REGION_TRUNCATE)), "ok");
  auto tr = std::async(std::launch::async, [&] { return Sh("truncate -s 100 " + lc_.View(3) + "/t.dat"); });
  e = Ask("next");
  EXPECT_EQ(e.rfind("event 18 3 ", 0), 0u) << e;  // TRUNCATE
  ASSERT_EQ(Ask("continue"), "ok");
  EXPECT_EQ(tr.get().first, 0);

  const std::string content = Pattern(12288);
  const std::string orig = Make("m.dat", content);
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/m.dat " + std::to_string(DM_REGION_READ)), "ok");
  auto mm = std::async(std::launch::async, [&] {
    return Sh("python3 -c \"import mmap,os,sys\nf=os.open('" + lc_.View(2) +
              "/m.dat', os.O_RDONLY)\nm=mmap.mmap(f, 0, prot=mmap.PROT_READ)\nsys.stdout.buffer.write(m[:])\"");
  });
  e = Ask("next");
  EXPECT_EQ(e.rfind("event 16 2 0 ", 0), 0u) << e;  // READ for the mapped range
  ASSERT_EQ(Ask("fill " + orig), "ok");
  EXPECT_EQ(mm.get().second, content);

  // The same through a C program's mmap(2), on another node.
  const std::string orig2 = Make("m2.dat", content);
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/m2.dat " + std::to_string(DM_REGION_READ)), "ok");
  auto mc = std::async(std::launch::async, [&] {
    return Sh(std::string(PDM_BINARY_DIR) + "/bin/mmap_cat " + lc_.View(3) + "/m2.dat");
  });
  e = Ask("next");
  EXPECT_EQ(e.rfind("event 16 3 0 ", 0), 0u) << e;
  ASSERT_EQ(Ask("fill " + orig2), "ok");
  auto [mrc, mout] = mc.get();
  EXPECT_EQ(mrc, 0);
  EXPECT_TRUE(mout == content) << "mmap read " << mout.size() << " bytes, not the data written";
}

TEST_F(EventsWithTimeout, Kill9OfTheReadingNodesAgentNeverLetsTheReadSeeZeros) {
  const std::string content = Pattern(256 * 1024);
  Make("k.dat", content);
  const std::string plain = Pattern(5000);
  Make("plain.dat", plain);
  ASSERT_EQ(Ask("manage " + lc_.View(1) + "/k.dat " + std::to_string(DM_REGION_READ | DM_REGION_WRITE)), "ok");
  const std::string out = lc_.dir() + "/k.out";
  auto reader = std::async(std::launch::async, [&] {
    return Sh("cat " + lc_.View(2) + "/k.dat > " + out + "; echo $?");
  });
  const std::string ev = Ask("next");
  ASSERT_EQ(ev.rfind("event 16 2 ", 0), 0u) << ev;
  const int64_t t0 = MonotonicNs();
  lc_.Kill9(2);  // the reading node's agent dies while the read waits for the session
  EXPECT_EQ(reader.wait_for(std::chrono::milliseconds(1500)), std::future_status::timeout)
      << "with its agent dead the read must keep waiting, not return the hole";
  // Files that need no agent do not wait for one.
  EXPECT_EQ(Sh("cat " + lc_.View(2) + "/plain.dat").second, plain);
  ASSERT_EQ(reader.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  const std::string rc = reader.get().second;
  EXPECT_NE(rc, "0\n") << "the read must fail";
  EXPECT_GE(MonotonicNs() - t0, 2500LL * 1000000) << "and only after the event timeout";
  struct stat st;
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 0) << "not one byte of the hole reached the reader";
  // A new read with the agent still gone: EIO after the timeout, no data.
  auto [rc2, out2] = Sh("python3 -c \"import os\ntry:\n os.read(os.open('" + lc_.View(2) +
                        "/k.dat', os.O_RDONLY), 100); print('read')\nexcept OSError as e: print(e.errno)\"");
  EXPECT_EQ(out2, std::to_string(EIO) + "\n");
  // The session's node is unharmed: the same file reads through node 3.
  auto r3 = std::async(std::launch::async, [&] { return Sh("head -c 4096 " + lc_.View(3) + "/k.dat"); });
  const std::string ev3 = Ask("next");
  EXPECT_EQ(ev3.rfind("event 16 3 ", 0), 0u) << ev3;
  ASSERT_EQ(Ask("fill " + lc_.dir() + "/k.dat.orig"), "ok");
  EXPECT_EQ(r3.get().second, content.substr(0, 4096));
}

// What a program reading `path` through a view saw, compared with `orig`:
// "data", "zeros", "other" or "errno N". Killed after `secs` (a read that
// blocks in the kernel then reports "" rather than hanging the test).
std::string ReadVerdict(const std::string& path, const std::string& orig, int secs) {
  return Sh("timeout -s KILL " + std::to_string(secs) + " python3 -c \"import os\nwant=open('" + orig +
            "','rb').read()\ntry:\n f=os.open('" + path +
            "', os.O_RDONLY)\n got=b''\n while True:\n  b=os.read(f, 1<<20)\n  if not b: break\n  got+=b\n"
            " print('data' if got==want else 'zeros' if got.count(0)==len(got) else 'other')\n"
            "except OSError as e: print('errno', e.errno)\"")
      .second;
}

// pdm-eventd (node 2's supervisor, the holder of its pre-content group) is
// killed with kill -9 while two reads of released files wait in it. The
// agent still holds the group, so nothing is allowed through; it starts a
// new supervisor and hands it the group. The kernel matches an answer to its
// event by fd number only, and the new supervisor's event fds reuse the
// numbers the dead one had: the agent therefore fails every access the dead
// one had read (EIO) before the new one reads anything, so no answer can
// reach the wrong access. Guaranteed, and asserted exactly: the reads in
// flight fail with EIO (never data from a hole, never zeros, never a hang);
// unmanaged files read at once; a new read of the released file is raised
// again and gets its bytes through the new supervisor.
TEST_F(Events, Kill9OfTheEventSupervisorFailsItsReadsWithEioAndTheNextOneServes) {
  const std::string content = Pattern(64 * 1024);
  const std::string orig_a = Make("a.dat", content);
  const std::string orig_b = Make("b.dat", content);
  for (const char* f : {"a.dat", "b.dat"})
    ASSERT_EQ(Ask("manage " + lc_.View(1) + "/" + f + " " + std::to_string(DM_REGION_READ)), "ok");
  std::vector<std::pair<std::string, std::string>> plain;  // (path through node 2, copy)
  for (int i = 0; i < 4; ++i) {
    const std::string name = "plain" + std::to_string(i) + ".dat";
    plain.emplace_back(lc_.View(2) + "/" + name, Make(name, Pattern(5000 + i)));
  }
  const std::string pidfile = lc_.dir() + "/state/node2.eventd.sock.pid";
  auto eventd_pid = [&] {
    std::ifstream f(pidfile);
    int pid = 0;
    f >> pid;
    return pid;
  };
  const int old_pid = eventd_pid();
  ASSERT_GT(old_pid, 0) << "no " << pidfile;
  ASSERT_EQ(::kill(old_pid, 0), 0) << "pdm-eventd of node 2 is not running";

  // Two reads through node 2, each waiting in the supervisor for the session.
  auto ra = std::async(std::launch::async, [&] { return ReadVerdict(lc_.View(2) + "/a.dat", orig_a, 30); });
  auto rb = std::async(std::launch::async, [&] { return ReadVerdict(lc_.View(2) + "/b.dat", orig_b, 30); });
  for (int i = 0; i < 2; ++i) {
    const std::string ev = Ask("next");
    ASSERT_EQ(ev.rfind("event 16 2 ", 0), 0u) << ev;
  }
  ASSERT_EQ(::kill(old_pid, SIGKILL), 0);

  // The agent starts the next supervisor with the group.
  int new_pid = 0;
  ASSERT_TRUE(LocalCluster::Eventually([&] {
    new_pid = eventd_pid();
    return new_pid > 0 && new_pid != old_pid && ::kill(new_pid, 0) == 0;
  }, 15000)) << "no new pdm-eventd for node 2";

  // Unmanaged files: the new supervisor's first events, whose fd numbers
  // are the ones the dead supervisor gave the waiting reads.
  for (const auto& [path, orig] : plain) EXPECT_EQ(ReadVerdict(path, orig, 10), "data\n") << path;
  // The reads in flight at the kill: EIO, exactly.
  ASSERT_EQ(ra.wait_for(std::chrono::seconds(35)), std::future_status::ready);
  ASSERT_EQ(rb.wait_for(std::chrono::seconds(35)), std::future_status::ready);
  EXPECT_EQ(ra.get(), "errno " + std::to_string(EIO) + "\n");
  EXPECT_EQ(rb.get(), "errno " + std::to_string(EIO) + "\n");

  // A new read of the released file goes through the new supervisor to the
  // session and gets the right bytes.
  auto r2 = std::async(std::launch::async, [&] { return ReadVerdict(lc_.View(2) + "/a.dat", orig_a, 30); });
  const std::string ev = Ask("next");
  ASSERT_EQ(ev.rfind("event 16 2 ", 0), 0u) << ev;
  ASSERT_EQ(Ask("fill " + orig_a), "ok");
  EXPECT_EQ(r2.get(), "data\n");
  // And the other released file, through the other node's own supervisor
  // (node 3 is untouched) and then through node 2 again.
  auto r3 = std::async(std::launch::async, [&] { return ReadVerdict(lc_.View(3) + "/b.dat", orig_b, 30); });
  const std::string ev3 = Ask("next");
  ASSERT_EQ(ev3.rfind("event 16 3 ", 0), 0u) << ev3;
  ASSERT_EQ(Ask("fill " + orig_b), "ok");
  EXPECT_EQ(r3.get(), "data\n");
  EXPECT_EQ(ReadVerdict(lc_.View(2) + "/b.dat", orig_b, 10), "data\n");
  EXPECT_EQ(eventd_pid(), new_pid) << "the new supervisor still serves";
}

// A node's event source stops asking about a file it saw unmanaged; regions
// set on many files at once (as an HSM request does) must each make every
// node watch its file again, however the agent groups those notices.
TEST_F(Events, RegionsSetOnManyFilesAtOnceAreWatchedAgainOnEveryNode) {
  constexpr int kFiles = 40;
  for (int k = 0; k < kFiles; ++k) Make("r" + std::to_string(k), Pattern(8192));
  // Read through nodes 2 and 3 while unmanaged: both now ignore these files.
  for (int node : {2, 3})
    for (int k = 0; k < kFiles; ++k)
      ASSERT_EQ(Sh("cat " + lc_.View(node) + "/r" + std::to_string(k) + " | wc -c").second, "8192\n");
  ASSERT_EQ(Ask("manage-many " + std::to_string(kFiles) + " " + lc_.View(1) + "/r " + std::to_string(DM_REGION_READ)),
            "ok");
  for (int node : {2, 3}) {
    // Each read must raise an event (answered with EIO), none may read the
    // hole as data.
    auto reader = std::async(std::launch::async, [&] {
      // `timeout`: a read whose event never comes back must not hang the test.
      return Sh("timeout 90 python3 -c \"import os\nfor k in range(" + std::to_string(kFiles) + "):\n try:\n  os.read(os.open('" +
                lc_.View(node) + "/r%d' % k, os.O_RDONLY), 100); print('data')\n except OSError as e: print(e.errno)\"");
    });
    int events = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (reader.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready &&
           std::chrono::steady_clock::now() < deadline) {
      const std::string e = Ask("poll");
      if (e == "none") {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      EXPECT_EQ(e.rfind("event 16 " + std::to_string(node) + " ", 0), 0u) << e;
      const std::string answered = Ask("abort " + std::to_string(EIO));
      EXPECT_EQ(answered, "ok");
      if (answered != "ok") break;  // the reader still ends, by its timeout
      ++events;
    }
    auto [rc, out] = reader.get();
    EXPECT_EQ(rc, 0);
    std::string want;
    for (int k = 0; k < kFiles; ++k) want += std::to_string(EIO) + "\n";
    EXPECT_EQ(out, want) << "node " << node << ": a read went through without an event";
    EXPECT_EQ(events, kFiles) << "node " << node;
  }
}

TEST_F(Events, UnmanagedFilesRaiseNothing) {
  const std::string content = Pattern(100000);
  Make("plain.dat", content);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(Sh("cat " + lc_.View(k) + "/plain.dat").second, content);
  EXPECT_EQ(Sh("dd if=" + lc_.View(2) + "/plain.dat bs=4096 status=none | wc -c").second, "100000\n");
}

}  // namespace
}  // namespace pdm::test
