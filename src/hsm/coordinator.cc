#include "hsm/coordinator.h"

#include <dmapi.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <atomic>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "common/posix.h"
#include "dm/handle.h"
#include "hsm/dm_util.h"

namespace pdm::hsm {

namespace {

// A stub's region: any access (the kernel reports reads and writes alike as
// FAN_PRE_ACCESS, so a READ region catches both) recalls first. Resident
// files, archived or not, carry no region: their reads cost nothing, and
// writes to archived ones are caught afterwards by CLOSE (written and
// closed), which marks them dirty; release re-checks size and mtime anyway.
constexpr unsigned kStub = DM_REGION_READ | DM_REGION_WRITE | DM_REGION_TRUNCATE;

struct FileStat {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

Result<FileStat> StatOf(dm_sessid_t sid, const std::string& h, dm_token_t token) {
  dm_stat_t st{};
  if (dm_get_fileattr(sid, H(h), h.size(), token, DM_AT_STAT, &st) != 0) return DmError("dm_get_fileattr");
  return FileStat{static_cast<uint64_t>(st.dt_size), static_cast<int64_t>(st.dt_mtime) * 1000000000};
}

// The file may be missing data: it carries the HSM's READ region.
bool IsStub(dm_sessid_t sid, const std::string& h, dm_token_t token) {
  dm_region_t regs[4];
  unsigned n = 0;
  return dm_get_region(sid, H(h), h.size(), token, 4, regs, &n) == 0 && n > 0 && (regs[0].rg_flags & DM_REGION_READ);
}

bool Unchanged(const FileState& s, const FileStat& st) { return s.size == st.size && s.mtime_ns == st.mtime_ns; }

// Whether any of the file's bytes are a hole: what a stub left by a release
// that did not finish tells us about its punch. Its mtime cannot (a punch
// moves mtime, then puts it back; a crash can keep the first step only).
// Unreadable → true: then the copy is taken to hold the data.
bool HasHole(dm_sessid_t sid, const std::string& h, dm_token_t token) {
  dm_off_t off = 0;
  for (;;) {
    dm_extent_t ext[64];
    unsigned n = 0;
    const int rc = dm_get_allocinfo(sid, H(h), h.size(), token, &off, 64, ext, &n);
    if (rc < 0) return true;
    for (unsigned i = 0; i < n; ++i)
      if (ext[i].ex_type == DM_EXTENT_HOLE && ext[i].ex_length > 0) return true;
    if (rc == 0 || n == 0) return false;
  }
}

std::string KeyFor(const std::string& h, uint64_t ver) {
  auto parsed = dm::Handle::Parse({reinterpret_cast<const uint8_t*>(h.data()), h.size()});
  if (!parsed.ok()) return {};
  return MakeObjectKey(parsed->fsid(), parsed->ino(), parsed->igen(), ver);
}

// Runs f(0..n-1) on up to `width` threads. The per-file steps of a request
// each wait on a round trip or an fsync; side by side, the journal's group
// commit and the node's pipelining turn hundreds of waits into a few.
template <class F>
void ParallelFor(size_t n, size_t width, F f) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> ts;
  for (size_t k = 0; k < std::min(n, width); ++k)
    ts.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) f(i);
    });
  for (auto& t : ts) t.join();
}
constexpr size_t kFileParallelism = 32;

Status FirstError(const std::vector<Status>& v) {
  for (const auto& s : v)
    if (!s.ok()) return s;
  return Status::Ok();
}

}  // namespace

Coordinator::Coordinator(Options opts, hsm::Archive* archive) : opts_(std::move(opts)), archive_(archive) {
  // Task ids must not repeat across coordinators: results of a dead
  // coordinator's tasks still arrive at the session its successor assumed.
  next_task_ = (uint64_t(std::random_device{}()) << 32) | 1;
}
Coordinator::~Coordinator() = default;

Status Coordinator::Start(uint64_t oldsid) {
  dm_sessid_t sid;
  if (dm_create_session(oldsid ? oldsid : DM_NO_SESSION, const_cast<char*>(std::string(kCoordinatorInfo).c_str()),
                        &sid) != 0)
    return DmError("dm_create_session(coordinator)");
  sid_ = sid;
  void* fsh;
  size_t fshl;
  if (dm_path_to_fshandle(const_cast<char*>(opts_.view.c_str()), &fsh, &fshl) != 0)
    return DmError("dm_path_to_fshandle");
  fsh_.assign(static_cast<char*>(fsh), fshl);
  dm_handle_free(fsh, fshl);
  dm_eventset_t ev;
  DMEV_ZERO(ev);
  DMEV_SET(DM_EVENT_READ, ev);
  DMEV_SET(DM_EVENT_WRITE, ev);
  DMEV_SET(DM_EVENT_TRUNCATE, ev);
  DMEV_SET(DM_EVENT_DESTROY, ev);
  DMEV_SET(DM_EVENT_CLOSE, ev);
  if (dm_set_disp(sid_, H(fsh_), fsh_.size(), DM_NO_TOKEN, &ev, DM_EVENT_MAX) != 0) return DmError("dm_set_disp");
  if (dm_set_eventlist(sid_, H(fsh_), fsh_.size(), DM_NO_TOKEN, &ev, DM_EVENT_MAX) != 0)
    return DmError("dm_set_eventlist");
  // DESTROY then carries the file's state, so its archive copy can go.
  dm_attrname_t name = StateAttrName();
  if (dm_set_return_on_destroy(sid_, H(fsh_), fsh_.size(), DM_NO_TOKEN, &name, DM_TRUE) != 0)
    return DmError("dm_set_return_on_destroy");
  PDM_ASSIGN_OR_RETURN(journal_, Journal::Open(opts_.journal_dir, "coordinator"));
  PDM_RETURN_IF_ERROR(Recover());
  spdlog::info("hsm: coordinator session {} ({}) on {}", sid_, oldsid ? "assumed" : "new", opts_.view);
  return Status::Ok();
}

