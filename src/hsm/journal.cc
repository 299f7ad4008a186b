#include "hsm/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hsm/posix_archive.h"


namespace pdm::hsm {
namespace {

using nlohmann::json;

constexpr uint32_t kMagic = 0x4A4D4450;  // "PDMJ" as little-endian bytes
constexpr size_t kHeader = 16;           // magic, length, checksum
constexpr uint32_t kMaxPayload = 1u << 20;

std::string Hex(std::span<const uint8_t> b) {
  static constexpr char d[] = "0123456789abcdef";
  std::string s;
  s.reserve(b.size() * 2);
  for (uint8_t x : b) {
    s += d[x >> 4];
    s += d[x & 15];
  }
  return s;
}

bool Unhex(const std::string& s, std::vector<uint8_t>* out) {
  if (s.size() % 2) return false;
  out->clear();
  for (size_t i = 0; i < s.size(); i += 2) {
    auto v = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    int a = v(s[i]), b = v(s[i + 1]);
    if (a < 0 || b < 0) return false;
    out->push_back(static_cast<uint8_t>(a << 4 | b));
  }
  return true;
}

void PutLe32(std::string* s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s->push_back(static_cast<char>(v >> (8 * i)));
}
void PutLe64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t GetLe(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

// Non-UTF-8 text (a reason, a key from a damaged caller) must not throw out
// of dump(): replace bad bytes instead.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string Frame(const std::string& payload) {
  std::string rec;
  rec.reserve(kHeader + payload.size());
  PutLe32(&rec, kMagic);
  PutLe32(&rec, static_cast<uint32_t>(payload.size()));
  PutLe64(&rec, XXH3_64bits(payload.data(), payload.size()));
  rec += payload;
  return rec;
}

Result<MoveOp> ParseOp(const std::string& s) {
  for (MoveOp op : {MoveOp::kArchive, MoveOp::kRelease, MoveOp::kMigrate, MoveOp::kRecall, MoveOp::kRemove})
    if (MoveOpName(op) == s) return op;
  return DataLoss("journal: unknown op '" + s + "'");
}

json BeginRecord(const Move& m) {
  return json{{"t", "begin"}, {"id", m.id},         {"op", MoveOpName(m.op)}, {"h", Hex(m.handle)},
              {"key", m.key}, {"ver", m.version}, {"ns", m.begin_ns}};
}

// The replayed state of a journal.
struct State {
  std::map<uint64_t, Move> moves;
  uint64_t next_id = 1;     // from the compaction header and every begin
  uint64_t last_begin = 0;  // begins come in increasing id order
};

// Applies one decoded record. Anything inconsistent is DataLoss: the record
// passed its checksum, so the journal's history itself is wrong.
Status ApplyRecord(const json& j, State* st) {
  auto bad = [&](const std::string& why) { return DataLoss("journal record " + Dump(j).substr(0, 200) + ": " + why); };
  if (!j.is_object() || !j.contains("t") || !j["t"].is_string()) return bad("no type");
  const std::string t = j["t"];
  if (t == "hdr") {
    if (!j.contains("next") || !j["next"].is_number_unsigned()) return bad("next");
    st->next_id = std::max(st->next_id, j["next"].get<uint64_t>());
    return Status::Ok();
  }
  if (!j.contains("id") || !j["id"].is_number_unsigned()) return bad("no id");
  uint64_t id = j["id"];
  if (t == "begin") {
    if (id <= st->last_begin) return bad("id reused");
    Move m;
    m.id = id;
    if (!j.contains("op") || !j["op"].is_string() || !j.contains("h") || !j["h"].is_string() ||
        !j.contains("key") || !j["key"].is_string() || !j.contains("ver") || !j["ver"].is_number_unsigned() ||
        !j.contains("ns") || !j["ns"].is_number_integer())
      return bad("begin fields");
    PDM_ASSIGN_OR_RETURN(m.op, ParseOp(j["op"]));
    if (!Unhex(j["h"], &m.handle)) return bad("handle not hex");
    m.key = j["key"];
    m.version = j["ver"];
    m.begin_ns = j["ns"];
    st->moves.emplace(id, std::move(m));
    st->last_begin = id;
    st->next_id = std::max(st->next_id, id + 1);
    return Status::Ok();
  }
  auto it = st->moves.find(id);
  if (it == st->moves.end()) return bad("move not in flight");
  Move& m = it->second;
  if (t == "chunk") {
    if (!j.contains("c")) return bad("chunk");
    PDM_ASSIGN_OR_RETURN(ChunkRef c, ChunkRefFromJson(j["c"]));
    auto pos = std::lower_bound(m.chunks.begin(), m.chunks.end(), c.index,
                                [](const ChunkRef& a, uint32_t i) { return a.index < i; });
    if (pos != m.chunks.end() && pos->index == c.index)
      *pos = std::move(c);
    else
      m.chunks.insert(pos, std::move(c));
  } else if (t == "archived") {
    if (!j.contains("sum") || !j["sum"].is_string()) return bad("sum");
    auto sum = Checksum128::FromHex(j["sum"].get<std::string>());
    if (!sum.ok()) return bad("sum not hex");
    m.archived = true;
    m.sum = *sum;
  } else if (t == "released") {
    m.released = true;
  } else if (t == "end" || t == "abort") {
    st->moves.erase(it);
  } else {
    return bad("unknown type");
  }
  return Status::Ok();
}

bool AllZero(const uint8_t* p, size_t n) {
  return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
}

// Parses a whole journal image. *valid_end is set to the end of the last good
// record; a torn tail (see journal.h) stops parsing without error.
Status ParseImage(std::span<const uint8_t> img, State* st, uint64_t* valid_end, const std::string& path) {
  size_t p = 0;
  *valid_end = 0;
  while (p < img.size()) {
    size_t left = img.size() - p;
    auto torn = [&] {
      spdlog::warn("journal {}: torn tail of {} bytes at offset {} dropped", path, left, p);
      return Status::Ok();
    };
    auto damaged = [&](const char* why) {
      return DataLoss("journal " + path + ": damaged record at offset " + std::to_string(p) + " (" + why +
                      ") with more data after it");
    };
    if (AllZero(img.data() + p, left)) return torn();
    if (left < kHeader) return torn();
    uint32_t magic = static_cast<uint32_t>(GetLe(img.data() + p, 4));
    uint32_t len = static_cast<uint32_t>(GetLe(img.data() + p + 4, 4));
    uint64_t sum = GetLe(img.data() + p + 8, 8);
    if (magic != kMagic) return damaged("bad magic");
    if (len > kMaxPayload) return damaged("length out of range");
    if (kHeader + len > left) return torn();  // cut short by the crash
    const uint8_t* payload = img.data() + p + kHeader;
    if (XXH3_64bits(payload, len) != sum) {
      if (kHeader + len == left) return torn();  // the last record, half on disk
      return damaged("checksum mismatch");
    }
    json j = json::parse(payload, payload + len, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return damaged("payload is not JSON");
    PDM_RETURN_IF_ERROR(ApplyRecord(j, st));
    p += kHeader + len;
    *valid_end = p;
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> ReadWhole(int fd, const std::string& path) {
  std::vector<uint8_t> img;
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read", path, errno);
    }
    if (n == 0) break;
    img.insert(img.end(), buf, buf + n);
  }
  return img;
}

Status JournalIoError(std::string_view call, const std::string& path, int err) {
  if (err == ENOSPC || err == EDQUOT)
    return ResourceExhausted("journal full: " + std::string(call) + "(" + path + "): " + std::strerror(err), err);
  return PosixError(call, path, err);
}

bool NameOk(std::string_view n) {
  if (n.empty() || n.size() > 200 || n[0] == '.') return false;
  for (char c : n)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return false;
  return true;
}

int64_t RealtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace

std::string_view MoveOpName(MoveOp op) {
  switch (op) {
    case MoveOp::kArchive: return "archive";
    case MoveOp::kRelease: return "release";
    case MoveOp::kMigrate: return "migrate";
    case MoveOp::kRecall: return "recall";
    case MoveOp::kRemove: return "remove";
  }
  return "?";
}

Journal::Journal(std::string dir, std::string name, JournalOptions opts)
    : dir_(std::move(dir)), name_(std::move(name)), path_(dir_ + "/" + name_ + ".journal"), opts_(opts) {}

Journal::~Journal() {
  // Records written with JournalWait::kWritten are not lost by a clean close.
  if (fd_.valid() && opts_.sync && written_ > durable_ && sync_error_.ok()) (void)::fdatasync(fd_.get());
}

Result<std::unique_ptr<Journal>> Journal::Open(const std::string& dir, std::string_view name,
                                               const JournalOptions& opts) {
  if (!NameOk(name)) return InvalidArgument("journal name '" + std::string(name) + "'");
  std::unique_ptr<Journal> j(new Journal(dir, std::string(name), opts));
  std::string lock_path = dir + "/" + std::string(name) + ".lock";
  j->lock_fd_ = UniqueFd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!j->lock_fd_.valid()) return JournalIoError("open", lock_path, errno);
  if (::flock(j->lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Unavailable("journal " + j->path_ + " is open in another live process", EWOULDBLOCK);
    return PosixError("flock", lock_path, errno);
  }
  j->fd_ = UniqueFd(::open(j->path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!j->fd_.valid()) return JournalIoError("open", j->path_, errno);
  PDM_ASSIGN_OR_RETURN(std::vector<uint8_t> img, ReadWhole(j->fd_.get(), j->path_));
  State st;
  uint64_t valid_end = 0;
  PDM_RETURN_IF_ERROR(ParseImage(img, &st, &valid_end, j->path_));
  if (valid_end < img.size()) {
    if (::ftruncate(j->fd_.get(), static_cast<off_t>(valid_end)) != 0) return PosixError("ftruncate", j->path_, errno);
    if (::fsync(j->fd_.get()) != 0) return JournalIoError("fsync", j->path_, errno);
  }
  j->moves_ = std::move(st.moves);
  j->next_id_ = st.next_id;
  j->size_ = valid_end;
  // A new file's directory entry must survive a crash before its first
  // record counts.
  PDM_RETURN_IF_ERROR(FsyncPath(dir));
  std::unique_lock lk(j->mu_);
  if (j->size_ > j->opts_.compact_bytes) PDM_RETURN_IF_ERROR(j->CompactLocked(lk));
  return j;
}

Result<std::vector<Move>> Journal::Replay(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open", path, errno);
  PDM_ASSIGN_OR_RETURN(std::vector<uint8_t> img, ReadWhole(fd.get(), path));
  State st;
  uint64_t valid_end = 0;
  PDM_RETURN_IF_ERROR(ParseImage(img, &st, &valid_end, path));
  std::vector<Move> out;
  for (auto& [id, m] : st.moves) out.push_back(std::move(m));
  return out;
}

Result<std::vector<std::string>> Journal::List(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return PosixError("opendir", dir, errno);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    constexpr std::string_view kExt = ".journal";
    if (n.size() > kExt.size() && n.compare(n.size() - kExt.size(), kExt.size(), kExt) == 0)
      names.push_back(n.substr(0, n.size() - kExt.size()));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<Move> Journal::InFlight() const {
  std::lock_guard lk(mu_);
  std::vector<Move> out;
  for (const auto& [id, m] : moves_) out.push_back(m);
  return out;
}

Result<Move> Journal::Get(uint64_t id) const {
  std::lock_guard lk(mu_);
  auto it = moves_.find(id);
  if (it == moves_.end()) return NotFound("journal: move " + std::to_string(id) + " not in flight");
  return it->second;
}

uint64_t Journal::SizeBytes() const {
  std::lock_guard lk(mu_);
  return size_;
}

template <typename Apply>
Status Journal::AppendLocked(std::unique_lock<std::mutex>& lk, const std::string& payload, Apply apply,
                             JournalWait wait) {
  if (!sync_error_.ok()) return sync_error_;
  if (payload.size() > kMaxPayload) return InvalidArgument("journal record too large");
  std::string rec = Frame(payload);
  size_t done = 0;
  while (done < rec.size()) {
    ssize_t n = ::pwrite(fd_.get(), rec.data() + done, rec.size() - done, static_cast<off_t>(size_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = JournalIoError("pwrite", path_, errno);
      // Cut the partial record off, or every later record would sit behind
      // a damaged one. If even that fails the journal is unusable.
      if (::ftruncate(fd_.get(), static_cast<off_t>(size_)) != 0) sync_error_ = st;
      return st;
    }
    done += static_cast<size_t>(n);
  }
  size_ += rec.size();
  written_ += rec.size();
  apply();
  if (wait == JournalWait::kDurable) PDM_RETURN_IF_ERROR(SyncLocked(lk, written_));
  return MaybeCompactLocked(lk);
}

Status Journal::SyncLocked(std::unique_lock<std::mutex>& lk, uint64_t upto) {
  if (!opts_.sync) {
    durable_ = written_;
    return Status::Ok();
  }
  // Group commit: one thread runs fdatasync for everything written so far;
  // the others wait for it and return if it covered their record.
  while (durable_ < upto) {
    if (!sync_error_.ok()) return sync_error_;
    if (syncing_) {
      synced_cv_.wait(lk);
      continue;
    }
    syncing_ = true;
    uint64_t target = written_;
    int fd = fd_.get();
    lk.unlock();
    int r = ::fdatasync(fd);
    int err = errno;
    lk.lock();
    syncing_ = false;
    // A failed fdatasync may have dropped dirty pages: nothing written since
    // the last good sync can be trusted, so the journal stops here.
    if (r != 0) sync_error_ = JournalIoError("fdatasync", path_, err);
    else durable_ = std::max(durable_, target);
    synced_cv_.notify_all();
  }
  return Status::Ok();
}

Status Journal::MaybeCompactLocked(std::unique_lock<std::mutex>& lk) {
  // Only when the file is well past what compaction last left, so a large
  // in-flight set does not rewrite the file on every record.
  if (size_ > opts_.compact_bytes && size_ > 2 * compacted_size_) return CompactLocked(lk);
  return Status::Ok();
}

Status Journal::CompactLocked(std::unique_lock<std::mutex>& lk) {
  // fd_ is about to change: not while a thread is in fdatasync on it.
  // (Others may append meanwhile; their records are in moves_ and so in the
  // new image.)
  synced_cv_.wait(lk, [&] { return !syncing_; });
  if (!sync_error_.ok()) return sync_error_;
  std::string img = Frame(Dump(json{{"t", "hdr"}, {"next", next_id_}}));
  for (const auto& [id, m] : moves_) {
    img += Frame(Dump(BeginRecord(m)));
    for (const auto& c : m.chunks) img += Frame(Dump(json{{"t", "chunk"}, {"id", id}, {"c", ToJson(c)}}));
    if (m.archived) img += Frame(Dump(json{{"t", "archived"}, {"id", id}, {"sum", m.sum.Hex()}}));
    if (m.released) img += Frame(Dump(json{{"t", "released"}, {"id", id}}));
  }
  std::string tmp = path_ + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return JournalIoError("open", tmp, errno);
  Status st = WriteAll(fd.get(), {reinterpret_cast<const uint8_t*>(img.data()), img.size()}, tmp);
  if (st.ok() && ::fsync(fd.get()) != 0) st = JournalIoError("fsync", tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0) st = JournalIoError("rename", path_, errno);
  if (!st.ok()) {
    // The old journal is intact and still ours; keep using it.
    ::unlink(tmp.c_str());
    if (st.code() == Code::kResourceExhausted) {
      spdlog::warn("journal {}: compaction skipped: {}", path_, st.ToString());
      return Status::Ok();
    }
    return st;
  }
  // The rename must be durable before records go to the new file only.
  Status dir_st = FsyncPath(dir_);
  if (!dir_st.ok()) {
    sync_error_ = dir_st;
    return dir_st;
  }
  fd_ = std::move(fd);
  size_ = compacted_size_ = img.size();
  durable_ = written_;  // all of it is in the new, fsynced file
  synced_cv_.notify_all();
  return Status::Ok();
}

Status Journal::Compact() {
  std::unique_lock lk(mu_);
  return CompactLocked(lk);
}

Result<uint64_t> Journal::Begin(MoveOp op, std::span<const uint8_t> handle, std::string_view key,
                                uint64_t version) {
  std::unique_lock lk(mu_);
  Move m;
  m.id = next_id_;
  m.op = op;
  m.handle.assign(handle.begin(), handle.end());
  m.key = std::string(key);
  m.version = version;
  m.begin_ns = RealtimeNs();
  uint64_t id = m.id;
  std::string payload = Dump(BeginRecord(m));
  PDM_RETURN_IF_ERROR(AppendLocked(lk, payload, [&] {
    next_id_ = id + 1;
    moves_.emplace(id, std::move(m));
  }));
  return id;
}

Status Journal::ChunkDone(uint64_t id, const ChunkRef& chunk) {
  std::unique_lock lk(mu_);
  if (!moves_.count(id)) return NotFound("journal: move " + std::to_string(id) + " not in flight");
  return AppendLocked(lk, Dump(json{{"t", "chunk"}, {"id", id}, {"c", ToJson(chunk)}}), [&] {
    auto& chunks = moves_[id].chunks;
    auto pos = std::lower_bound(chunks.begin(), chunks.end(), chunk.index,
                                [](const ChunkRef& a, uint32_t i) { return a.index < i; });
    if (pos != chunks.end() && pos->index == chunk.index)
      *pos = chunk;
    else
      chunks.insert(pos, chunk);
  });
}

Status Journal::Archived(uint64_t id, const Checksum128& sum) {
  std::unique_lock lk(mu_);
  if (!moves_.count(id)) return NotFound("journal: move " + std::to_string(id) + " not in flight");
  return AppendLocked(lk, Dump(json{{"t", "archived"}, {"id", id}, {"sum", sum.Hex()}}), [&] {
    moves_[id].archived = true;
    moves_[id].sum = sum;
  });
}

Status Journal::Released(uint64_t id, JournalWait wait) {
  std::unique_lock lk(mu_);
  if (!moves_.count(id)) return NotFound("journal: move " + std::to_string(id) + " not in flight");
  return AppendLocked(
      lk, Dump(json{{"t", "released"}, {"id", id}}), [&] { moves_[id].released = true; }, wait);
}

Status Journal::End(uint64_t id, JournalWait wait) {
  std::unique_lock lk(mu_);
  if (!moves_.count(id)) return NotFound("journal: move " + std::to_string(id) + " not in flight");
  return AppendLocked(lk, Dump(json{{"t", "end"}, {"id", id}}), [&] { moves_.erase(id); }, wait);
}

Status Journal::Abort(uint64_t id, std::string_view reason, JournalWait wait) {
  std::unique_lock lk(mu_);
  if (!moves_.count(id)) return NotFound("journal: move " + std::to_string(id) + " not in flight");
  json j{{"t", "abort"}, {"id", id}, {"why", std::string(reason.substr(0, 1024))}};
  return AppendLocked(lk, Dump(j), [&] { moves_.erase(id); }, wait);
}

}  // namespace pdm::hsm
