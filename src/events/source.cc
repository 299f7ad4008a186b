#include "events/source.h"

#include <dmapi.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>

#include "dm/attrs.h"
#include "dm/handle.h"

namespace pdm::events {

namespace {

bool Overlaps(const dm::Region& r, uint64_t off, uint64_t len) {
  const uint64_t end = len == 0 ? UINT64_MAX : off + len;
  const uint64_t rend = r.size == 0 ? UINT64_MAX : r.offset + r.size;
  return r.offset < end && off < rend;
}

// dm_data_event_t followed by the file's handle (its vardata).
std::vector<uint8_t> DataEventPayload(const dm::Handle& h, uint64_t off, uint64_t len) {
  std::span<const uint8_t> hb = h.bytes();
  std::vector<uint8_t> out(sizeof(dm_data_event_t) + hb.size());
  dm_data_event_t de{};
  de.de_handle.vd_offset = static_cast<int>(sizeof(dm_data_event_t));
  de.de_handle.vd_length = static_cast<unsigned>(hb.size());
  de.de_offset = static_cast<dm_off_t>(off);
  de.de_length = len;
  std::memcpy(out.data(), &de, sizeof(de));
  std::memcpy(out.data() + sizeof(de), hb.data(), hb.size());
  return out;
}

}  // namespace

EventSource::EventSource(Options opts, Node* node) : opts_(std::move(opts)), node_(node) {}

EventSource::~EventSource() { Stop(); }

Status EventSource::Start() {
  view_fd_.reset(::open(opts_.view.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!view_fd_.valid()) return PosixError("open", opts_.view, errno);
  PDM_ASSIGN_OR_RETURN(fsid_, dm::FsidOfFd(view_fd_.get()));
  PDM_ASSIGN_OR_RETURN(FanotifyGroup g, FanotifyGroup::Create());
  group_ = std::make_unique<FanotifyGroup>(std::move(g));
  PDM_RETURN_IF_ERROR(group_->MarkMount(opts_.view, FAN_PRE_ACCESS));
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

void EventSource::Stop() {
  if (stopping_.exchange(true)) return;
  if (thread_.joinable()) thread_.join();
  // Closing the group answers what is still pending with FAN_ALLOW: the
  // supervisor that keeps the group across an agent restart is future work
  // (see docs/architecture.md).
  std::lock_guard<std::mutex> lk(group_mu_);
  group_.reset();
}

void EventSource::Rewatch(const std::string& handle_bytes) {
  if (!group_) return;
  auto h = dm::Handle::Parse({reinterpret_cast<const uint8_t*>(handle_bytes.data()), handle_bytes.size()});
  if (!h.ok() || h->fsid() != fsid_) return;
  auto fd = dm::Open(*h, view_fd_.get(), O_RDONLY | O_CLOEXEC);
  if (!fd.ok()) return;  // not here (yet): nothing is ignored for it either
  if (::fanotify_mark(group_->fd(), FAN_MARK_REMOVE | FAN_MARK_IGNORE_SURV, FAN_PRE_ACCESS, fd->get(), nullptr) !=
          0 &&
      errno != ENOENT)
    spdlog::warn("events: cannot drop the ignore mark of {}: {}", h->ToHex(), std::strerror(errno));
}

void EventSource::Run() {
  while (!stopping_.load()) {
    auto evs = group_->Read(std::chrono::milliseconds(200));
    if (!evs.ok()) {
      spdlog::error("events: reading the fanotify group failed: {}", evs.status().ToString());
      ::usleep(100000);
      continue;
    }
    for (auto& e : *evs) OnEvent(std::make_shared<FanotifyEvent>(std::move(e)));
  }
}

void EventSource::Answer(const FanotifyEvent& ev, bool allow, int err) {
  std::lock_guard<std::mutex> lk(group_mu_);
  if (!group_) return;  // stopped: closing the group answered everything
  Status st = allow ? group_->Allow(ev) : group_->Deny(ev, err);
  // The kernel takes only some errnos in a denial; fall back to EIO, which
  // it always takes, rather than leave the access hanging.
  if (!st.ok() && !allow && err != EIO) st = group_->Deny(ev, EIO);
  if (!st.ok()) spdlog::error("events: cannot answer an access: {}", st.ToString());
}

void EventSource::OnEvent(std::shared_ptr<FanotifyEvent> ev) {
  if (!ev->NeedsResponse()) return;
  if (ev->pid == ::getpid() || (opts_.is_dm_app && opts_.is_dm_app(ev->pid))) return Answer(*ev, true, 0);
  auto regions = dm::GetRegions(ev->fd.get());
  if (!regions.ok()) {
    // Damaged region records: we cannot tell what is missing, so the access
    // fails rather than risk returning a hole as data.
    spdlog::error("events: managed regions of a file unreadable: {}", regions.status().ToString());
    return Answer(*ev, false, EIO);
  }
  if (regions->empty()) {
    // Unmanaged: never ask again for this inode while it stays cached. The
    // mark goes on first and the regions are read again after: a
    // dm_set_region + Rewatch that ran in between would otherwise leave a
    // managed file ignored here.
    if (::fanotify_mark(group_->fd(), FAN_MARK_ADD | FAN_MARK_IGNORE_SURV | FAN_MARK_EVICTABLE, FAN_PRE_ACCESS,
                        ev->fd.get(), nullptr) != 0)
      spdlog::debug("events: ignore mark refused: {}", std::strerror(errno));
    regions = dm::GetRegions(ev->fd.get());
    if (!regions.ok()) return Answer(*ev, false, EIO);
    if (regions->empty()) return Answer(*ev, true, 0);
    ::fanotify_mark(group_->fd(), FAN_MARK_REMOVE | FAN_MARK_IGNORE_SURV, FAN_PRE_ACCESS, ev->fd.get(), nullptr);
  }
  const uint64_t off = ev->range ? ev->range->offset : 0;
  const uint64_t len = ev->range ? ev->range->count : 0;
  uint32_t flags = 0;
  for (const auto& r : *regions)
    if (Overlaps(r, off, len)) flags |= r.flags;
  if (flags == 0) return Answer(*ev, true, 0);
  const unsigned type = (flags & dm::kRegionRead)    ? DM_EVENT_READ
                        : (flags & dm::kRegionWrite) ? DM_EVENT_WRITE
                                                     : DM_EVENT_TRUNCATE;
  uint64_t enabled = node_->GetFsEvents(fsid_);
  if (auto fe = dm::GetEventList(ev->fd.get()); fe.ok()) enabled |= *fe;
  if (!(enabled & (uint64_t(1) << type))) return Answer(*ev, true, 0);
  auto h = dm::FdToHandle(ev->fd.get());
  if (!h.ok()) return Answer(*ev, false, EIO);
  RaiseSpec spec;
  spec.fsid = fsid_;
  spec.type = type;
  spec.sync = true;
  spec.payload = DataEventPayload(*h, off, len);
  node_->RaiseAsync(spec, [this, ev](Result<RaiseOutcome> r) {
    if (!r.ok()) return Answer(*ev, false, r.status().err() ? r.status().err() : EIO);
    if (!r->delivered) {
      spdlog::warn("events: access to a managed range and no session holds the disposition: EIO");
      return Answer(*ev, false, EIO);
    }
    if (r->response == kRespContinue) return Answer(*ev, true, 0);
    Answer(*ev, false, r->err ? r->err : EIO);
  });
}

}  // namespace pdm::events