Status Coordinator::Recover() {
  // What a dead coordinator left half done. Nothing is ever released before
  // its copy is committed and recorded, so rolling back means: drop an
  // uncommitted or unrecorded object; a file whose data may be gone (READ
  // region) is a stub whatever its state says, and reads recall it.
  //
  // A file a release left with its stub region: punched (even partly: a
  // hole), its data is the copy's, so it is released; no hole and changed
  // since the copy, it was never punched (the punch comes only after the
  // check), so the region goes and it is dirty. A recall cut short leaves
  // a stub.
  auto settle_stub = [&](const std::string& h, FileState s, bool recall) {
    if (s.Has(kReleased) || !IsStub(sid_, h, DM_NO_TOKEN)) return;
    auto fs = StatOf(sid_, h, DM_NO_TOKEN);
    if (!recall && fs.ok() && !Unchanged(s, *fs) && !HasHole(sid_, h, DM_NO_TOKEN)) {
      if (Status e = SetWholeRegion(sid_, h, DM_NO_TOKEN, 0); !e.ok())
        spdlog::warn("hsm: recovery cannot clear the region of {}: {}", s.key, e.ToString());
      s.Set(kDirty);
    } else {
      s.Set(kReleased);
    }
    (void)PutState(sid_, h, DM_NO_TOKEN, s);
  };
  for (const Move& m : journal_->InFlight()) {
    const std::string h(m.handle.begin(), m.handle.end());
    auto st = GetState(sid_, h, DM_NO_TOKEN);
    const bool recorded = st.ok() && st->key == m.key && st->Has(kArchived);
    if (m.op == MoveOp::kRelease || m.op == MoveOp::kRecall) {
      // These begin only on a committed, recorded copy: never drop it.
      if (recorded) settle_stub(h, *st, m.op == MoveOp::kRecall);
      (void)journal_->End(m.id);
      spdlog::info("hsm: recovery finished {} of {}", MoveOpName(m.op), m.key);
      continue;
    }
    if (!m.archived || !recorded) {
      if (Status s = m.archived ? archive_->Remove(m.key) : archive_->AbortObject(m.key, m.chunks); !s.ok())
        spdlog::warn("hsm: recovery could not drop object {}: {}", m.key, s.ToString());
      (void)journal_->Abort(m.id, "coordinator died before the copy was recorded");
      spdlog::info("hsm: recovery rolled back {} of {}", MoveOpName(m.op), m.key);
      continue;
    }
    settle_stub(h, *st, false);
    (void)journal_->End(m.id);
    spdlog::info("hsm: recovery finished {} of {}", MoveOpName(m.op), m.key);
  }
  return Status::Ok();
}

void Coordinator::Run() {
  std::vector<uint8_t> buf(1u << 20);
  for (;;) {
    size_t rlen = 0;
    if (dm_get_events(sid_, 64, DM_EV_WAIT, buf.size(), buf.data(), &rlen) != 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      spdlog::info("hsm: coordinator session ends ({})", std::strerror(errno));
      return;
    }
    for (auto* m = reinterpret_cast<dm_eventmsg_t*>(buf.data()); m != nullptr; m = DM_STEP_TO_NEXT(m, dm_eventmsg_t*)) {
      const size_t len = DM_GET_LEN(m, ev_data) + static_cast<size_t>(m->ev_data.vd_offset);
      std::vector<uint8_t> copy(reinterpret_cast<uint8_t*>(m), reinterpret_cast<uint8_t*>(m) + len);
      // Task results only wake a waiter; everything else may take long
      // (it moves data), so it gets a thread of its own.
      if (m->ev_type == DM_EVENT_USER) {
        const char* p = DM_GET_VALUE(m, ev_data, const char*);
        const std::string_view text(p, DM_GET_LEN(m, ev_data));
        if (KindOf(text) == MessageKind::kResult) {
          auto r = DecodeResult(text);
          if (r.ok()) {
            std::lock_guard<std::mutex> lk(mu_);
            results_[r->id] = std::move(*r);
            cv_.notify_all();
          }
          continue;
        }
      }
      std::thread([this, copy = std::move(copy)]() mutable { OnEvent(std::move(copy)); }).detach();
    }
  }
}

