#include "hsm/worker.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <vector>

#include "hsm/dm_util.h"

namespace pdm::hsm {

namespace {
// One dm_read_invis / dm_write_invis. Small enough that the slice is still
// in the CPU cache when it is hashed and copied again (8 MiB slices from 16
// threads spilled it: the second copy then cost more than the disk), large
// enough that the per-call DMAPI cost stays small.
// The same size serves recalls. Measured (1 GiB, 8 threads, pread then
// pwrite per slice, ext4 on a loop device, 2 cores): 1 MiB slices cost 4.7
// to 7.6 s of CPU, 256 KiB slices 0.7 to 0.9 s, in the kernel's two copies;
// the extra token checks (one per dm_write_invis) are far cheaper than that.
constexpr size_t kIoBytes = 256u << 10;
}

Worker::Worker(Options opts, Archive* archive) : opts_(opts), archive_(archive) {}

Worker::~Worker() {
  // The threads block in dm_get_events for the life of the agent; pdmd ends
  // with _exit, and the node's Stop wakes them with an error first.
  for (auto& t : threads_) t.detach();
}

Status Worker::Start() {
  for (const char* queue : {"restore", "archive"}) {
    const std::string info = std::string(kWorkerInfo) + " r" + std::to_string(opts_.rank) + " " + queue;
    dm_sessid_t sid;
    if (dm_create_session(DM_NO_SESSION, const_cast<char*>(info.c_str()), &sid) != 0)
      return DmError("dm_create_session(worker)");
    sessions_.push_back(sid);
  }
  for (int i = 0; i < opts_.restore_threads; ++i) threads_.emplace_back([this] { Loop(sessions_[0]); });
  for (int i = 0; i < opts_.archive_threads; ++i) threads_.emplace_back([this] { Loop(sessions_[1]); });
  return Status::Ok();
}

void Worker::Loop(uint64_t sid) {
  std::vector<uint8_t> buf(128 * 1024);
  for (;;) {
    size_t rlen = 0;
    if (dm_get_events(sid, 1, DM_EV_WAIT, buf.size(), buf.data(), &rlen) != 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      spdlog::info("hsm worker r{}: session {} ends ({})", opts_.rank, sid, std::strerror(errno));
      return;
    }
    auto* m = reinterpret_cast<dm_eventmsg_t*>(buf.data());
    if (m->ev_type != DM_EVENT_USER) continue;
    const char* p = DM_GET_VALUE(m, ev_data, const char*);
    const std::string_view text(p, DM_GET_LEN(m, ev_data));
    auto task = DecodeTask(text);
    if (!task.ok()) {
      spdlog::warn("hsm worker r{}: dropped a message that is no task: {}", opts_.rank, task.status().ToString());
      continue;
    }
    TaskResult r = Execute(*task);
    const std::string out = EncodeResult(r);
    if (dm_send_msg(task->sid, DM_MSGTYPE_ASYNC, out.size(), const_cast<char*>(out.data())) != 0)
      spdlog::warn("hsm worker r{}: cannot report task {}: {}", opts_.rank, r.id, std::strerror(errno));
  }
}

Status Worker::CheckCapability(const Task& t) {
  // Claims 4-6: only a holder of the coordinator's session id and of a token
  // outstanding on it may move data. The token is checked at its session
  // node (DMAPI calls on this node ask it), and the session must be the
  // coordinator's.
  char info[DM_SESSION_INFO_LEN + 1] = {};
  size_t len = 0;
  if (dm_query_session(t.sid, DM_SESSION_INFO_LEN, info, &len) != 0) return DmError("dm_query_session");
  if (std::string_view(info, strnlen(info, len)) != kCoordinatorInfo)
    return PermissionDenied("task from a session that is not the HSM coordinator", EPERM);
  size_t need = 0;
  if (dm_find_eventmsg(t.sid, t.token, 0, nullptr, &need) != 0 && errno != E2BIG)
    return FromErrno(errno, "the task's token is not outstanding on the coordinator session");
  return Status::Ok();
}

Result<ObjectManifest> Worker::Manifest(const std::string& key) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto it = manifests_.find(key); it != manifests_.end()) return it->second;
  }
  PDM_ASSIGN_OR_RETURN(ObjectManifest m, archive_->Stat(key));
  std::lock_guard<std::mutex> lk(mu_);
  if (manifests_.size() > 4096) manifests_.clear();
  manifests_[key] = m;
  return m;
}

