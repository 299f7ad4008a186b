#include "hsm/archive.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/posix.h"
#include "hsm/hdf5_archive.h"
#include "hsm/posix_archive.h"

namespace pdm::hsm {
namespace {

using nlohmann::json;

constexpr size_t kMaxOrigin = 4096;

bool KeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

Status BadManifest(const ObjectManifest& m, const std::string& why) {
  return InvalidArgument("manifest of '" + m.key + "': " + why);
}

// The tiling rule shared by BuildManifest and ValidateManifest; chunks sorted.
Status CheckTiling(const ObjectManifest& m) {
  PDM_RETURN_IF_ERROR(ValidateKey(m.key));
  if (m.chunk_size == 0) return BadManifest(m, "chunk_size 0");
  if (m.origin.size() > kMaxOrigin) return BadManifest(m, "origin longer than 4096 bytes");
  for (char c : m.origin)
    if (c < ' ' || c > '~') return BadManifest(m, "origin not printable ASCII");
  uint64_t want = ChunkCount(m.size, m.chunk_size);
  if (m.chunks.size() != want)
    return BadManifest(m, std::to_string(m.chunks.size()) + " chunks, size needs " + std::to_string(want));
  for (size_t i = 0; i < m.chunks.size(); ++i) {
    const ChunkRef& c = m.chunks[i];
    uint64_t off = uint64_t(i) * m.chunk_size;
    uint64_t len = std::min(m.chunk_size, m.size - off);
    if (c.index != i || c.offset != off || c.length != len)
      return BadManifest(m, "chunk " + std::to_string(i) + " is index " + std::to_string(c.index) + " [" +
                                std::to_string(c.offset) + ", +" + std::to_string(c.length) + "), want [" +
                                std::to_string(off) + ", +" + std::to_string(len) + ")");
    if (c.where.empty() || c.where.size() > 4096) return BadManifest(m, "chunk " + std::to_string(i) + " has no location");
  }
  return Status::Ok();
}

std::vector<Checksum128> Sums(const std::vector<ChunkRef>& chunks) {
  std::vector<Checksum128> sums;
  sums.reserve(chunks.size());
  for (const auto& c : chunks) sums.push_back(c.sum);
  return sums;
}

Status Corrupt(const std::string& why) { return DataLoss("archive manifest: " + why); }

}  // namespace

std::string MakeObjectKey(uint64_t fsid, uint64_t ino, uint32_t igen, uint64_t ver) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "/%" PRIu64 ".%" PRIu32 "/v%" PRIu64, fsid, ino, igen, ver);
  return buf;
}

Status ValidateKey(std::string_view key) {
  auto bad = [&](const char* why) {
    return InvalidArgument("object key '" + std::string(key.substr(0, 64)) + "': " + why);
  };
  if (key.empty() || key.size() > kMaxKeySize) return bad("empty or longer than 512 bytes");
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string_view::npos) end = key.size();
    std::string_view comp = key.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == "..") return bad("empty, '.' or '..' component");
    for (char c : comp)
      if (!KeyChar(c)) return bad("character outside [A-Za-z0-9._-]");
    if (EndsWith(comp, ".part") || EndsWith(comp, ".json") || EndsWith(comp, ".tmp") || EndsWith(comp, ".data"))
      return bad("component ends in a reserved suffix");
    start = end + 1;
  }
  return Status::Ok();
}

uint32_t ChunkCount(uint64_t size, uint64_t chunk_size) {
  if (chunk_size == 0 || size == 0) return 0;
  uint64_t n = size / chunk_size + (size % chunk_size != 0);
  return n > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(n);
}

Result<ObjectManifest> BuildManifest(std::string key, uint64_t size, uint64_t chunk_size,
                                     std::vector<ChunkRef> chunks, std::string origin) {
  ObjectManifest m;
  m.key = std::move(key);
  m.size = size;
  m.chunk_size = chunk_size;
  m.chunks = std::move(chunks);
  // Free text from the caller (often a path): printable ASCII only, so the
  // manifest's JSON round-trips byte for byte.
  for (char& c : origin)
    if (c < ' ' || c > '~') c = '?';
  m.origin = std::move(origin);
  std::stable_sort(m.chunks.begin(), m.chunks.end(),
                   [](const ChunkRef& a, const ChunkRef& b) { return a.index < b.index; });
  PDM_RETURN_IF_ERROR(CheckTiling(m));
  m.sum = ObjectChecksum(Sums(m.chunks));
  return m;
}

Status ValidateManifest(const ObjectManifest& m) {
  PDM_RETURN_IF_ERROR(CheckTiling(m));
  if (ObjectChecksum(Sums(m.chunks)) != m.sum) return BadManifest(m, "object checksum does not match its chunks");
  return Status::Ok();
}