void Coordinator::OnEvent(std::vector<uint8_t> raw) {
  auto* m = reinterpret_cast<dm_eventmsg_t*>(raw.data());
  const uint64_t token = m->ev_token;
  switch (m->ev_type) {
    case DM_EVENT_USER: {
      const char* p = DM_GET_VALUE(m, ev_data, const char*);
      auto req = DecodeRequest(std::string_view(p, DM_GET_LEN(m, ev_data)));
      if (!req.ok()) {
        spdlog::warn("hsm: refused a malformed request: {}", req.status().ToString());
        return Respond(token, req.status());
      }
      return OnRequest(token, *req);
    }
    case DM_EVENT_READ:
    case DM_EVENT_WRITE:
    case DM_EVENT_TRUNCATE: {
      auto* de = DM_GET_VALUE(m, ev_data, dm_data_event_t*);
      const char* hp = DM_GET_VALUE(de, de_handle, const char*);
      return OnDataEvent(token, m->ev_type, std::string(hp, DM_GET_LEN(de, de_handle)));
    }
    case DM_EVENT_CLOSE: {
      auto* ne = DM_GET_VALUE(m, ev_data, dm_namesp_event_t*);
      const char* hp = DM_GET_VALUE(ne, ne_handle1, const char*);
      return OnClose(std::string(hp, DM_GET_LEN(ne, ne_handle1)));
    }
    case DM_EVENT_DESTROY: {
      auto* de = DM_GET_VALUE(m, ev_data, dm_destroy_event_t*);
      const char* cp = DM_GET_VALUE(de, ds_attrcopy, const char*);
      return OnDestroy(std::string(cp, DM_GET_LEN(de, ds_attrcopy)));
    }
    default:
      if (token != DM_INVALID_TOKEN) Respond(token, Status::Ok());
  }
}

void Coordinator::Respond(uint64_t token, const Status& st) {
  if (token == DM_INVALID_TOKEN || token == 0) return;
  const int err = st.ok() ? 0 : (st.err() ? st.err() : EIO);
  if (dm_respond_event(sid_, token, err ? DM_RESP_ABORT : DM_RESP_CONTINUE, err, 0, nullptr) != 0)
    spdlog::warn("hsm: cannot answer token {:#x}: {}", token, std::strerror(errno));
}

void Coordinator::BeginMove(const std::string& h) {
  std::lock_guard<std::mutex> lk(mu_);
  ++moving_[h];
}

void Coordinator::EndMove(const std::string& h) {
  std::lock_guard<std::mutex> lk(mu_);
  if (--moving_[h] <= 0) {
    moving_.erase(h);
    cancelled_.erase(h);
  }
}

bool Coordinator::Cancelled(const std::string& h) {
  std::lock_guard<std::mutex> lk(mu_);
  return cancelled_.count(h) > 0;
}

void Coordinator::OnRequest(uint64_t token, const Request& req) {
  if (req.op == Op::kCancel) {
    // No rights: the move to stop holds them. Only files in flight.
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& h : req.handles)
      if (moving_.count(h)) cancelled_[h] = true;
    cv_.notify_all();
    return Respond(token, Status::Ok());
  }
  std::vector<Status> out(req.handles.size(), Status::Ok());
  // Rights first: EXCL on every file of the request, under its token.
  ParallelFor(req.handles.size(), kFileParallelism, [&](size_t i) {
    if (dm_request_right(sid_, H(req.handles[i]), req.handles[i].size(), token, DM_RR_WAIT, DM_RIGHT_EXCL) != 0)
      out[i] = DmError("dm_request_right");
  });
  if (req.op == Op::kArchive || req.op == Op::kMigrate) {
    std::vector<std::string> todo;
    std::vector<size_t> where;
    for (size_t i = 0; i < req.handles.size(); ++i)
      if (out[i].ok()) {
        todo.push_back(req.handles[i]);
        where.push_back(i);
      }
    std::vector<Status> got;
    (void)ArchiveBatch(token, todo, req.op == Op::kMigrate, &got);
    for (size_t k = 0; k < where.size(); ++k) out[where[k]] = got[k];
  } else if (req.op == Op::kRelease) {
    std::vector<ReleaseItem> items(req.handles.size());
    std::vector<uint8_t> have(req.handles.size(), 0);  // not vector<bool>: written from several threads
    ParallelFor(req.handles.size(), kFileParallelism, [&](size_t i) {
      if (!out[i].ok()) return;
      auto st = GetState(sid_, req.handles[i], token);
      if (!st.ok()) {
        out[i] = st.status();
        return;
      }
      BeginMove(req.handles[i]);
      items[i] = ReleaseItem{i, std::move(*st), 0};
      have[i] = 1;
    });
    std::vector<ReleaseItem> todo;
    for (size_t i = 0; i < items.size(); ++i)
      if (have[i]) todo.push_back(std::move(items[i]));
    std::vector<Status> got;
    ReleaseMany(token, req.handles, std::move(todo), &got);
    for (size_t i = 0; i < req.handles.size(); ++i)
      if (out[i].ok()) out[i] = got[i];
  } else {
    ParallelFor(req.handles.size(), kFileParallelism, [&](size_t i) {
      if (!out[i].ok()) return;
      const std::string& h = req.handles[i];
      out[i] = req.op == Op::kRecall ? Recall(token, h) : Remove(token, h);
    });
  }
  Status first = FirstError(out);
  if (!first.ok()) spdlog::warn("hsm: {} of {} files: {}", OpName(req.op), req.handles.size(), first.ToString());
  Respond(token, first);
}

