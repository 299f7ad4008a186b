// The HDF5 catalog (docs/catalog.md is the schema) and the other inputs the
// tools take: a text list (one path per line) or a catalog, read in blocks
// and split evenly across ranks, so neither has to fit in one rank's memory.
//
// Layout, version 1:
//   /entries  compound dataset, one row per entry (type, size, blocks, uid,
//             gid, mode, atime, mtime, ctime, hsm_flags, archive_id)
//   /path     fixed-length string dataset (NUL-padded, width = the longest
//             path), row i is the path of /entries row i
//   attributes on "/": root, time, time_iso, ranks, entries, path_width,
//             schema_version, tool
// Parallel HDF5 1.10 cannot write variable-length strings collectively, hence
// the fixed width; keeping the paths out of the compound keeps the numeric
// analyses (per-user sums, age histograms) from reading them.
//
// HDF5 is not thread-safe: every call here must come from the one thread per
// process that calls MPI. Collective calls are marked.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tools/entry.h"

namespace pdm::tools {

// Local. One rank's rows, memory-bounded: past `mem_limit` bytes the rows go
// to an unlinked temporary file ($TMPDIR or /tmp), so a rank's share of a
// 100-million-entry walk costs disk, not RAM. Rows come back in insertion
// order.
class RowSpool {
 public:
  explicit RowSpool(size_t mem_limit = size_t{64} << 20);
  ~RowSpool();
  RowSpool(const RowSpool&) = delete;
  RowSpool& operator=(const RowSpool&) = delete;

  Status Add(const Entry& e);
  uint64_t rows() const { return rows_; }
  size_t max_path() const { return max_path_; }

  // Reading: Rewind() once, then Next() until it returns 0 rows.
  Status Rewind();
  Result<size_t> Next(size_t max_rows, std::vector<Entry>* out);

 private:
  Status Spill();
  size_t mem_limit_;
  std::string mem_;      // serialised rows not yet spilled
  FILE* file_ = nullptr;  // spilled rows
  uint64_t rows_ = 0;
  size_t max_path_ = 0;
  // read cursor
  bool reading_file_ = false;
  size_t mem_pos_ = 0;
};

struct CatalogInfo {
  std::vector<std::string> roots;
  int64_t time_s = 0;   // when the walk started (unix seconds)
  int ranks = 1;        // ranks that wrote it
  std::string tool;     // "pdm-walk 0.1.0"
  uint64_t entries = 0;     // filled by the writer / reader
  uint64_t path_width = 0;  // filled by the writer / reader
};

// COLLECTIVE. Creates (truncates) `file` and writes every rank's spool
// (rank order, then insertion order) with collective MPI-IO writes in blocks.
Status WriteCatalog(MPI_Comm comm, const std::string& file, CatalogInfo info, RowSpool* rows);

// Reads a catalog. Open is COLLECTIVE (the file is opened with the MPI-IO
// driver on comm); ReadRows is local (independent I/O) and may be called any
// number of times by any rank.
class CatalogReader {
 public:
  static Result<std::unique_ptr<CatalogReader>> Open(MPI_Comm comm, const std::string& file);
  ~CatalogReader();
  const CatalogInfo& info() const { return info_; }
  uint64_t rows() const { return info_.entries; }
  // Rows [start, start + count) into *out (replaced). count may be 0.
  Status ReadRows(uint64_t start, uint64_t count, std::vector<Entry>* out);

 private:
  CatalogReader() = default;
  int64_t file_ = -1, entries_ = -1, path_ = -1;  // hid_t (int64_t in HDF5 1.10), kept out of the header
  CatalogInfo info_;
};

// Local: does `file` start with the HDF5 signature?
bool IsCatalogFile(const std::string& file);

// COLLECTIVE. Rank r reads rows [N*r/P, N*(r+1)/P) of the catalog in blocks
// of `block` rows and calls fn for each. Stops at the first error of fn.
Status ForEachCatalogRow(MPI_Comm comm, const std::string& file, size_t block,
                         const std::function<Status(Entry&&)>& fn, CatalogInfo* info = nullptr);

// COLLECTIVE. Splits the text list's bytes evenly across ranks (a line
// belongs to the rank whose share holds its first byte), reads it in 1 MiB
// pieces and calls fn for each non-empty line (trailing '\r' removed).
Status ForEachListLine(MPI_Comm comm, const std::string& file, const std::function<Status(std::string&&)>& fn);

}  // namespace pdm::tools

namespace pdm::tools {
// COLLECTIVE. Writes every rank's spooled paths, one per line, rank order,
// into `file` with MPI-IO, streaming the spool in blocks.
Status WriteListFromSpool(MPI_Comm comm, const std::string& file, RowSpool* rows);
}  // namespace pdm::tools