json ToJson(const ChunkRef& c) {
  return json{{"i", c.index}, {"off", c.offset}, {"len", c.length}, {"where", c.where}, {"sum", c.sum.Hex()}};
}

Result<ChunkRef> ChunkRefFromJson(const json& j) {
  if (!j.is_object()) return Corrupt("chunk is not an object");
  ChunkRef c;
  auto i = j.find("i"), off = j.find("off"), len = j.find("len"), where = j.find("where"), sum = j.find("sum");
  if (i == j.end() || !i->is_number_unsigned() || i->get<uint64_t>() > UINT32_MAX) return Corrupt("chunk index");
  if (off == j.end() || !off->is_number_unsigned()) return Corrupt("chunk offset");
  if (len == j.end() || !len->is_number_unsigned()) return Corrupt("chunk length");
  if (where == j.end() || !where->is_string()) return Corrupt("chunk location");
  if (sum == j.end() || !sum->is_string()) return Corrupt("chunk checksum");
  c.index = static_cast<uint32_t>(i->get<uint64_t>());
  c.offset = off->get<uint64_t>();
  c.length = len->get<uint64_t>();
  c.where = where->get<std::string>();
  auto parsed = Checksum128::FromHex(sum->get_ref<const std::string&>());
  if (!parsed.ok()) return Corrupt("chunk checksum not 32 hex digits");
  c.sum = *parsed;
  return c;
}

std::string EncodeManifest(const ObjectManifest& m) {
  json chunks = json::array();
  for (const auto& c : m.chunks) chunks.push_back(ToJson(c));
  json j{{"v", 1},           {"key", m.key},    {"size", m.size},     {"chunk_size", m.chunk_size},
         {"sum", m.sum.Hex()}, {"origin", m.origin}, {"chunks", std::move(chunks)}};
  // One chunk per line keeps big manifests readable with less/grep.
  std::string out = j.dump(1, ' ', false, json::error_handler_t::replace);
  out += '\n';
  return out;
}

Result<ObjectManifest> DecodeManifest(std::string_view text) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt("not a JSON object");
  auto v = j.find("v");
  if (v == j.end() || !v->is_number_unsigned() || v->get<uint64_t>() != 1) return Corrupt("missing or unsupported version");
  ObjectManifest m;
  auto key = j.find("key"), size = j.find("size"), cs = j.find("chunk_size"), sum = j.find("sum"),
       origin = j.find("origin"), chunks = j.find("chunks");
  if (key == j.end() || !key->is_string()) return Corrupt("key");
  if (size == j.end() || !size->is_number_unsigned()) return Corrupt("size");
  if (cs == j.end() || !cs->is_number_unsigned()) return Corrupt("chunk_size");
  if (sum == j.end() || !sum->is_string()) return Corrupt("sum");
  if (origin != j.end() && !origin->is_string()) return Corrupt("origin");
  if (chunks == j.end() || !chunks->is_array()) return Corrupt("chunks");
  m.key = key->get<std::string>();
  m.size = size->get<uint64_t>();
  m.chunk_size = cs->get<uint64_t>();
  auto parsed = Checksum128::FromHex(sum->get_ref<const std::string&>());
  if (!parsed.ok()) return Corrupt("sum not 32 hex digits");
  m.sum = *parsed;
  if (origin != j.end()) m.origin = origin->get<std::string>();
  m.chunks.reserve(chunks->size());
  for (const auto& c : *chunks) {
    PDM_ASSIGN_OR_RETURN(ChunkRef ref, ChunkRefFromJson(c));
    m.chunks.push_back(std::move(ref));
  }
  return m;
}

Result<std::unique_ptr<Archive>> Archive::Open(std::string_view spec, uint32_t archive_id,
                                               const ArchiveOptions& opts) {
  size_t colon = spec.find(':');
  if (colon == std::string_view::npos || colon + 1 == spec.size())
    return InvalidArgument("archive spec '" + std::string(spec) + "': want posix:DIR or hdf5:DIR");
  if (archive_id == 0) return InvalidArgument("archive id 0 is reserved for 'none'");
  std::string_view scheme = spec.substr(0, colon);
  std::string dir(spec.substr(colon + 1));
  if (scheme == "posix") return PosixArchive::Create(dir, archive_id);
  if (scheme == "hdf5") return Hdf5Archive::Create(dir, archive_id, opts);
  return InvalidArgument("archive spec '" + std::string(spec) + "': unknown scheme (posix, hdf5)");
}