void Coordinator::OnDataEvent(uint64_t token, unsigned type, const std::string& h) {
  const int64_t t0 = MonotonicNs();
  if (dm_request_right(sid_, H(h), h.size(), token, DM_RR_WAIT, DM_RIGHT_EXCL) != 0)
    return Respond(token, DmError("dm_request_right"));
  spdlog::debug("hsm: data event {} token {:#x}: right after {:.3f} s", type, token, double(MonotonicNs() - t0) / 1e9);
  // A stub's region carries READ, and the kernel reports every access to it
  // (write and truncate too) as one, so a READ means: bring the data back.
  // Recall does nothing for a file that is resident again (the second of
  // two readers, who waited for the right).
  if (type == DM_EVENT_READ) {
    Status st = Recall(token, h);
    spdlog::debug("hsm: data event token {:#x} answered after {:.3f} s", token, double(MonotonicNs() - t0) / 1e9);
    return Respond(token, st);
  }
  // WRITE / TRUNCATE come only from regions without READ (not the HSM's):
  // the archive copy no longer matches what the file will hold: dirty,
  // never released until archived again; no more events needed.
  auto st = GetState(sid_, h, token);
  if (!st.ok()) return Respond(token, st.status());
  FileState s = *st;
  if (s.Has(kArchived)) s.Set(kDirty);
  if (Status e = PutState(sid_, h, token, s); !e.ok()) return Respond(token, e);
  Respond(token, SetWholeRegion(sid_, h, token, 0));
}

void Coordinator::OnClose(const std::string& h) {
  // Asynchronous: no token. A file written since its copy is dirty.
  auto st = GetState(sid_, h, DM_NO_TOKEN);
  if (!st.ok() || !st->Has(kArchived) || st->Has(kDirty) || st->Has(kReleased)) return;
  auto fs = StatOf(sid_, h, DM_NO_TOKEN);
  if (!fs.ok() || Unchanged(*st, *fs)) return;
  FileState s = *st;
  s.Set(kDirty);
  if (Status e = PutState(sid_, h, DM_NO_TOKEN, s); !e.ok())
    spdlog::warn("hsm: cannot mark {} dirty: {}", s.key, e.ToString());
}

void Coordinator::OnDestroy(const std::string& attrcopy) {
  if (!opts_.remove_on_destroy || attrcopy.empty()) return;
  auto s = Decode({reinterpret_cast<const uint8_t*>(attrcopy.data()), attrcopy.size()});
  if (!s.ok() || s->key.empty()) return;
  if (Status st = archive_->Remove(s->key); !st.ok() && st.err() != ENOENT)
    spdlog::warn("hsm: DESTROY: cannot drop object {}: {}", s->key, st.ToString());
  else
    spdlog::info("hsm: DESTROY: dropped object {}", s->key);
}

// ---------------------------------------------------------------------------
// Moves

