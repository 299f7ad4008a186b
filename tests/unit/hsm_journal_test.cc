// The coordinator's journal of in-flight moves (src/hsm/journal.h).
#include "hsm/journal.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace pdm::hsm {
namespace {

namespace fs = std::filesystem;

const std::vector<uint8_t> kHandle = {'P', 'D', 'M', 'H', 1, 2, 0, 0, 0, 0xff};

class HsmJournal : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pdm_hsm_journal_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/hsm-1.journal";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<Journal> Open(JournalOptions opts = {}) {
    auto j = Journal::Open(dir_, "hsm-1", opts);
    EXPECT_TRUE(j.ok()) << j.status().ToString();
    return j.ok() ? std::move(*j) : nullptr;
  }
  uint64_t FileSize() { return fs::file_size(path_); }
  void AppendRaw(const std::string& bytes) {
    UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::write(fd.get(), bytes.data(), bytes.size()), ssize_t(bytes.size()));
  }

  std::string dir_, path_;
};

ChunkRef Chunk(uint32_t i) { return ChunkRef{i, i * 100ull, 100, "objects/k.data", Xxh3_128({})}; }

TEST_F(HsmJournal, RecordsSurviveReopenAndEndedMovesLeave) {
  uint64_t a, b, c;
  {
    auto j = Open();
    a = *j->Begin(MoveOp::kMigrate, kHandle, "k/a/v1", 1);
    b = *j->Begin(MoveOp::kRecall, kHandle, "k/b/v3", 3);
    c = *j->Begin(MoveOp::kArchive, kHandle, "k/c/v1", 1);
    EXPECT_LT(a, b);
    EXPECT_LT(b, c);
    ASSERT_TRUE(j->ChunkDone(a, Chunk(1)).ok());
    ASSERT_TRUE(j->ChunkDone(a, Chunk(0)).ok());
    ASSERT_TRUE(j->Archived(a, Xxh3_128({})).ok());
    ASSERT_TRUE(j->Released(a).ok());
    ASSERT_TRUE(j->End(b).ok());
    ASSERT_TRUE(j->Abort(c, "archive full").ok());
    EXPECT_EQ(j->End(b).code(), Code::kNotFound);
    EXPECT_EQ(j->ChunkDone(999, Chunk(0)).code(), Code::kNotFound);
  }
  auto j = Open();
  auto moves = j->InFlight();
  ASSERT_EQ(moves.size(), 1u);
  const Move& m = moves[0];
  EXPECT_EQ(m.id, a);
  EXPECT_EQ(m.op, MoveOp::kMigrate);
  EXPECT_EQ(m.handle, kHandle);
  EXPECT_EQ(m.key, "k/a/v1");
  EXPECT_EQ(m.version, 1u);
  ASSERT_EQ(m.chunks.size(), 2u);
  EXPECT_EQ(m.chunks[0], Chunk(0));  // sorted by index
  EXPECT_EQ(m.chunks[1], Chunk(1));
  EXPECT_TRUE(m.archived);
  EXPECT_EQ(m.sum, Xxh3_128({}));
  EXPECT_TRUE(m.released);
  EXPECT_GT(m.begin_ns, 0);
  // Ids are never reused.
  EXPECT_GT(*j->Begin(MoveOp::kRemove, kHandle, "k/d/v1", 1), c);
  auto replayed = Journal::Replay(path_);
  ASSERT_TRUE(replayed.ok());
  EXPECT_EQ(replayed->size(), 2u);
  EXPECT_EQ(*Journal::List(dir_), std::vector<std::string>{"hsm-1"});
}

TEST_F(HsmJournal, OneLiveOwnerAtATime) {
  auto j = Open();
  auto second = Journal::Open(dir_, "hsm-1");
  EXPECT_EQ(second.status().code(), Code::kUnavailable) << second.status().ToString();
  j.reset();
  EXPECT_TRUE(Journal::Open(dir_, "hsm-1").ok());
  EXPECT_EQ(Journal::Open(dir_, "../x").status().code(), Code::kInvalidArgument);
}

