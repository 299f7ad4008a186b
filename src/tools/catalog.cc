#include "tools/catalog.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <type_traits>

#include "common/posix.h"
#include "tools/mpi_util.h"

namespace pdm::tools {

static_assert(std::is_same_v<hid_t, int64_t>, "hid_t is stored as int64_t");

namespace {

// The numeric part of one row, in memory. HDF5 converts it to the packed,
// little-endian file type by member name, so readers of later schema
// versions with more members still read these.
struct Row {
  char type;
  uint64_t size, blocks;
  uint32_t uid, gid, mode;
  int64_t atime, mtime, ctime;
  uint32_t hsm_flags;
  uint64_t archive_id;
};

// Owns one hid_t; closes it with the function for its kind.
class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Hid(Hid&& o) noexcept : id_(std::exchange(o.id_, -1)), close_(o.close_) {}
  Hid& operator=(Hid&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      close_ = o.close_;
    }
    return *this;
  }
  ~Hid() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() { return std::exchange(id_, -1); }

 private:
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

Status H5Error(const std::string& what) { return Internal("HDF5: " + what + " failed"); }

// Compound type of Row. file=true: packed little-endian for the file.
Hid RowType(bool file) {
  Hid str(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(str.get(), 1);
  H5Tset_strpad(str.get(), H5T_STR_NULLPAD);
  Hid t(H5Tcreate(H5T_COMPOUND, sizeof(Row)), H5Tclose);
  auto u64 = file ? H5T_STD_U64LE : H5T_NATIVE_UINT64;
  auto i64 = file ? H5T_STD_I64LE : H5T_NATIVE_INT64;
  auto u32 = file ? H5T_STD_U32LE : H5T_NATIVE_UINT32;
  H5Tinsert(t.get(), "type", HOFFSET(Row, type), str.get());
  H5Tinsert(t.get(), "size", HOFFSET(Row, size), u64);
  H5Tinsert(t.get(), "blocks", HOFFSET(Row, blocks), u64);
  H5Tinsert(t.get(), "uid", HOFFSET(Row, uid), u32);
  H5Tinsert(t.get(), "gid", HOFFSET(Row, gid), u32);
  H5Tinsert(t.get(), "mode", HOFFSET(Row, mode), u32);
  H5Tinsert(t.get(), "atime", HOFFSET(Row, atime), i64);
  H5Tinsert(t.get(), "mtime", HOFFSET(Row, mtime), i64);
  H5Tinsert(t.get(), "ctime", HOFFSET(Row, ctime), i64);
  H5Tinsert(t.get(), "hsm_flags", HOFFSET(Row, hsm_flags), u32);
  H5Tinsert(t.get(), "archive_id", HOFFSET(Row, archive_id), u64);
  if (file) H5Tpack(t.get());
  return t;
}

Hid PathType(size_t width) {
  Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), width);
  H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
  return t;
}

void ToRow(const Entry& e, Row* r) {
  std::memset(r, 0, sizeof *r);
  r->type = e.type;
  r->size = e.size;
  r->blocks = e.blocks;
  r->uid = e.uid;
  r->gid = e.gid;
  r->mode = e.mode;
  r->atime = e.atime_ns;
  r->mtime = e.mtime_ns;
  r->ctime = e.ctime_ns;
  r->hsm_flags = e.hsm_flags;
  r->archive_id = e.archive_id;
}

void FromRow(const Row& r, Entry* e) {
  e->type = r.type;
  e->size = r.size;
  e->blocks = r.blocks;
  e->uid = r.uid;
  e->gid = r.gid;
  e->mode = r.mode;
  e->atime_ns = r.atime;
  e->mtime_ns = r.mtime;
  e->ctime_ns = r.ctime;
  e->hsm_flags = r.hsm_flags;
  e->archive_id = r.archive_id;
}