Status Coordinator::ArchiveBatch(uint64_t token, const std::vector<std::string>& handles, bool then_release,
                                 std::vector<Status>* out) {
  out->assign(handles.size(), Status::Ok());
  struct Plan {
    size_t i;
    FileState state;
    FileStat stat;
    std::string key;
    uint64_t move = 0;
    std::vector<ChunkRef> chunks;
    std::optional<ObjectManifest> manifest;
    Status st;
  };
  std::vector<std::optional<Plan>> planned(handles.size());
  // What a migrate releases: the files archived below, and those whose copy
  // is current already (a release on its own for each).
  std::vector<ReleaseItem> to_release;
  std::mutex release_mu;
  const int64_t t0 = MonotonicNs();
  ParallelFor(handles.size(), kFileParallelism, [&](size_t i) {
    auto st = GetState(sid_, handles[i], token);
    if (!st.ok()) { (*out)[i] = st.status(); return; }
    auto fs = StatOf(sid_, handles[i], token);
    if (!fs.ok()) { (*out)[i] = fs.status(); return; }
    if (st->Has(kNoArchive)) { (*out)[i] = PermissionDenied("file is marked noarchive", EPERM); return; }
    if (st->Has(kArchived) && !st->Has(kDirty) && !st->Has(kLost) && (st->Has(kReleased) || Unchanged(*st, *fs))) {
      if (then_release && !st->Has(kReleased)) {
        BeginMove(handles[i]);
        std::lock_guard<std::mutex> lk(release_mu);
        to_release.push_back(ReleaseItem{i, std::move(*st), 0});
      }
      return;  // the copy is current
    }
    // A stub's bytes are in the archive, not in the file: copying it out
    // would archive the holes (a lost stub would come back as zeros).
    if ((st->flags & (kReleased | kLost)) && IsStub(sid_, handles[i], token)) {
      (*out)[i] = DataLoss("a stub whose archive copy is lost: its data is nowhere to copy from", EIO);
      return;
    }
    Plan p{i, *st, *fs, KeyFor(handles[i], st->ver + 1), 0, {}, std::nullopt, Status::Ok()};
    if (p.key.empty()) { (*out)[i] = InvalidArgument("bad handle", EBADF); return; }
    auto id = journal_->Begin(then_release ? MoveOp::kMigrate : MoveOp::kArchive,
                              {reinterpret_cast<const uint8_t*>(handles[i].data()), handles[i].size()}, p.key,
                              st->ver + 1);
    if (!id.ok()) { (*out)[i] = id.status(); return; }
    p.move = *id;
    BeginMove(handles[i]);
    planned[i] = std::move(p);
  });
  std::vector<Plan> plans;
  for (auto& p : planned)
    if (p) plans.push_back(std::move(*p));
  const int64_t t_plan = MonotonicNs();

  // Tasks: each chunk of a big file alone; small files batched.
  struct Pending {
    Task task;
    std::vector<size_t> plans;  // which plan each item belongs to
  };
  std::vector<Pending> tasks;
  Pending batch;
  uint64_t batch_bytes = 0;
  auto flush = [&] {
    if (batch.task.items.empty()) return;
    tasks.push_back(std::move(batch));
    batch = Pending{};
    batch_bytes = 0;
  };
  for (size_t k = 0; k < plans.size(); ++k) {
    const Plan& p = plans[k];
    const std::string& h = handles[p.i];
    const uint32_t n = ChunkCount(p.stat.size, opts_.chunk_size);
    if (n > 1) {
      for (uint32_t c = 0; c < n; ++c) {
        const uint64_t off = uint64_t(c) * opts_.chunk_size;
        Pending one;
        one.task.items.push_back({h, p.key, c, off, std::min(opts_.chunk_size, p.stat.size - off)});
        one.plans.push_back(k);
        tasks.push_back(std::move(one));
      }
    } else if (n == 1) {
      batch.task.items.push_back({h, p.key, 0, 0, p.stat.size});
      batch.plans.push_back(k);
      batch_bytes += p.stat.size;
      if (batch_bytes >= opts_.batch_bytes || batch.task.items.size() >= opts_.batch_files) flush();
    }
  }
  flush();
  std::vector<std::future<Result<TaskResult>>> running;
  for (auto& t : tasks) {
    t.task.kind = TaskKind::kPut;
    t.task.sid = sid_;
    t.task.token = token;
    running.push_back(std::async(std::launch::async, [this, task = t.task] { return RunTask(task, false); }));
  }
  for (size_t t = 0; t < tasks.size(); ++t) {
    auto r = running[t].get();
    for (size_t j = 0; j < tasks[t].plans.size(); ++j) {
      Plan& p = plans[tasks[t].plans[j]];
      if (!r.ok()) p.st = r.status();
      else if (r->err) p.st = FromErrno(r->err, r->what);
      else if (j < r->chunks.size() && r->chunks[j].index == tasks[t].task.items[j].index) {
        p.chunks.push_back(r->chunks[j]);
        if (tasks[t].task.items.size() == 1) (void)journal_->ChunkDone(p.move, r->chunks[j]);
      } else {
        p.st = Internal("a worker's result does not match its task", EIO);
      }
    }
  }

  const int64_t t_data = MonotonicNs();
  // Manifests, committed together per batch of small files (one publication
  // pass: the archive syncs their directories once), a big file alone.
  for (Plan& p : plans) {
    const std::string& h = handles[p.i];
    if (p.st.ok() && Cancelled(h)) p.st = Aborted("cancelled", ECANCELED);
    if (!p.st.ok()) continue;
    std::sort(p.chunks.begin(), p.chunks.end(), [](const ChunkRef& a, const ChunkRef& b) { return a.index < b.index; });
    auto m = BuildManifest(p.key, p.stat.size, opts_.chunk_size, p.chunks, "handle " + std::to_string(h.size()) + "B");
    if (m.ok()) p.manifest = std::move(*m);
    else p.st = m.status();
  }
  std::vector<std::vector<size_t>> groups;
  for (const Pending& t : tasks)
    if (ChunkCount(plans[t.plans[0]].stat.size, opts_.chunk_size) == 1) groups.push_back(t.plans);
  for (size_t k = 0; k < plans.size(); ++k)  // big files, and empty ones (no task)
    if (ChunkCount(plans[k].stat.size, opts_.chunk_size) != 1) groups.push_back({k});
  ParallelFor(groups.size(), kFileParallelism, [&](size_t g) {
    std::vector<size_t> ready;
    std::vector<ObjectManifest> ms;
    for (size_t k : groups[g])
      if (plans[k].st.ok()) {
        ready.push_back(k);
        ms.push_back(*plans[k].manifest);
      }
    size_t committed = 0;
    if (ms.empty() || archive_->Commit(ms, &committed).ok()) return;
    // Which one failed: the rest one by one, so one bad object does not
    // fail its neighbours.
    for (size_t j = committed; j < ready.size(); ++j) plans[ready[j]].st = archive_->Commit(ms[j]);
  });

  const int64_t t_commit = MonotonicNs();
  // Record each copy; then release what was asked.
  ParallelFor(plans.size(), kFileParallelism, [&](size_t k) {
    Plan& p = plans[k];
    const std::string& h = handles[p.i];
    Status st = p.st;
    if (st.ok()) {
      (void)journal_->Archived(p.move, p.manifest->sum);
      // A write while the data was copied makes the copy useless.
      auto now = StatOf(sid_, h, token);
      if (!now.ok()) st = now.status();
      else if (now->size != p.stat.size || now->mtime_ns != p.stat.mtime_ns)
        st = FailedPrecondition("the file changed while it was archived", EAGAIN);
    }
    FileState s = p.state;
    bool unsynced = false;
    if (st.ok()) {
      s.Set(kExists | kArchived);
      s.Clear(kDirty | kLost | kReleased);
      s.archive_id = archive_->id();
      s.key = p.key;
      s.size = p.stat.size;
      s.mtime_ns = p.stat.mtime_ns;
      s.sum = p.manifest->sum;
      s.ver = p.state.ver + 1;
      st = PutState(sid_, h, token, s);
      // A migrate's release syncs the file once its region is on, before any
      // punch, and that makes this state durable too: one sync per file
      // fewer. A file whose old copy is dropped now needs it durable first
      // (a crash must not leave a state naming a removed copy).
      const bool drops_old = !p.state.key.empty() && p.state.key != p.key;
      if (st.ok() && (!then_release || drops_old)) {
        if (dm_sync_by_handle(sid_, H(h), h.size(), token) != 0) st = DmError("dm_sync_by_handle");
      } else if (st.ok()) {
        unsynced = true;
      }
      if (st.ok() && drops_old) (void)archive_->Remove(p.state.key);
    }
    if (!st.ok()) {
      (void)archive_->AbortObject(p.key, p.chunks);
      (void)archive_->Remove(p.key);
      (void)journal_->Abort(p.move, st.ToString(), JournalWait::kWritten);
      (*out)[p.i] = st;
      EndMove(h);
      return;
    }
    if (!then_release) {
      (void)journal_->End(p.move, JournalWait::kWritten);
      EndMove(h);
      return;
    }
    // A migrate's release is part of the same move (cancellable until the
    // punch), and its state is the one just recorded.
    std::lock_guard<std::mutex> lk(release_mu);
    to_release.push_back(ReleaseItem{p.i, std::move(s), p.move, unsynced});
  });
  const int64_t t_record = MonotonicNs();
  if (then_release) {
    std::vector<Status> got;
    ReleaseMany(token, handles, std::move(to_release), &got);
    for (size_t i = 0; i < handles.size(); ++i)
      if (!got[i].ok()) (*out)[i] = got[i];
  }
  auto secs = [](int64_t a, int64_t b) { return double(b - a) / 1e9; };
  spdlog::debug("hsm: {} of {} files: plan {:.3f} s, data {:.3f} s ({} tasks), commit {:.3f} s, record {:.3f} s, "
                "release {:.3f} s",
                then_release ? "migrate" : "archive", handles.size(), secs(t0, t_plan), secs(t_plan, t_data),
                tasks.size(), secs(t_data, t_commit), secs(t_commit, t_record), secs(t_record, MonotonicNs()));
  return FirstError(*out);
}