TEST_F(HsmJournal, TornTailIsTruncatedOnOpen) {
  uint64_t keep;
  uint64_t good_size;
  {
    auto j = Open();
    keep = *j->Begin(MoveOp::kMigrate, kHandle, "k/a/v1", 1);
    good_size = FileSize();
    uint64_t torn = *j->Begin(MoveOp::kMigrate, kHandle, "k/torn/v1", 1);
    (void)torn;
  }
  // Cut the last record in half, as a crash mid-append would.
  uint64_t full = FileSize();
  ASSERT_EQ(::truncate(path_.c_str(), off_t(good_size + (full - good_size) / 2)), 0);
  {
    auto j = Open();
    auto moves = j->InFlight();
    ASSERT_EQ(moves.size(), 1u);
    EXPECT_EQ(moves[0].id, keep);
    EXPECT_EQ(FileSize(), good_size) << "the torn bytes are gone";
    ASSERT_TRUE(j->ChunkDone(keep, Chunk(0)).ok());  // and appending goes on after the good prefix
  }
  // Zero fill at the tail (a crash after the size grew, before the data).
  AppendRaw(std::string(37, '\0'));
  {
    auto j = Open();
    EXPECT_EQ(j->InFlight().size(), 1u);
    EXPECT_EQ(j->InFlight()[0].chunks.size(), 1u);
  }
  // A header that promises more bytes than there are.
  AppendRaw(std::string("PDMJ\xff\x00\x00\x00", 8) + std::string(8, 'x') + "{\"t\":");
  {
    auto j = Open();
    EXPECT_EQ(j->InFlight().size(), 1u);
  }
}

TEST_F(HsmJournal, DamageInTheMiddleIsDataLoss) {
  {
    auto j = Open();
    uint64_t a = *j->Begin(MoveOp::kMigrate, kHandle, "k/a/v1", 1);
    ASSERT_TRUE(j->ChunkDone(a, Chunk(0)).ok());
    ASSERT_TRUE(j->ChunkDone(a, Chunk(1)).ok());
  }
  // Flip a payload byte of the first record: more records follow it.
  UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CLOEXEC));
  char b;
  ASSERT_EQ(::pread(fd.get(), &b, 1, 20), 1);
  b ^= 1;
  ASSERT_EQ(::pwrite(fd.get(), &b, 1, 20), 1);
  fd.reset();
  auto j = Journal::Open(dir_, "hsm-1");
  EXPECT_EQ(j.status().code(), Code::kDataLoss) << j.status().ToString();
  EXPECT_EQ(j.status().err(), EIO);
  EXPECT_EQ(Journal::Replay(path_).status().code(), Code::kDataLoss);
}

TEST_F(HsmJournal, CompactionKeepsInFlightMovesAndIds) {
  JournalOptions opts;
  opts.compact_bytes = 8192;
  opts.sync = false;  // 1500 records; durability is another test's subject
  std::vector<Move> expect;
  uint64_t last_id = 0;
  {
    auto j = Open(opts);
    // A few long-running moves, and many short ones that come and go.
    for (int i = 0; i < 3; ++i) {
      uint64_t id = *j->Begin(MoveOp::kMigrate, kHandle, "k/long" + std::to_string(i) + "/v1", 1);
      ASSERT_TRUE(j->ChunkDone(id, Chunk(0)).ok());
    }
    ASSERT_TRUE(j->Archived(1, Xxh3_128({})).ok());
    for (int i = 0; i < 500; ++i) {
      uint64_t id = *j->Begin(MoveOp::kRecall, kHandle, "k/short/v1", 1);
      ASSERT_TRUE(j->ChunkDone(id, Chunk(i % 4)).ok());
      ASSERT_TRUE(j->End(id).ok());
      last_id = id;
    }
    EXPECT_LT(j->SizeBytes(), 3 * opts.compact_bytes) << "compaction keeps the file bounded";
    expect = j->InFlight();
    ASSERT_EQ(expect.size(), 3u);
  }
  EXPECT_LT(FileSize(), 3 * opts.compact_bytes);
  auto j = Open(opts);
  EXPECT_EQ(j->InFlight(), expect);
  EXPECT_GT(*j->Begin(MoveOp::kArchive, kHandle, "k/next/v1", 1), last_id) << "ids continue after compaction";
  ASSERT_TRUE(j->Compact().ok());
  // A second owner is refused while j lives.
  EXPECT_EQ(Journal::Open(dir_, "hsm-1", opts).status().code(), Code::kUnavailable);
}

