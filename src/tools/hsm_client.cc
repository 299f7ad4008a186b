#include "tools/hsm_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/posix.h"

namespace pdm::tools {

namespace {

dm_attrname_t StateAttrName() {
  dm_attrname_t n;
  std::memset(&n, 0, sizeof n);
  std::memcpy(n.an_chars, hsm::kStateAttrName.data(), hsm::kStateAttrName.size());
  return n;
}

// The one place this file turns a DMAPI errno into a Status.
Status DmError(const char* call, const std::string& what, int err) {
  return FromErrno(err, std::string(call) + "(" + what + "): " + std::strerror(err));
}

}  // namespace

bool OpReached(hsm::Op op, const hsm::FileState& s) {
  switch (op) {
    case hsm::Op::kMigrate:
    case hsm::Op::kRelease:
      return s.Has(hsm::kReleased);
    case hsm::Op::kArchive:
      return s.Has(hsm::kArchived) && !s.Has(hsm::kDirty);
    case hsm::Op::kRecall:
      return !s.Has(hsm::kReleased);
    case hsm::Op::kRemove:
      return !s.Has(hsm::kArchived);
    case hsm::Op::kCancel:
      return true;  // whatever state the cancelled move left is a valid one
  }
  return false;
}

std::string_view OpGoal(hsm::Op op) {
  switch (op) {
    case hsm::Op::kMigrate:
    case hsm::Op::kRelease:
      return "released";
    case hsm::Op::kArchive:
      return "archived and not dirty";
    case hsm::Op::kRecall:
      return "not released";
    case hsm::Op::kRemove:
      return "not archived";
    case hsm::Op::kCancel:
      return "no move in flight";
  }
  return "?";
}

std::string DmapiSocketPath() {
  const char* env = std::getenv("DMAPI_SOCKET");
  return env && *env ? env : "/run/pdm/dmapi.sock";
}

Result<std::unique_ptr<HsmClient>> HsmClient::Open(std::string_view tool, bool need_coordinator) {
  char* version = nullptr;
  if (dm_init_service(&version) != 0) {
    const int err = errno;
    if (err == EPERM) return PermissionDenied("the DMAPI is for root only (dm_init_service: EPERM)");
    return Unavailable("cannot reach the pdm node agent at " + DmapiSocketPath() + " (" + std::strerror(err) +
                           "): is pdmd running on this node? (set DMAPI_SOCKET)",
                       err);
  }
  std::unique_ptr<HsmClient> c(new HsmClient());
  const std::string info = std::string(tool) + " pid " + std::to_string(::getpid());
  if (dm_create_session(DM_NO_SESSION, info.c_str(), &c->sid_) != 0) {
    const int err = errno;
    c->sid_ = DM_NO_SESSION;
    return Unavailable("dm_create_session: " + std::string(std::strerror(err)), err);
  }
  if (need_coordinator) {
    auto co = hsm::FindCoordinator();
    if (!co.ok()) {
      if (co.status().code() == Code::kNotFound) return FailedPrecondition(kNoCoordinatorMessage, ENOENT);
      return Unavailable("looking for the HSM coordinator: " + co.status().ToString(), co.status().err());
    }
    c->coordinator_ = *co;
  }
  return c;
}

HsmClient::~HsmClient() {
  // A session left behind would be listed by every node until an admin
  // destroys it, so a failure here is worth a line.
  if (sid_ != DM_NO_SESSION && dm_destroy_session(sid_) != 0)
    std::fprintf(stderr, "dm_destroy_session(%llu): %s\n", static_cast<unsigned long long>(sid_),
                 std::strerror(errno));
}

Result<std::string> HsmClient::RegularFileHandle(const std::string& path, uint64_t* size) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return PosixError("open", path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return PosixError("fstat", path, errno);
  if (!S_ISREG(st.st_mode))
    return InvalidArgument(path + ": not a regular file" + (S_ISLNK(st.st_mode) ? " (a symlink, not followed)" : ""));
  if (size) *size = static_cast<uint64_t>(st.st_size);
  void* hanp = nullptr;
  size_t hlen = 0;
  if (dm_fd_to_handle(fd.get(), &hanp, &hlen) != 0) return DmError("dm_fd_to_handle", path, errno);
  std::string h(static_cast<const char*>(hanp), hlen);
  dm_handle_free(hanp, hlen);
  return h;
}

Result<hsm::FileState> HsmClient::State(const std::string& handle) const {
  dm_attrname_t name = StateAttrName();
  // The attribute is at most dm::kMaxAttrSize (2048) bytes; a bigger buffer
  // costs nothing and E2BIG is still handled for a future larger value.
  std::vector<uint8_t> buf(4096);
  for (;;) {
    size_t rlen = 0;
    if (dm_get_dmattr(sid_, const_cast<char*>(handle.data()), handle.size(), DM_NO_TOKEN, &name, buf.size(),
                      buf.data(), &rlen) == 0) {
      return hsm::Decode(std::span<const uint8_t>(buf.data(), rlen));
    }
    const int err = errno;
    if (err == ENOENT) return hsm::FileState{};  // never touched by the HSM
    if (err == E2BIG && rlen > buf.size()) {
      buf.resize(rlen);
      continue;
    }
    return DmError("dm_get_dmattr", "pdmhsm", err);
  }
}

Status HsmClient::Send(hsm::Op op, const std::vector<std::string>& handles) const {
  if (handles.size() > hsm::kMaxFilesPerRequest)
    return InvalidArgument("a request carries at most " + std::to_string(hsm::kMaxFilesPerRequest) + " files");
  hsm::Request r;
  r.op = op;
  r.handles = handles;
  std::string msg = hsm::EncodeRequest(r);
  if (dm_send_msg(coordinator_, DM_MSGTYPE_SYNC, msg.size(), msg.data()) != 0) {
    const int err = errno;
    return FromErrno(err, std::string(hsm::OpName(op)) + " request: " + std::strerror(err));
  }
  return Status::Ok();
}

std::vector<HsmClient::Outcome> HsmClient::Run(hsm::Op op, const std::vector<std::string>& paths) const {
  std::vector<Outcome> out(paths.size());
  std::vector<std::string> handles;
  std::vector<size_t> index;  // handles[i] belongs to paths[index[i]]
  for (size_t i = 0; i < paths.size(); ++i) {
    auto h = RegularFileHandle(paths[i], &out[i].size);
    if (!h.ok()) {
      out[i].error = h.status().ToString();
      continue;
    }
    handles.push_back(std::move(*h));
    index.push_back(i);
  }
  if (handles.empty()) return out;
  const Status sent = Send(op, handles);
  for (size_t k = 0; k < handles.size(); ++k) {
    Outcome& o = out[index[k]];
    auto s = State(handles[k]);
    if (!s.ok()) {
      o.error = paths[index[k]] + ": reading its HSM state: " + s.status().ToString();
      continue;
    }
    o.state = *s;
    o.ok = OpReached(op, o.state);
    if (!o.ok) {
      const std::string flags = hsm::FlagsString(o.state.flags);
      o.error = paths[index[k]] + ": " + std::string(hsm::OpName(op)) + " failed: expected " +
                std::string(OpGoal(op)) + ", state: " + (flags.empty() ? "none" : flags);
      if (!sent.ok()) o.error += "; the coordinator said: " + sent.message();
    }
  }
  return out;
}

}  // namespace pdm::tools