void Coordinator::ReleaseMany(uint64_t token, const std::vector<std::string>& handles, std::vector<ReleaseItem> items,
                              std::vector<Status>* out) {
  out->assign(handles.size(), Status::Ok());
  // Checks, region and sync per file. The region goes first: from then on a
  // read recalls, so it can never see the hole, and a write waits for our
  // rights; so the check for a change since the copy comes after it.
  std::vector<uint8_t> ready(items.size(), 0);  // not vector<bool>: written from several threads
  const int64_t t0 = MonotonicNs();
  ParallelFor(items.size(), kFileParallelism, [&](size_t k) {
    ReleaseItem& it = items[k];
    const std::string& h = handles[it.i];
    // Not going on to the punch: what the file's request gets.
    auto fail = [&](const Status& st) {
      // The copy stays recorded, durably, even when it is not released.
      if (it.state_unsynced && dm_sync_by_handle(sid_, H(h), h.size(), token) != 0)
        spdlog::warn("hsm: cannot sync the state of {}: {}", it.state.key, std::strerror(errno));
      (*out)[it.i] = st;
      if (it.move) (void)journal_->Abort(it.move, st.ToString(), JournalWait::kWritten);
      EndMove(h);
    };
    FileState& s = it.state;
    if (s.Has(kReleased)) return fail(Status::Ok());  // nothing to do
    if (!s.Has(kArchived)) return fail(FailedPrecondition("not archived: nothing to release to", EINVAL));
    if (s.Has(kDirty)) return fail(FailedPrecondition("dirty: written since its archive copy", EBUSY));
    if (s.Has(kLost)) return fail(FailedPrecondition("its archive copy is lost", EIO));
    if (s.Has(kNoRelease)) return fail(PermissionDenied("marked norelease", EPERM));
    if (!it.move) {
      // A release on its own: the copy must really be there, complete,
      // before any byte goes (a migrate has just committed and checked it).
      auto m = archive_->Stat(s.key);
      if (!m.ok()) return fail(m.status());
      if (m->sum != s.sum || m->size != s.size)
        return fail(DataLoss("archive copy does not match the file's state", EIO));
      auto move = journal_->Begin(MoveOp::kRelease, {reinterpret_cast<const uint8_t*>(h.data()), h.size()}, s.key,
                                  s.ver);
      if (!move.ok()) return fail(move.status());
      it.move = *move;
    }
    if (Cancelled(h)) return fail(Aborted("cancelled", ECANCELED));
    if (Status st = SetWholeRegion(sid_, h, token, kStub); !st.ok()) return fail(st);
    auto unset = [&](const Status& why) {
      if (Status e = SetWholeRegion(sid_, h, token, 0); !e.ok())
        spdlog::warn("hsm: cannot clear the region of {} after a refused release: {}", s.key, e.ToString());
      return fail(why);
    };
    auto fs = StatOf(sid_, h, token);
    if (!fs.ok()) return unset(fs.status());
    if (!Unchanged(s, *fs)) {
      // Written since the copy: dirty, so that even a region that could
      // not be cleared never recalls the old copy over the new bytes.
      FileState d = s;
      d.Set(kDirty);
      (void)PutState(sid_, h, token, d);
      return unset(FailedPrecondition("changed since its archive copy", EBUSY));
    }
    // The region must be durable before the punch: a crash must not leave
    // a hole that reads without a recall.
    if (dm_sync_by_handle(sid_, H(h), h.size(), token) != 0) return unset(DmError("dm_sync_by_handle"));
    ready[k] = 1;
  });

  // The punches, batched like the puts. A batch that fails is tried again
  // file by file, so one bad file does not fail the others; what failed
  // keeps its region (a read recalls whatever the punch did).
  std::vector<std::vector<size_t>> batches(1);
  for (size_t k = 0; k < items.size(); ++k) {
    if (!ready[k]) continue;
    if (batches.back().size() >= opts_.batch_files) batches.emplace_back();
    batches.back().push_back(k);
  }
  std::vector<Status> punched(items.size(), Status::Ok());
  auto punch = [&](const std::vector<size_t>& ks) -> Status {
    Task t;
    t.kind = TaskKind::kPunch;
    t.sid = sid_;
    t.token = token;
    for (size_t k : ks) t.items.push_back({handles[items[k].i], items[k].state.key, 0, 0, 0});
    auto r = RunTask(t, false);
    return !r.ok() ? r.status() : r->err ? FromErrno(r->err, r->what) : Status::Ok();
  };
  const int64_t t_region = MonotonicNs();
  ParallelFor(batches.size(), kFileParallelism, [&](size_t b) {
    if (batches[b].empty() || punch(batches[b]).ok()) return;
    for (size_t k : batches[b]) punched[k] = batches[b].size() > 1 ? punch({k}) : punch(batches[b]);
  });
  const int64_t t_punch = MonotonicNs();

  ParallelFor(items.size(), kFileParallelism, [&](size_t k) {
    if (!ready[k]) return;
    ReleaseItem& it = items[k];
    const std::string& h = handles[it.i];
    Status st = punched[k];
    if (st.ok()) {
      it.state.Set(kReleased);
      st = PutState(sid_, h, token, it.state);
      if (st.ok() && dm_sync_by_handle(sid_, H(h), h.size(), token) != 0) st = DmError("dm_sync_by_handle");
    }
    // Recovery marks a stub whose move is still in flight released, so
    // neither record needs to be durable before we answer.
    if (st.ok()) {
      (void)journal_->Released(it.move, JournalWait::kWritten);
      (void)journal_->End(it.move, JournalWait::kWritten);
    } else {
      (void)journal_->Abort(it.move, st.ToString(), JournalWait::kWritten);
      (*out)[it.i] = st;
    }
    EndMove(h);
  });
  spdlog::debug("hsm: release of {} files: region {:.3f} s, punch {:.3f} s ({} tasks), state {:.3f} s", items.size(),
                double(t_region - t0) / 1e9, double(t_punch - t_region) / 1e9, batches.size(),
                double(MonotonicNs() - t_punch) / 1e9);
}

