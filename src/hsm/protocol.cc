#include "hsm/protocol.h"

#include <dmapi.h>

#include <nlohmann/json.hpp>

namespace pdm::hsm {

namespace {

using nlohmann::json;

std::string Hex(std::string_view b) {
  static const char* d = "0123456789abcdef";
  std::string out;
  out.reserve(b.size() * 2);
  for (unsigned char c : b) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

Result<std::string> Unhex(std::string_view h) {
  if (h.size() % 2) return InvalidArgument("odd hex length");
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out(h.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = v(h[2 * i]), lo = v(h[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("bad hex digit");
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

// Every decoder: a JSON object of ours, or EINVAL; never a guess.
Result<json> Parse(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("pdm_hsm", 0) != 1)
    return InvalidArgument("not an HSM message", EINVAL);
  return j;
}

constexpr const char* kOpNames[] = {"archive", "release", "migrate", "recall", "remove", "cancel"};
constexpr const char* kTaskNames[] = {"put", "get", "punch"};

}  // namespace

std::string_view OpName(Op op) { return kOpNames[static_cast<int>(op)]; }

Result<Op> ParseOp(std::string_view name) {
  for (int i = 0; i < 6; ++i)
    if (name == kOpNames[i]) return static_cast<Op>(i);
  return InvalidArgument("unknown HSM operation: " + std::string(name));
}

std::string EncodeRequest(const Request& r) {
  json j = {{"pdm_hsm", 1}, {"request", OpName(r.op)}};
  json files = json::array();
  for (const auto& h : r.handles) files.push_back(Hex(h));
  j["files"] = std::move(files);
  return j.dump();
}

Result<Request> DecodeRequest(std::string_view text) {
  PDM_ASSIGN_OR_RETURN(json j, Parse(text));
  Request r;
  if (!j.contains("request") || !j["request"].is_string()) return InvalidArgument("request without an operation");
  PDM_ASSIGN_OR_RETURN(r.op, ParseOp(j["request"].get<std::string>()));
  if (!j.contains("files") || !j["files"].is_array() || j["files"].size() > kMaxFilesPerRequest)
    return InvalidArgument("request without a valid file list");
  for (const auto& f : j["files"]) {
    if (!f.is_string()) return InvalidArgument("file handle is not a string");
    PDM_ASSIGN_OR_RETURN(std::string h, Unhex(f.get<std::string>()));
    r.handles.push_back(std::move(h));
  }
  return r;
}

Result<uint64_t> FindCoordinator() {
  // Ask for the session list in growing buffers; it is small in practice.
  std::vector<dm_sessid_t> sids(64);
  unsigned int n = 0;
  while (dm_getall_sessions(static_cast<unsigned int>(sids.size()), sids.data(), &n) != 0) {
    if (errno != E2BIG) return FromErrno(errno, "dm_getall_sessions");
    sids.resize(n);
  }
  for (unsigned int i = 0; i < n; ++i) {
    char info[DM_SESSION_INFO_LEN + 1] = {};
    size_t len = 0;
    if (dm_query_session(sids[i], DM_SESSION_INFO_LEN, info, &len) != 0) continue;
    if (std::string_view(info, strnlen(info, len)) == kCoordinatorInfo) return static_cast<uint64_t>(sids[i]);
  }
  return NotFound("no HSM coordinator session: is pdmd running with --archive?", ENOENT);
}

std::string EncodeTask(const Task& t) {
  json items = json::array();
  for (const auto& i : t.items)
    items.push_back({{"h", Hex(i.handle)}, {"key", i.key}, {"i", i.index}, {"off", i.offset}, {"len", i.length}});
  return json{{"pdm_hsm", 1},
              {"task", t.id},
              {"kind", kTaskNames[static_cast<int>(t.kind)]},
              {"sid", t.sid},
              {"token", t.token},
              {"items", std::move(items)}}
      .dump();
}

Result<Task> DecodeTask(std::string_view text) {
  PDM_ASSIGN_OR_RETURN(json j, Parse(text));
  Task t;
  try {
    t.id = j.at("task").get<uint64_t>();
    const std::string kind = j.at("kind").get<std::string>();
    bool known = false;
    for (int i = 0; i < 3; ++i)
      if (kind == kTaskNames[i]) {
        t.kind = static_cast<TaskKind>(i);
        known = true;
      }
    if (!known) return InvalidArgument("unknown task kind " + kind);
    t.sid = j.at("sid").get<uint64_t>();
    t.token = j.at("token").get<uint64_t>();
    for (const auto& it : j.at("items")) {
      TaskItem i;
      PDM_ASSIGN_OR_RETURN(i.handle, Unhex(it.at("h").get<std::string>()));
      i.key = it.at("key").get<std::string>();
      i.index = it.at("i").get<uint32_t>();
      i.offset = it.at("off").get<uint64_t>();
      i.length = it.at("len").get<uint64_t>();
      t.items.push_back(std::move(i));
    }
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("malformed task: ") + e.what());
  }
  return t;
}

std::string EncodeResult(const TaskResult& r) {
  json chunks = json::array();
  for (const auto& c : r.chunks) chunks.push_back(ToJson(c));
  return json{{"pdm_hsm", 1}, {"result", r.id}, {"err", r.err}, {"what", r.what}, {"chunks", std::move(chunks)}}
      .dump();
}

Result<TaskResult> DecodeResult(std::string_view text) {
  PDM_ASSIGN_OR_RETURN(json j, Parse(text));
  TaskResult r;
  try {
    r.id = j.at("result").get<uint64_t>();
    r.err = j.at("err").get<int>();
    r.what = j.value("what", "");
    for (const auto& c : j.at("chunks")) {
      PDM_ASSIGN_OR_RETURN(ChunkRef ref, ChunkRefFromJson(c));
      r.chunks.push_back(std::move(ref));
    }
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("malformed task result: ") + e.what());
  }
  return r;
}

MessageKind KindOf(std::string_view text) {
  auto j = Parse(text);
  if (!j.ok()) return MessageKind::kUnknown;
  if (j->contains("request")) return MessageKind::kRequest;
  if (j->contains("task")) return MessageKind::kTask;
  if (j->contains("result")) return MessageKind::kResult;
  return MessageKind::kUnknown;
}

}  // namespace pdm::hsm