Result<ChunkRef> Worker::Put(uint64_t sid, uint64_t token, const TaskItem& it, Durability d,
                             std::vector<uint8_t>* buf) {
  // Slice by slice from the file into the archive: reading and the archive's
  // write-back overlap, and memory stays at one slice per thread.
  PDM_ASSIGN_OR_RETURN(std::unique_ptr<ChunkSink> sink, archive_->OpenChunk(it.key, it.index, it.offset, it.length));
  buf->resize(static_cast<size_t>(std::min<uint64_t>(kIoBytes, it.length)));
  for (uint64_t done = 0; done < it.length;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf->size(), it.length - done));
    const dm_ssize_t got = dm_read_invis(sid, H(it.handle), it.handle.size(), token, it.offset + done, n, buf->data());
    if (got < 0) return DmError("dm_read_invis");
    if (got == 0) return FailedPrecondition("the file shrank while it was archived", EAGAIN);
    PDM_RETURN_IF_ERROR(sink->Write({buf->data(), static_cast<size_t>(got)}));
    done += static_cast<uint64_t>(got);
  }
  return sink->Finish(d);
}

TaskResult Worker::Execute(const Task& t) {
  TaskResult r;
  r.id = t.id;
  auto fail = [&](const Status& st) {
    r.err = st.err() ? st.err() : EIO;
    r.what = st.ToString();
    r.chunks.clear();
    spdlog::warn("hsm worker r{}: task {} failed: {}", opts_.rank, t.id, r.what);
    return r;
  };
  if (Status st = CheckCapability(t); !st.ok()) return fail(st);
  const dm_sessid_t sid = t.sid;
  const dm_token_t tok = t.token;
  std::vector<uint8_t> data;
  for (const TaskItem& it : t.items) {
    void* h = H(it.handle);
    const size_t hl = it.handle.size();
    switch (t.kind) {
      case TaskKind::kPut: {
        // A batch of small files is one durable flush (and one HDF5
        // container); a single chunk is durable on its own.
        const Durability d = t.items.size() > 1 ? Durability::kAtFlush : Durability::kNow;
        auto ref = Put(sid, tok, it, d, &data);
        if (!ref.ok()) return fail(ref.status());
        r.chunks.push_back(*ref);
        break;
      }
      case TaskKind::kGet: {
        auto m = Manifest(it.key);
        if (!m.ok()) return fail(m.status());
        if (it.index >= m->chunks.size()) return fail(DataLoss("chunk index beyond the object", EIO));
        // Each slice goes into the file as soon as it is read. The file is
        // still a stub (its region makes every access wait for this recall),
        // and a chunk that fails verification fails the recall, which punches
        // all of it out again: a reader never sees these bytes unverified.
        data.resize(static_cast<size_t>(std::min<uint64_t>(kIoBytes, m->chunks[it.index].length)));
        Status st = archive_->StreamChunk(*m, it.index, data, [&](uint64_t off, std::span<const uint8_t> bytes) {
          for (size_t done = 0; done < bytes.size();) {
            const dm_ssize_t put = dm_write_invis(sid, h, hl, tok, 0, off + done, bytes.size() - done,
                                                  const_cast<uint8_t*>(bytes.data() + done));
            if (put <= 0) return DmError("dm_write_invis");
            done += static_cast<size_t>(put);
          }
          return Status::Ok();
        });
        if (!st.ok()) {
          std::lock_guard<std::mutex> lk(mu_);
          manifests_.erase(it.key);
          return fail(st);
        }
        break;
      }
      case TaskKind::kPunch:
        if (dm_punch_hole(sid, h, hl, tok, 0, 0) != 0) return fail(DmError("dm_punch_hole"));
        break;
    }
  }
  if (t.kind == TaskKind::kPut && t.items.size() > 1)
    if (Status st = archive_->Flush(); !st.ok()) return fail(st);
  return r;
}

}  // namespace pdm::hsm