Status Coordinator::Recall(uint64_t token, const std::string& h) {
  PDM_ASSIGN_OR_RETURN(FileState s, GetState(sid_, h, token));
  if (!s.Has(kReleased)) {
    if (!IsStub(sid_, h, token)) return Status::Ok();  // resident
    // A region from a release that did not finish. Dirty or whole, the file
    // holds its own bytes, newer than the copy's or equal to them: keep them.
    if (s.Has(kDirty) || !HasHole(sid_, h, token)) return SetWholeRegion(sid_, h, token, 0);
  }
  auto lost = [&](const Status& why) {
    spdlog::error("hsm: recall of {} failed, the file stays a stub and is marked lost: {}", s.key, why.ToString());
    s.Set(kLost);
    (void)PutState(sid_, h, token, s);
    return DataLoss("archive copy lost or damaged: " + why.message(), EIO);
  };
  if (s.key.empty()) return lost(NotFound("no archive copy recorded", ENOENT));
  auto m = archive_->Stat(s.key);
  if (!m.ok()) return lost(m.status());
  if (m->sum != s.sum) return lost(DataLoss("object checksum differs from the recorded one", EIO));
  // dm_write_invis keeps mtime, but each call restores the mtime it saw,
  // and chunk writers on several nodes can see each other's: afterwards the
  // file gets its own mtime back, or it would look changed since its copy.
  auto before = StatOf(sid_, h, token);
  const int64_t t0 = MonotonicNs();
  auto move = journal_->Begin(MoveOp::kRecall, {reinterpret_cast<const uint8_t*>(h.data()), h.size()}, s.key, s.ver);
  std::vector<std::future<Result<TaskResult>>> running;
  for (const ChunkRef& c : m->chunks) {
    Task t;
    t.kind = TaskKind::kGet;
    t.sid = sid_;
    t.token = token;
    t.items.push_back({h, s.key, c.index, c.offset, c.length});
    running.push_back(std::async(std::launch::async, [this, t] { return RunTask(t, true); }));
  }
  Status first = Status::Ok();
  for (auto& f : running) {
    auto r = f.get();
    if (first.ok() && !r.ok()) first = r.status();
    else if (first.ok() && r->err) first = FromErrno(r->err, r->what);
  }
  const int64_t t_data = MonotonicNs();
  if (!first.ok()) {
    // Chunks that did arrive go again: a file that could not be recalled is
    // a stub, all of it, as before.
    if (dm_punch_hole(sid_, H(h), h.size(), token, 0, 0) != 0)
      spdlog::warn("hsm: cannot re-punch {} after a failed recall: {}", s.key, std::strerror(errno));
    if (move.ok()) (void)journal_->Abort(*move, first.ToString());
    if (first.err() == EIO) return lost(first);
    return first;  // e.g. no live worker: the file stays a stub, not lost
  }
  if (auto after = StatOf(sid_, h, token); before.ok() && after.ok() && after->mtime_ns != before->mtime_ns) {
    dm_fileattr_t fa{};
    fa.fa_mtime = static_cast<time_t>(before->mtime_ns / 1000000000);
    if (dm_set_fileattr(sid_, H(h), h.size(), token, DM_AT_MTIME, &fa) != 0)
      spdlog::warn("hsm: cannot restore the mtime of {}: {}", s.key, std::strerror(errno));
  }
  if (dm_sync_by_handle(sid_, H(h), h.size(), token) != 0) return DmError("dm_sync_by_handle");
  const int64_t t_sync = MonotonicNs();
  PDM_RETURN_IF_ERROR(SetWholeRegion(sid_, h, token, 0));
  s.Clear(kReleased);
  PDM_RETURN_IF_ERROR(PutState(sid_, h, token, s));
  // A recall cut short leaves a stub, whose read recalls it again: its end
  // need not be durable.
  if (move.ok()) (void)journal_->End(*move, JournalWait::kWritten);
  spdlog::debug("hsm: recalled {} ({} chunks): data {:.3f} s, sync {:.3f} s, total {:.3f} s", s.key,
                m->chunks.size(), double(t_data - t0) / 1e9, double(t_sync - t_data) / 1e9,
                double(MonotonicNs() - t0) / 1e9);
  return Status::Ok();
}

