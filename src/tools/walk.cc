#include "tools/walk.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "common/posix.h"
#include "tools/hsm_state.h"

namespace pdm::tools {

std::string AbsolutePath(const std::string& path) {
  std::string full;
  if (path.empty() || path[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) != nullptr) full = cwd;
    full += "/";
  }
  full += path;
  std::vector<std::string> parts;
  size_t i = 0;
  while (i < full.size()) {
    size_t j = full.find('/', i);
    if (j == std::string::npos) j = full.size();
    std::string comp = full.substr(i, j - i);
    if (comp == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!comp.empty() && comp != ".") {
      parts.push_back(std::move(comp));
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

Status StatEntry(const std::string& path, bool read_hsm, Entry* e) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return PosixError("lstat", path, errno);
  e->path = path;
  FillFromStat(st, e);
  e->hsm_flags = 0;
  e->archive_id = 0;
  if (read_hsm && e->is_file()) {
    auto hs = ReadHsmState(path);
    if (!hs.ok()) return hs.status();
    e->hsm_flags = hs->flags;
    e->archive_id = hs->archive_id;
  }
  return Status::Ok();
}

namespace {

enum Tag : int { kTagSteal = 11, kTagWork = 12, kTagToken = 13, kTagDone = 14 };

struct Item {
  std::string dir;
  std::vector<std::string> names;  // empty: read the directory
};

std::string ChildPath(const std::string& dir, const char* name) {
  std::string p;
  p.reserve(dir.size() + 1 + std::strlen(name));
  p = dir;
  if (dir.size() != 1) p.push_back('/');  // the root "/" already ends in '/'
  p += name;
  return p;
}

void PutU32(std::string* b, uint32_t v) { b->append(reinterpret_cast<const char*>(&v), 4); }
uint32_t GetU32(const char*& p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  p += 4;
  return v;
}

class Walker {
 public:
  Walker(MPI_Comm comm, const WalkOptions& opts, const EntrySink& sink, WalkStats* stats)
      : opts_(opts), sink_(sink), stats_(stats) {
    MPI_Comm_dup(comm, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    victim_ = (rank_ + 1) % size_;
    have_token_ = rank_ == 0;
  }
  ~Walker() { MPI_Comm_free(&comm_); }

  void Run() {
    if (rank_ == 0) SeedRoots();
    while (!done_) {
      Service();
      if (done_) break;
      if (!q_.empty()) {
        Item it = std::move(q_.back());
        q_.pop_back();
        Process(it);
        continue;
      }
      if (size_ == 1) break;
      Idle();
    }
    // Termination is known; answer (with nothing) every steal request still
    // coming, and wait for the reply to our own, before anyone leaves.
    while (waiting_) {
      Service();
      if (waiting_) usleep(50);
    }
    MPI_Request bar;
    MPI_Ibarrier(comm_, &bar);
    for (;;) {
      int flag = 0;
      MPI_Test(&bar, &flag, MPI_STATUS_IGNORE);
      if (flag) break;
      Service();
      usleep(50);
    }
  }

 private:
  void Error(const std::string& msg) {
    ++stats_->errors;
    if (static_cast<int>(stats_->errors) <= opts_.max_error_lines)
      std::fprintf(stderr, "pdm walk[%d]: %s\n", rank_, msg.c_str());
  }

  void Emit(Entry&& e) {
    ++stats_->entries;
    if (opts_.progress) opts_.progress->Add(1, e.size);
    sink_(std::move(e));
  }

  void SeedRoots() {
    for (const auto& r : opts_.roots) {
      Entry e;
      Status st = StatEntry(r, opts_.read_hsm, &e);
      if (!st.ok()) {
        Error(st.ToString());
        continue;
      }
      if (e.is_dir() && !(opts_.prune && opts_.prune(e))) q_.push_back(Item{r, {}});
      Emit(std::move(e));
    }
  }

  void Process(Item& it) {
    if (it.names.empty()) {
      ReadDir(it.dir);
      return;
    }
    int fd = open(it.dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) stats_->vanished += it.names.size();
      else Error(PosixError("open", it.dir, errno).ToString());
      return;
    }
    StatNames(it.dir, fd, it.names);
    close(fd);
  }

  void ReadDir(const std::string& dir) {
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) ++stats_->vanished;
      else Error(PosixError("open", dir, errno).ToString());
      return;
    }
    DIR* d = fdopendir(fd);
    if (d == nullptr) {
      Error(PosixError("fdopendir", dir, errno).ToString());
      close(fd);
      return;
    }
    std::vector<std::string> batch;
    batch.reserve(opts_.chunk);
    for (;;) {
      errno = 0;
      struct dirent* de = readdir(d);
      if (de == nullptr) {
        if (errno != 0) Error(PosixError("readdir", dir, errno).ToString());
        break;
      }
      const char* n = de->d_name;
      if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
      batch.emplace_back(n);
      if (batch.size() >= opts_.chunk) {
        // A full chunk goes to the queue where idle ranks can take it while
        // this rank keeps reading.
        q_.push_back(Item{dir, std::move(batch)});
        batch = {};
        batch.reserve(opts_.chunk);
        Service();
      }
    }
    // The last partial chunk (the whole directory, when it is small) is done
    // right here with the fd already open.
    if (!batch.empty()) StatNames(dir, dirfd(d), batch);
    closedir(d);
  }

  void StatNames(const std::string& dir, int fd, const std::vector<std::string>& names) {
    size_t since_service = 0;
    for (const auto& name : names) {
      struct stat st;
      if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) ++stats_->vanished;
        else Error(PosixError("lstat", ChildPath(dir, name.c_str()), errno).ToString());
        continue;
      }
      Entry e;
      e.path = ChildPath(dir, name.c_str());
      FillFromStat(st, &e);
      if (opts_.read_hsm && e.is_file()) {
        auto hs = ReadHsmState(e.path);
        if (hs.ok()) {
          e.hsm_flags = hs->flags;
          e.archive_id = hs->archive_id;
        } else if (hs.status().err() == ENOENT) {
          ++stats_->vanished;
          continue;
        } else {
          Error(hs.status().ToString());
        }
      }
      if (e.is_dir() && !(opts_.prune && opts_.prune(e))) q_.push_back(Item{e.path, {}});
      Emit(std::move(e));
      if (++since_service == 64) {
        since_service = 0;
        Service();
      }
    }
  }

  // Answers steal requests, takes in work, tokens and the end signal.
  void Service() {
    if (opts_.progress) opts_.progress->Tick();
    if (size_ == 1) return;
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, &st);
      if (!flag) return;
      int n = 0;
      MPI_Get_count(&st, MPI_CHAR, &n);
      rx_.resize(static_cast<size_t>(n));
      MPI_Recv(rx_.data(), n, MPI_CHAR, st.MPI_SOURCE, st.MPI_TAG, comm_, MPI_STATUS_IGNORE);
      switch (st.MPI_TAG) {
        case kTagSteal: AnswerSteal(st.MPI_SOURCE); break;
        case kTagWork:
          waiting_ = false;
          if (n > 0) {
            Unpack();
            --count_;
            black_ = true;
          }
          break;
        case kTagToken: {
          int64_t t[2];
          std::memcpy(t, rx_.data(), sizeof t);
          tok_sum_ = t[0];
          tok_black_ = t[1] != 0;
          have_token_ = true;
          token_returned_ = rank_ == 0;
          break;
        }
        case kTagDone: done_ = true; break;
        default: break;
      }
    }
  }

  void AnswerSteal(int thief) {
    std::string out;
    // Keep at least one item: giving away the last one would only move the
    // idleness elsewhere.
    if (q_.size() >= 2) {
      const size_t give = q_.size() / 2;
      PutU32(&out, static_cast<uint32_t>(give));
      for (size_t i = 0; i < give; ++i) {
        Item& it = q_.front();
        PutU32(&out, static_cast<uint32_t>(it.dir.size()));
        out += it.dir;
        PutU32(&out, static_cast<uint32_t>(it.names.size()));
        for (const auto& nm : it.names) {
          PutU32(&out, static_cast<uint32_t>(nm.size()));
          out += nm;
        }
        q_.pop_front();
      }
      ++count_;
    }
    MPI_Send(out.data(), static_cast<int>(out.size()), MPI_CHAR, thief, kTagWork, comm_);
  }

  void Unpack() {
    const char* p = rx_.data();
    const uint32_t items = GetU32(p);
    for (uint32_t i = 0; i < items; ++i) {
      Item it;
      uint32_t len = GetU32(p);
      it.dir.assign(p, len);
      p += len;
      const uint32_t nn = GetU32(p);
      it.names.reserve(nn);
      for (uint32_t k = 0; k < nn; ++k) {
        len = GetU32(p);
        it.names.emplace_back(p, len);
        p += len;
      }
      q_.push_back(std::move(it));
    }
    ++stats_->steals;
  }

  void SendToken(int to, int64_t sum, bool black) {
    int64_t t[2] = {sum, black ? 1 : 0};
    MPI_Send(t, sizeof t, MPI_CHAR, to, kTagToken, comm_);
    have_token_ = false;
  }

  void Idle() {
    if (!waiting_) {
      MPI_Send(nullptr, 0, MPI_CHAR, victim_, kTagSteal, comm_);
      waiting_ = true;
      // Round-robin over the other ranks: every victim is asked in turn, so
      // the one rank that has work is found within size-1 requests.
      victim_ = (victim_ + 1) % size_;
      if (victim_ == rank_) victim_ = (victim_ + 1) % size_;
    }
    if (have_token_) {
      if (rank_ == 0) {
        if (token_returned_ && !tok_black_ && !black_ && tok_sum_ + count_ == 0) {
          for (int r = 1; r < size_; ++r) MPI_Send(nullptr, 0, MPI_CHAR, r, kTagDone, comm_);
          done_ = true;
          return;
        }
        black_ = false;
        token_returned_ = false;
        SendToken(1, 0, false);
      } else {
        SendToken((rank_ + 1) % size_, tok_sum_ + count_, tok_black_ || black_);
        black_ = false;
      }
    }
    // Idle ranks share the cores with busy ones (2 cores, up to 4 ranks):
    // a short sleep keeps polling from stealing their CPU.
    usleep(100);
  }

  const WalkOptions& opts_;
  const EntrySink& sink_;
  WalkStats* stats_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::deque<Item> q_;
  std::vector<char> rx_;
  bool waiting_ = false;  // a steal request is out
  int victim_ = 0;
  // Safra's termination detection.
  int64_t count_ = 0;  // work messages sent - received
  bool black_ = false;
  bool have_token_ = false;
  bool token_returned_ = false;  // rank 0: the token came back around
  int64_t tok_sum_ = 0;
  bool tok_black_ = false;
  bool done_ = false;
};

}  // namespace

Status Walk(MPI_Comm comm, const WalkOptions& opts, const EntrySink& sink, WalkStats* stats) {
  if (opts.roots.empty()) return InvalidArgument("walk: no root given");
  WalkOptions o = opts;
  for (auto& r : o.roots) r = AbsolutePath(r);
  if (o.chunk == 0) o.chunk = 1;
  Walker w(comm, o, sink, stats);
  w.Run();
  return Status::Ok();
}

}  // namespace pdm::tools