TEST_F(HsmJournal, ConcurrentAppendsShareSyncsAndAllSurvive) {
  constexpr int kThreads = 4, kPer = 50;
  {
    auto j = Open();
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < kPer; ++i) {
          auto id = j->Begin(MoveOp::kArchive, kHandle, "k/t" + std::to_string(t) + "/v" + std::to_string(i), 1);
          ASSERT_TRUE(id.ok());
          ASSERT_TRUE(j->ChunkDone(*id, Chunk(0)).ok());
        }
      });
    for (auto& t : ts) t.join();
  }
  auto moves = Journal::Replay(path_);
  ASSERT_TRUE(moves.ok()) << moves.status().ToString();
  ASSERT_EQ(moves->size(), size_t(kThreads * kPer));
  for (const auto& m : *moves) EXPECT_EQ(m.chunks.size(), 1u);
}

TEST_F(HsmJournal, WrittenRecordsTakeEffectAtOnceAndReachTheFile) {
  uint64_t a, b, c;
  {
    auto j = Open();
    a = *j->Begin(MoveOp::kMigrate, kHandle, "k/a/v1", 1);
    b = *j->Begin(MoveOp::kMigrate, kHandle, "k/b/v1", 1);
    c = *j->Begin(MoveOp::kArchive, kHandle, "k/c/v1", 1);
    ASSERT_TRUE(j->Released(a, JournalWait::kWritten).ok());
    ASSERT_TRUE(j->End(a, JournalWait::kWritten).ok());
    ASSERT_TRUE(j->Abort(b, "test", JournalWait::kWritten).ok());
    ASSERT_EQ(j->InFlight().size(), 1u) << "ended and aborted moves leave at once";
    EXPECT_EQ(j->Get(a).status().code(), Code::kNotFound);
    EXPECT_EQ(j->End(a, JournalWait::kWritten).code(), Code::kNotFound) << "nothing appended for a gone move";
    // Another reader of the file (a tool) sees them before any sync.
    auto seen = Journal::Replay(path_);
    ASSERT_TRUE(seen.ok());
    ASSERT_EQ(seen->size(), 1u);
    EXPECT_EQ((*seen)[0].id, c);
    // A durable record after them makes them durable too (one fdatasync
    // covers the file); here: the move that stays.
    ASSERT_TRUE(j->ChunkDone(c, Chunk(0)).ok());
  }
  auto j = Open();
  auto moves = j->InFlight();
  ASSERT_EQ(moves.size(), 1u);
  EXPECT_EQ(moves[0].id, c);
  EXPECT_EQ(moves[0].chunks.size(), 1u);
}

TEST_F(HsmJournal, Kill9MidAppendLeavesAReadablePrefix) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto j = Journal::Open(dir_, "hsm-1");
    if (!j.ok()) ::_exit(2);
    for (int i = 0;; ++i) {
      auto id = (*j)->Begin(MoveOp::kMigrate, kHandle, "k/crash/v" + std::to_string(i), 1);
      if (!id.ok()) ::_exit(3);
      if (i > 200000) ::_exit(4);
    }
  }
  // Let it append for a while, then kill it mid-stream.
  for (int i = 0; i < 200 && (!fs::exists(path_) || fs::file_size(path_) < 20000); ++i) ::usleep(10000);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  auto j = Open();  // its lock died with it
  ASSERT_NE(j, nullptr);
  auto moves = j->InFlight();
  EXPECT_GT(moves.size(), 10u);
  for (size_t i = 0; i < moves.size(); ++i) EXPECT_EQ(moves[i].key, "k/crash/v" + std::to_string(i));
}

}  // namespace
}  // namespace pdm::hsm