Status WriteStringAttr(hid_t obj, const char* name, const std::string& value) {
  Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  Hid sp(H5Screate(H5S_SCALAR), H5Sclose);
  Hid a(H5Acreate2(obj, name, t.get(), sp.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* p = value.c_str();
  if (!a.valid() || H5Awrite(a.get(), t.get(), &p) < 0) return H5Error(std::string("attribute ") + name);
  return Status::Ok();
}

template <typename T>
Status WriteNumAttr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, T v) {
  Hid sp(H5Screate(H5S_SCALAR), H5Sclose);
  Hid a(H5Acreate2(obj, name, file_type, sp.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.valid() || H5Awrite(a.get(), mem_type, &v) < 0) return H5Error(std::string("attribute ") + name);
  return Status::Ok();
}

std::string ReadStringAttr(hid_t obj, const char* name) {
  if (H5Aexists(obj, name) <= 0) return {};
  Hid a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  Hid ft(H5Aget_type(a.get()), H5Tclose);
  if (H5Tis_variable_str(ft.get()) > 0) {
    Hid t(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(t.get(), H5T_VARIABLE);
    // HDF5 converts between character sets not at all: match the file's.
    H5Tset_cset(t.get(), H5Tget_cset(ft.get()));
    char* p = nullptr;
    if (H5Aread(a.get(), t.get(), &p) < 0 || p == nullptr) return {};
    std::string s(p);
    H5free_memory(p);
    return s;
  }
  std::string s(H5Tget_size(ft.get()), '\0');
  H5Aread(a.get(), ft.get(), s.data());
  s.resize(std::strlen(s.c_str()));
  return s;
}

template <typename T>
T ReadNumAttr(hid_t obj, const char* name, hid_t mem_type) {
  T v{};
  if (H5Aexists(obj, name) <= 0) return v;
  Hid a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  H5Aread(a.get(), mem_type, &v);
  return v;
}

// One row in the spool: Row bytes, then u32 path length, then the path.
void Serialise(const Entry& e, std::string* out) {
  Row r;
  ToRow(e, &r);
  out->append(reinterpret_cast<const char*>(&r), sizeof r);
  const uint32_t n = static_cast<uint32_t>(e.path.size());
  out->append(reinterpret_cast<const char*>(&n), sizeof n);
  out->append(e.path);
}

}  // namespace

// ---- RowSpool ---------------------------------------------------------------

RowSpool::RowSpool(size_t mem_limit) : mem_limit_(mem_limit) {}

RowSpool::~RowSpool() {
  if (file_) std::fclose(file_);
}

Status RowSpool::Add(const Entry& e) {
  Serialise(e, &mem_);
  ++rows_;
  max_path_ = std::max(max_path_, e.path.size());
  if (mem_.size() >= mem_limit_) return Spill();
  return Status::Ok();
}

Status RowSpool::Spill() {
  if (file_ == nullptr) {
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/pdm-spool-XXXXXX";
    int fd = mkstemp(tmpl.data());
    if (fd < 0) return PosixError("mkstemp", tmpl, errno);
    unlink(tmpl.c_str());  // gone with the process, whatever happens
    file_ = fdopen(fd, "w+b");
    if (file_ == nullptr) {
      close(fd);
      return PosixError("fdopen", tmpl, errno);
    }
  }
  if (std::fwrite(mem_.data(), 1, mem_.size(), file_) != mem_.size()) return PosixError("fwrite", "row spool", errno);
  mem_.clear();
  return Status::Ok();
}

Status RowSpool::Rewind() {
  mem_pos_ = 0;
  reading_file_ = file_ != nullptr;
  if (file_) {
    if (std::fflush(file_) != 0 || std::fseek(file_, 0, SEEK_SET) != 0) return PosixError("fseek", "row spool", errno);
  }
  return Status::Ok();
}

Result<size_t> RowSpool::Next(size_t max_rows, std::vector<Entry>* out) {
  out->clear();
  while (out->size() < max_rows) {
    Row r;
    uint32_t n = 0;
    Entry e;
    if (reading_file_) {
      if (std::fread(&r, sizeof r, 1, file_) != 1) {
        reading_file_ = false;  // end of the spilled part; go on in memory
        continue;
      }
      if (std::fread(&n, sizeof n, 1, file_) != 1) return DataLoss("row spool: truncated");
      e.path.resize(n);
      if (n && std::fread(e.path.data(), 1, n, file_) != n) return DataLoss("row spool: truncated");
    } else {
      if (mem_pos_ >= mem_.size()) break;
      std::memcpy(&r, mem_.data() + mem_pos_, sizeof r);
      std::memcpy(&n, mem_.data() + mem_pos_ + sizeof r, sizeof n);
      e.path.assign(mem_.data() + mem_pos_ + sizeof r + sizeof n, n);
      mem_pos_ += sizeof r + sizeof n + n;
    }
    FromRow(r, &e);
    out->push_back(std::move(e));
  }
  return out->size();
}

// ---- writer -----------------------------------------------------------------

Status WriteCatalog(MPI_Comm comm, const std::string& file, CatalogInfo info, RowSpool* rows) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  unsigned long long local = rows->rows(), offset = 0, total = 0;
  MPI_Exscan(&local, &offset, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm);
  if (rank == 0) offset = 0;
  MPI_Allreduce(&local, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm);
  const uint64_t width = std::max<uint64_t>(1, static_cast<uint64_t>(MaxAll(comm, static_cast<int64_t>(rows->max_path()))));
  info.entries = total;
  info.path_width = width;
  info.ranks = size;

  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL);
  // Every rank sets the same metadata, so the collective metadata writes agree.
  H5Pset_all_coll_metadata_ops(fapl.get(), true);
  H5Pset_coll_metadata_write(fapl.get(), true);
  Hid f(H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!f.valid()) return AgreeStatus(comm, H5Error("H5Fcreate(" + file + ")"));

  Status st;
  {
    Hid root(H5Gopen2(f.get(), "/", H5P_DEFAULT), H5Gclose);
    std::string roots;
    for (const auto& r : info.roots) roots += (roots.empty() ? "" : "\n") + r;
    char iso[64] = "";
    const time_t t = static_cast<time_t>(info.time_s);
    struct tm tm;
    gmtime_r(&t, &tm);
    std::strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    for (Status s : {WriteStringAttr(root.get(), "root", roots), WriteStringAttr(root.get(), "time_iso", iso),
                     WriteStringAttr(root.get(), "tool", info.tool),
                     WriteNumAttr<int64_t>(root.get(), "time", H5T_STD_I64LE, H5T_NATIVE_INT64, info.time_s),
                     WriteNumAttr<int32_t>(root.get(), "ranks", H5T_STD_I32LE, H5T_NATIVE_INT32, info.ranks),
                     WriteNumAttr<uint64_t>(root.get(), "entries", H5T_STD_U64LE, H5T_NATIVE_UINT64, total),
                     WriteNumAttr<uint64_t>(root.get(), "path_width", H5T_STD_U64LE, H5T_NATIVE_UINT64, width),
                     WriteNumAttr<int32_t>(root.get(), "schema_version", H5T_STD_I32LE, H5T_NATIVE_INT32, 1)})
      if (st.ok() && !s.ok()) st = s;
  }

  const hsize_t dims[1] = {total};
  Hid space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  Hid ftype = RowType(true), mtype = RowType(false), ptype = PathType(width);
  Hid ds_e(H5Dcreate2(f.get(), "entries", ftype.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  Hid ds_p(H5Dcreate2(f.get(), "path", ptype.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds_e.valid() || !ds_p.valid()) return AgreeStatus(comm, H5Error("H5Dcreate2"));

  Hid dxpl(H5Pcreate(H5P_DATASET_XFER), H5Pclose);
  H5Pset_dxpl_mpio(dxpl.get(), H5FD_MPIO_COLLECTIVE);

  // Rounds of collective writes: every rank takes part in every round, with
  // an empty selection once its own rows are written.
  constexpr size_t kBlock = 1 << 16;
  const int64_t my_rounds = static_cast<int64_t>((local + kBlock - 1) / kBlock);
  const int64_t rounds = MaxAll(comm, my_rounds);
  Status local_st = rows->Rewind();
  std::vector<Entry> block;
  std::vector<Row> rbuf;
  std::string pbuf;
  uint64_t done = 0;
  for (int64_t round = 0; round < rounds; ++round) {
    size_t n = 0;
    if (local_st.ok()) {
      auto got = rows->Next(kBlock, &block);
      if (got.ok()) n = *got;
      else local_st = got.status();
    }
    rbuf.resize(std::max<size_t>(n, 1));
    pbuf.assign(std::max<size_t>(n, 1) * width, '\0');
    for (size_t i = 0; i < n; ++i) {
      ToRow(block[i], &rbuf[i]);
      std::memcpy(pbuf.data() + i * width, block[i].path.data(), block[i].path.size());
    }
    Hid fs(H5Dget_space(ds_e.get()), H5Sclose);
    const hsize_t mdims[1] = {std::max<hsize_t>(n, 1)};
    Hid ms(H5Screate_simple(1, mdims, nullptr), H5Sclose);
    if (n > 0) {
      const hsize_t start[1] = {offset + done}, count[1] = {n};
      H5Sselect_hyperslab(fs.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    } else {
      H5Sselect_none(fs.get());
      H5Sselect_none(ms.get());
    }
    if (H5Dwrite(ds_e.get(), mtype.get(), ms.get(), fs.get(), dxpl.get(), rbuf.data()) < 0 && local_st.ok())
      local_st = H5Error("H5Dwrite(entries)");
    if (H5Dwrite(ds_p.get(), ptype.get(), ms.get(), fs.get(), dxpl.get(), pbuf.data()) < 0 && local_st.ok())
      local_st = H5Error("H5Dwrite(path)");
    done += n;
  }
  if (st.ok()) st = local_st;
  ds_e = Hid();
  ds_p = Hid();
  if (H5Fclose(f.release()) < 0 && st.ok()) st = H5Error("H5Fclose(" + file + ")");
  return AgreeStatus(comm, st);
}

// ---- reader -----------------------------------------------------------------

bool IsCatalogFile(const std::string& file) {
  static const unsigned char kSig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char buf[8];
  const bool yes = pread(fd, buf, 8, 0) == 8 && std::memcmp(buf, kSig, 8) == 0;
  close(fd);
  return yes;
}

Result<std::unique_ptr<CatalogReader>> CatalogReader::Open(MPI_Comm comm, const std::string& file) {
  std::unique_ptr<CatalogReader> r(new CatalogReader());
  Hid fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL);
  Hid f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!f.valid()) return AgreeStatus(comm, NotFound("HDF5: cannot open catalog " + file));
  Hid e(H5Dopen2(f.get(), "entries", H5P_DEFAULT), H5Dclose);
  Hid p(H5Dopen2(f.get(), "path", H5P_DEFAULT), H5Dclose);
  if (!e.valid() || !p.valid()) return AgreeStatus(comm, InvalidArgument(file + ": not a pdm catalog (no /entries or /path)"));
  Hid root(H5Gopen2(f.get(), "/", H5P_DEFAULT), H5Gclose);
  std::string roots = ReadStringAttr(root.get(), "root");
  for (size_t i = 0; i <= roots.size();) {
    size_t j = roots.find('\n', i);
    if (j == std::string::npos) j = roots.size();
    if (j > i) r->info_.roots.push_back(roots.substr(i, j - i));
    i = j + 1;
  }
  r->info_.tool = ReadStringAttr(root.get(), "tool");
  r->info_.time_s = ReadNumAttr<int64_t>(root.get(), "time", H5T_NATIVE_INT64);
  r->info_.ranks = ReadNumAttr<int32_t>(root.get(), "ranks", H5T_NATIVE_INT32);
  Hid sp(H5Dget_space(e.get()), H5Sclose);
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(sp.get(), dims, nullptr);
  r->info_.entries = dims[0];
  Hid pt(H5Dget_type(p.get()), H5Tclose);
  r->info_.path_width = H5Tget_size(pt.get());
  r->file_ = f.release();
  r->entries_ = e.release();
  r->path_ = p.release();
  return r;
}

CatalogReader::~CatalogReader() {
  if (entries_ >= 0) H5Dclose(entries_);
  if (path_ >= 0) H5Dclose(path_);
  if (file_ >= 0) H5Fclose(file_);  // collective: every rank destroys its reader together
}

Status CatalogReader::ReadRows(uint64_t start, uint64_t count, std::vector<Entry>* out) {
  out->clear();
  if (count == 0) return Status::Ok();
  if (start + count > info_.entries) return InvalidArgument("catalog: rows past the end");
  const size_t width = info_.path_width;
  std::vector<Row> rbuf(count);
  std::string pbuf(count * width, '\0');
  Hid mtype = RowType(false), ptype = PathType(width);
  Hid fs(H5Dget_space(entries_), H5Sclose);
  const hsize_t s[1] = {start}, c[1] = {count};
  H5Sselect_hyperslab(fs.get(), H5S_SELECT_SET, s, nullptr, c, nullptr);
  Hid ms(H5Screate_simple(1, c, nullptr), H5Sclose);
  if (H5Dread(entries_, mtype.get(), ms.get(), fs.get(), H5P_DEFAULT, rbuf.data()) < 0)
    return H5Error("H5Dread(entries)");
  if (H5Dread(path_, ptype.get(), ms.get(), fs.get(), H5P_DEFAULT, pbuf.data()) < 0) return H5Error("H5Dread(path)");
  out->resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    FromRow(rbuf[i], &(*out)[i]);
    const char* p = pbuf.data() + i * width;
    (*out)[i].path.assign(p, strnlen(p, width));
  }
  return Status::Ok();
}

Status ForEachCatalogRow(MPI_Comm comm, const std::string& file, size_t block,
                         const std::function<Status(Entry&&)>& fn, CatalogInfo* info) {
  auto reader = CatalogReader::Open(comm, file);
  if (!reader.ok()) return reader.status();
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const uint64_t n = (*reader)->rows();
  const uint64_t lo = n * static_cast<uint64_t>(rank) / static_cast<uint64_t>(size);
  const uint64_t hi = n * static_cast<uint64_t>(rank + 1) / static_cast<uint64_t>(size);
  if (info) *info = (*reader)->info();
  Status st;
  std::vector<Entry> rows;
  for (uint64_t at = lo; at < hi && st.ok(); at += block) {
    st = (*reader)->ReadRows(at, std::min<uint64_t>(block, hi - at), &rows);
    for (auto& e : rows) {
      if (!st.ok()) break;
      st = fn(std::move(e));
    }
  }
  reader->reset();  // collective close before the agreement
  return AgreeStatus(comm, st);
}

Status ForEachListLine(MPI_Comm comm, const std::string& file, const std::function<Status(std::string&&)>& fn) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return AgreeStatus(comm, PosixError("open", file, errno));
  UniqueFd guard(fd);
  const off_t len = lseek(fd, 0, SEEK_END);
  const uint64_t ulen = len > 0 ? static_cast<uint64_t>(len) : 0;
  const uint64_t lo = ulen * static_cast<uint64_t>(rank) / static_cast<uint64_t>(size);
  const uint64_t hi = ulen * static_cast<uint64_t>(rank + 1) / static_cast<uint64_t>(size);
  constexpr size_t kPiece = 1 << 20;
  std::vector<char> buf(kPiece);
  Status st;
  uint64_t pos = lo;
  // A line starting before lo belongs to the previous rank: skip to the first
  // line start at or after lo (lo itself is one when byte lo-1 is '\n').
  bool skipping = false;
  if (lo > 0) {
    char c = 0;
    if (pread(fd, &c, 1, static_cast<off_t>(lo - 1)) == 1 && c != '\n') skipping = true;
  }
  std::string line;
  bool in_line = false;  // the current line started inside our share
  while (st.ok()) {
    if (!in_line && !skipping && pos >= hi) break;
    const ssize_t n = pread(fd, buf.data(), kPiece, static_cast<off_t>(pos));
    if (n < 0) {
      st = PosixError("pread", file, errno);
      break;
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n && st.ok(); ++i, ++pos) {
      const char c = buf[static_cast<size_t>(i)];
      if (skipping) {
        if (c == '\n') skipping = false;
        continue;
      }
      if (!in_line) {
        if (pos >= hi) break;
        in_line = true;
      }
      if (c == '\n') {
        in_line = false;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) st = fn(std::move(line));
        line.clear();
      } else {
        line.push_back(c);
      }
    }
    if (!in_line && !skipping && pos >= hi) break;
  }
  if (st.ok() && in_line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) st = fn(std::move(line));
  }
  return AgreeStatus(comm, st);
}

}  // namespace pdm::tools