namespace {

// OpenChunk's default: the chunk collects in memory and goes in one PutChunk.
class BufferedSink final : public ChunkSink {
 public:
  BufferedSink(Archive* a, std::string key, uint32_t index, uint64_t offset, uint64_t length)
      : archive_(a), key_(std::move(key)), index_(index), offset_(offset), length_(length) {
    data_.reserve(length);
  }
  Status Write(std::span<const uint8_t> data) override {
    if (data.size() > length_ - data_.size())
      return InvalidArgument("chunk " + std::to_string(index_) + " of '" + key_ + "': more bytes than its length");
    data_.insert(data_.end(), data.begin(), data.end());
    return Status::Ok();
  }
  Result<ChunkRef> Finish(Durability durability) override {
    if (data_.size() != length_)
      return InvalidArgument("chunk " + std::to_string(index_) + " of '" + key_ + "': " +
                             std::to_string(data_.size()) + " of " + std::to_string(length_) + " bytes written");
    return archive_->PutChunk(key_, index_, offset_, data_, durability);
  }

 private:
  Archive* const archive_;
  const std::string key_;
  const uint32_t index_;
  const uint64_t offset_;
  const uint64_t length_;
  std::vector<uint8_t> data_;
};

}  // namespace

Result<std::unique_ptr<ChunkSink>> Archive::OpenChunk(const std::string& key, uint32_t index, uint64_t offset,
                                                      uint64_t length) {
  PDM_RETURN_IF_ERROR(ValidateKey(key));
  if (length == 0) return InvalidArgument("OpenChunk('" + key + "'): empty chunk");
  if (offset > UINT64_MAX - length) return InvalidArgument("OpenChunk('" + key + "'): offset overflows");
  return std::unique_ptr<ChunkSink>(new BufferedSink(this, key, index, offset, length));
}

Status Archive::ReadChunk(const ObjectManifest& m, uint32_t index, std::span<uint8_t> out) {
  if (index >= m.chunks.size())
    return InvalidArgument("ReadChunk('" + m.key + "'): no chunk " + std::to_string(index));
  const ChunkRef& c = m.chunks[index];
  if (out.size() != c.length)
    return InvalidArgument("ReadChunk('" + m.key + "'): buffer " + std::to_string(out.size()) +
                           " bytes for a chunk of " + std::to_string(c.length));
  PDM_ASSIGN_OR_RETURN(ChunkFile f, LocateChunk(m, index));
  PDM_ASSIGN_OR_RETURN(Checksum128 sum, PreadHashed(f.fd.get(), out, f.offset, f.path));
  if (sum != c.sum)
    return DataLoss("archive object '" + m.key + "' chunk " + std::to_string(index) + ": checksum mismatch");
  return Status::Ok();
}

Status Archive::StreamChunk(const ObjectManifest& m, uint32_t index, std::span<uint8_t> buf, const SliceFn& fn) {
  if (index >= m.chunks.size())
    return InvalidArgument("StreamChunk('" + m.key + "'): no chunk " + std::to_string(index));
  if (buf.empty()) return InvalidArgument("StreamChunk('" + m.key + "'): empty buffer");
  const ChunkRef& c = m.chunks[index];
  PDM_ASSIGN_OR_RETURN(ChunkFile f, LocateChunk(m, index));
  Hasher h;
  for (uint64_t done = 0; done < c.length;) {
    auto slice = buf.first(static_cast<size_t>(std::min<uint64_t>(buf.size(), c.length - done)));
    PDM_RETURN_IF_ERROR(PreadHashing(f.fd.get(), slice, f.offset + done, f.path, &h));
    PDM_RETURN_IF_ERROR(fn(c.offset + done, slice));
    done += slice.size();
  }
  if (h.Digest() != c.sum)
    return DataLoss("archive object '" + m.key + "' chunk " + std::to_string(index) + ": checksum mismatch");
  return Status::Ok();
}

Status Archive::VerifyObject(const ObjectManifest& m) {
  std::vector<uint8_t> buf;
  for (const auto& c : m.chunks) {
    buf.resize(c.length);
    PDM_RETURN_IF_ERROR(ReadChunk(m, c.index, buf));
  }
  return Status::Ok();
}

Result<uint64_t> Archive::FreeBytes() {
  struct statvfs sv;
  if (::statvfs(dir_.c_str(), &sv) != 0) return PosixError("statvfs", dir_, errno);
  return uint64_t(sv.f_bavail) * sv.f_frsize;
}

Status ArchiveIoError(std::string_view call, std::string_view what, int err) {
  if (err == ENOSPC || err == EDQUOT) {
    return ResourceExhausted("archive full: " + std::string(call) + "(" + std::string(what) + "): " +
                                 std::strerror(err),
                             err);
  }
  return PosixError(call, what, err);
}

}  // namespace pdm::hsm