Status Coordinator::Remove(uint64_t token, const std::string& h) {
  PDM_ASSIGN_OR_RETURN(FileState s, GetState(sid_, h, token));
  if (!s.Has(kArchived)) return Status::Ok();
  if (s.Has(kReleased) || IsStub(sid_, h, token))
    return FailedPrecondition("released: the archive holds its only copy (recall first)", EBUSY);
  if (Status st = archive_->Remove(s.key); !st.ok() && st.err() != ENOENT) return st;
  PDM_RETURN_IF_ERROR(SetWholeRegion(sid_, h, token, 0));
  FileState keep;
  keep.flags = s.flags & (kNoRelease | kNoArchive);
  return PutState(sid_, h, token, keep);
}

// ---------------------------------------------------------------------------
// Posting work

Status Coordinator::RefreshWorkers() {
  std::vector<dm_sessid_t> sids(1024);
  unsigned int n = 0;
  while (dm_getall_sessions(static_cast<unsigned int>(sids.size()), sids.data(), &n) != 0) {
    if (errno != E2BIG) return DmError("dm_getall_sessions");
    sids.resize(n);
  }
  std::map<int, WorkerSessions> found;
  const std::string prefix = std::string(kWorkerInfo) + " r";
  for (unsigned int i = 0; i < n; ++i) {
    char info[DM_SESSION_INFO_LEN + 1] = {};
    size_t len = 0;
    if (dm_query_session(sids[i], DM_SESSION_INFO_LEN, info, &len) != 0) continue;
    std::string s(info, strnlen(info, len));
    if (s.rfind(prefix, 0) != 0) continue;
    const int rank = std::atoi(s.c_str() + prefix.size());
    if (s.ends_with(" restore")) found[rank].restore = sids[i];
    else if (s.ends_with(" archive")) found[rank].archive = sids[i];
  }
  std::lock_guard<std::mutex> lk(mu_);
  workers_ = std::move(found);
  return Status::Ok();
}

Result<uint64_t> Coordinator::PickWorker(bool restore, int* rank) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      std::vector<std::pair<int, uint64_t>> live;
      for (const auto& [r, w] : workers_) {
        const uint64_t sid = restore ? w.restore : w.archive;
        if (sid && opts_.alive(r)) live.emplace_back(r, sid);
      }
      if (!live.empty()) {
        const auto& pick = live[rr_++ % live.size()];
        *rank = pick.first;
        return pick.second;
      }
    }
    PDM_RETURN_IF_ERROR(RefreshWorkers());
  }
  return Unavailable("no live HSM worker", EAGAIN);
}

Result<TaskResult> Coordinator::RunTask(Task t, bool restore) {
  for (int tries = 0; tries < 8; ++tries) {
    int rank = -1;
    PDM_ASSIGN_OR_RETURN(uint64_t wsid, PickWorker(restore, &rank));
    {
      std::lock_guard<std::mutex> lk(mu_);
      t.id = next_task_++;
    }
    const std::string msg = EncodeTask(t);
    if (dm_send_msg(wsid, DM_MSGTYPE_ASYNC, msg.size(), const_cast<char*>(msg.data())) != 0) {
      spdlog::warn("hsm: cannot post task to rank {}: {}", rank, std::strerror(errno));
      (void)RefreshWorkers();
      continue;
    }
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      if (auto it = results_.find(t.id); it != results_.end()) {
        TaskResult r = std::move(it->second);
        results_.erase(it);
        return r;
      }
      if (!opts_.alive(rank)) break;  // claim 17: the task goes to another node
      cv_.wait_for(lk, std::chrono::milliseconds(200));
    }
    spdlog::warn("hsm: worker rank {} died with task {}; posting it again", rank, t.id);
    lk.unlock();
    (void)RefreshWorkers();
  }
  return Unavailable("task failed on every worker tried", EIO);
}

}  // namespace pdm::hsm