namespace pdm::tools {

Status WriteListFromSpool(MPI_Comm comm, const std::string& file, RowSpool* rows) {
  // First pass: this rank's byte count, for its offset in the file.
  Status st = rows->Rewind();
  std::vector<Entry> block;
  unsigned long long len = 0;
  while (st.ok()) {
    auto n = rows->Next(1 << 16, &block);
    if (!n.ok()) st = n.status();
    if (!n.ok() || *n == 0) break;
    for (const auto& e : block) len += e.path.size() + 1;
  }
  unsigned long long off = 0;
  MPI_Exscan(&len, &off, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, comm);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0) off = 0;
  MPI_File fh;
  if (MPI_File_open(comm, file.c_str(), MPI_MODE_CREATE | MPI_MODE_WRONLY, MPI_INFO_NULL, &fh) != MPI_SUCCESS)
    return AgreeStatus(comm, Internal("MPI_File_open(" + file + ") failed"));
  MPI_File_set_size(fh, 0);
  if (st.ok()) st = rows->Rewind();
  std::string text;
  while (st.ok()) {
    auto n = rows->Next(1 << 16, &block);
    if (!n.ok()) st = n.status();
    if (!n.ok() || *n == 0) break;
    text.clear();
    for (const auto& e : block) {
      text += e.path;
      text.push_back('\n');
    }
    if (MPI_File_write_at(fh, static_cast<MPI_Offset>(off), text.data(), static_cast<int>(text.size()), MPI_CHAR,
                          MPI_STATUS_IGNORE) != MPI_SUCCESS)
      st = Internal("MPI_File_write_at(" + file + ") failed");
    off += text.size();
  }
  MPI_File_close(&fh);
  return AgreeStatus(comm, st);
}

}  // namespace pdm::tools
