// pdm_prestage: the collective recall of include/pdm/prestage.h.
//
// Five exchanges over a duplicate of the caller's communicator:
//   1. origin -> owner   each path's DM handle, to the rank hash(handle) % P:
//                        the owner sees every path of every rank that names
//                        the file, so duplicates merge there (a handle names
//                        the file whatever path or mount reached it).
//   2. owner -> rank 0   the released files (state read by the owner, so
//                        the state reads are spread over the ranks too),
//                        with their archive id, object key and size.
//   3. rank 0 -> all     recall batches: the files sorted by (archive, key),
//                        cut into requests, dealt round-robin, so that at any
//                        moment the requests in flight cover neighbouring
//                        keys and the whole job sweeps the archive in order.
//   4. sender -> owner   each file's verdict, judged by its state right
//                        after its request.
//   5. owner -> origin   the verdict for every path that named the file.
// Then one reduction of the totals, so every rank returns the same 0 / -1.
//
// Every rank runs every exchange whatever happened locally: a local failure
// becomes data (a per-path errno), never an early return that would leave
// the other ranks waiting in a collective.
#include "pdm/prestage.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hsm/key_order.h"
#include "hsm/protocol.h"
#include "hsm/state.h"
#include "pdm/prestage.hpp"  // compiled here so the header-only wrapper is checked with our warnings
#include "tools/hsm_client.h"

// The public flag values are the state's bits (hsm/state.h), so results
// carry them unchanged.
static_assert(PDM_HSM_EXISTS == pdm::hsm::kExists && PDM_HSM_ARCHIVED == pdm::hsm::kArchived &&
              PDM_HSM_RELEASED == pdm::hsm::kReleased && PDM_HSM_DIRTY == pdm::hsm::kDirty &&
              PDM_HSM_LOST == pdm::hsm::kLost && PDM_HSM_NORELEASE == pdm::hsm::kNoRelease &&
              PDM_HSM_NOARCHIVE == pdm::hsm::kNoArchive);

namespace pdm::prestage {
namespace {

constexpr unsigned kDefaultRequests = 4;
constexpr uint64_t kDefaultBatchBytes = 64ull << 20;

// An MPI call failed: the call as a whole ends with this errno.
struct MpiFailure {
  int err;
};

// Length-prefixed little records in a byte string (all ranks run the same
// binary, so native byte order is shared).
class Writer {
 public:
  template <typename T>
  void Put(T v) {
    buf_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void PutBytes(const std::string& s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    buf_.append(s);
  }
  std::string& str() { return buf_; }

 private:
  std::string buf_;
};

class Reader {
 public:
  explicit Reader(const std::string& s) : p_(s.data()), end_(s.data() + s.size()) {}
  bool done() const { return p_ == end_; }
  template <typename T>
  T Get() {
    T v{};
    Need(sizeof v);
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    return v;
  }
  std::string GetBytes() {
    const uint32_t n = Get<uint32_t>();
    Need(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }

 private:
  // Only our own peers write these buffers; a short one means a bug or
  // memory corruption, and guessing would mis-attribute results.
  void Need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) throw MpiFailure{EPROTO};
  }
  const char* p_;
  const char* end_;
};

class Comm {
 public:
  explicit Comm(MPI_Comm parent) {
    // Our own communicator: our messages never match the application's, and
    // errors come back as codes instead of aborting the job.
    Check(MPI_Comm_dup(parent, &comm_));
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    Check(MPI_Comm_rank(comm_, &rank_));
    Check(MPI_Comm_size(comm_, &size_));
  }
  ~Comm() {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  static void Check(int rc) {
    if (rc != MPI_SUCCESS) throw MpiFailure{EIO};
  }

  // out[r] goes to rank r; returns what each rank sent here, in[r] from r.
  std::vector<std::string> Exchange(const std::vector<std::string>& out) {
    const size_t p = static_cast<size_t>(size_);
    std::vector<uint64_t> scount(p), rcount(p);
    for (size_t r = 0; r < p; ++r) scount[r] = out[r].size();
    Check(MPI_Alltoall(scount.data(), 1, MPI_UINT64_T, rcount.data(), 1, MPI_UINT64_T, comm_));
    // MPI-3 counts and displacements are ints: refuse, on every rank alike,
    // an exchange that does not fit rather than truncate it.
    uint64_t stotal = 0, rtotal = 0;
    for (size_t r = 0; r < p; ++r) {
      stotal += scount[r];
      rtotal += rcount[r];
    }
    int big = stotal > INT_MAX || rtotal > INT_MAX;
    Check(MPI_Allreduce(MPI_IN_PLACE, &big, 1, MPI_INT, MPI_MAX, comm_));
    if (big) throw MpiFailure{EOVERFLOW};
    std::vector<int> sc(p), sd(p), rc(p), rd(p);
    std::string sbuf;
    sbuf.reserve(stotal);
    int ro = 0;
    for (size_t r = 0; r < p; ++r) {
      sc[r] = static_cast<int>(scount[r]);
      sd[r] = static_cast<int>(sbuf.size());
      sbuf += out[r];
      rc[r] = static_cast<int>(rcount[r]);
      rd[r] = ro;
      ro += rc[r];
    }
    std::string rbuf(rtotal, '\0');
    Check(MPI_Alltoallv(sbuf.data(), sc.data(), sd.data(), MPI_BYTE, rbuf.data(), rc.data(), rd.data(), MPI_BYTE,
                        comm_));
    std::vector<std::string> in(p);
    for (size_t r = 0; r < p; ++r) in[r] = rbuf.substr(static_cast<size_t>(rd[r]), static_cast<size_t>(rc[r]));
    return in;
  }

  int MaxInt(int v) {
    Check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, comm_));
    return v;
  }
  void Sum(uint64_t* v, int n) { Check(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_UINT64_T, MPI_SUM, comm_)); }
  double MaxDouble(double v) {
    Check(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, comm_));
    return v;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

int ErrOf(const Status& s) { return s.ok() ? 0 : (s.err() ? s.err() : EIO); }

int OwnerOf(const std::string& handle, int size) {
  // A fixed hash (not std::hash) so the rule does not depend on how a
  // standard library was built.
  return static_cast<int>(XXH3_64bits(handle.data(), handle.size()) % static_cast<uint64_t>(size));
}

// A file as its owner sees it.
struct Unique {
  std::vector<std::pair<int, uint64_t>> who;  // (origin rank, index into its paths)
  int err = 0;
  uint32_t hsm = 0;
  bool candidate = false;  // released: to be recalled
  bool judged = false;     // a verdict came back (candidates only)
  bool recalled = false;
  uint64_t size = 0;  // from the state: the size of the archived copy
};

struct Candidate {
  uint32_t archive = 0;
  std::string key;
  std::string handle;
  uint64_t size = 0;
};

struct Verdict {
  std::string handle;
  int err = 0;
  uint32_t hsm = 0;
  bool recalled = false;
};

// The sender's side: the batches dealt to this rank, `requests` at a time.
// Each file is judged by its state after its request, as the HSM tools do:
// the coordinator's answer only says whether the whole request went well.
std::vector<Verdict> SendBatches(const tools::HsmClient& client, const std::vector<std::vector<std::string>>& batches,
                                 unsigned requests) {
  std::vector<std::vector<Verdict>> per(batches.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t b; (b = next.fetch_add(1)) < batches.size();) {
      const Status sent = client.Send(hsm::Op::kRecall, batches[b]);
      for (const std::string& h : batches[b]) {
        Verdict v;
        v.handle = h;
        auto st = client.State(h);
        if (!st.ok()) {
          v.err = ErrOf(st.status());
        } else {
          v.hsm = st->flags;
          if (!st->Has(hsm::kReleased)) v.recalled = true;
          // A lost copy is a data error whatever the request said; otherwise
          // the request's errno is the best account of why it is still a stub.
          else if (st->Has(hsm::kLost)) v.err = EIO;
          else v.err = sent.ok() ? EIO : ErrOf(sent);
        }
        per[b].push_back(std::move(v));
      }
    }
  };
  const size_t nthreads = std::min<size_t>(std::max(1u, requests), batches.size());
  std::vector<std::thread> threads;
  for (size_t t = 1; t < nthreads; ++t) threads.emplace_back(work);
  if (nthreads > 0) work();
  for (auto& t : threads) t.join();
  std::vector<Verdict> out;
  for (auto& v : per)
    for (auto& x : v) out.push_back(std::move(x));
  return out;
}

// Rank 0: sort by archive locality and cut into requests.
std::vector<std::vector<Candidate>> MakeBatches(std::vector<Candidate> all, uint64_t batch_bytes) {
  // By archive, then key order (hsm/key_order.h), then handle.
  std::sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
    if (a.archive != b.archive) return a.archive < b.archive;
    if (a.key != b.key) return hsm::ObjectKeyLess(a.key, b.key);
    return a.handle < b.handle;
  });
  std::vector<std::vector<Candidate>> batches;
  uint64_t bytes = 0;
  for (Candidate& c : all) {
    const bool full = !batches.empty() && (batches.back().size() >= hsm::kMaxFilesPerRequest ||
                                           bytes + c.size > batch_bytes || c.archive != batches.back().back().archive);
    if (batches.empty() || full) {
      batches.emplace_back();
      bytes = 0;
    }
    bytes += c.size;
    batches.back().push_back(std::move(c));
  }
  return batches;
}

int Run(MPI_Comm parent, const char* const* paths, size_t n, const pdm_prestage_options& opts,
        pdm_prestage_result* results, pdm_prestage_stats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  Comm comm(parent);
  const int P = comm.size();
  std::vector<pdm_prestage_result> res(n, pdm_prestage_result{0, 0, 0});

  // Can this rank take part at all? Decided together, so that a rank
  // without an agent or coordinator fails the call everywhere instead of
  // owning files it cannot look at.
  int setup_err = 0;
  std::unique_ptr<tools::HsmClient> client;
  if (n > 0 && paths == nullptr) {
    setup_err = EINVAL;
  } else {
    auto c = tools::HsmClient::Open("pdm_prestage r" + std::to_string(comm.rank()), true);
    if (c.ok()) client = std::move(*c);
    else setup_err = ErrOf(c.status());
  }
  const int any_setup_err = comm.MaxInt(setup_err);
  if (any_setup_err != 0) {
    const int err = setup_err ? setup_err : any_setup_err;
    uint64_t tot[1] = {n};
    comm.Sum(tot, 1);
    if (results)
      for (size_t i = 0; i < n; ++i) results[i] = pdm_prestage_result{err, 0, 0};
    if (stats) {
      *stats = pdm_prestage_stats{};
      stats->paths = stats->failed_paths = tot[0];
    }
    errno = err;
    return -1;
  }

  // 1. Handles to their owners.
  std::vector<std::string> out(static_cast<size_t>(P));
  {
    std::vector<Writer> w(static_cast<size_t>(P));
    for (size_t i = 0; i < n; ++i) {
      if (paths[i] == nullptr) {
        res[i].error = EINVAL;
        continue;
      }
      auto h = tools::HsmClient::RegularFileHandle(paths[i]);
      if (!h.ok()) {
        res[i].error = ErrOf(h.status());
        continue;
      }
      Writer& o = w[static_cast<size_t>(OwnerOf(*h, P))];
      o.Put<uint64_t>(i);
      o.PutBytes(*h);
    }
    for (int r = 0; r < P; ++r) out[static_cast<size_t>(r)] = std::move(w[static_cast<size_t>(r)].str());
  }
  std::vector<std::string> in = comm.Exchange(out);

  // Owner: merge, then read each distinct file's state once.
  std::unordered_map<std::string, Unique> mine;
  for (int src = 0; src < P; ++src) {
    Reader r(in[static_cast<size_t>(src)]);
    while (!r.done()) {
      const uint64_t idx = r.Get<uint64_t>();
      mine[r.GetBytes()].who.emplace_back(src, idx);
    }
  }
  // 2. The released ones to rank 0.
  out.assign(static_cast<size_t>(P), std::string());
  {
    Writer w;
    for (auto& [h, u] : mine) {
      auto st = client->State(h);
      if (!st.ok()) {
        u.err = ErrOf(st.status());
        continue;
      }
      u.hsm = st->flags;
      if (!st->Has(hsm::kReleased)) continue;  // resident: nothing to do
      u.candidate = true;
      u.size = st->size;
      w.Put<uint32_t>(st->archive_id);
      w.Put<uint64_t>(st->size);
      w.PutBytes(st->key);
      w.PutBytes(h);
    }
    out[0] = std::move(w.str());
  }
  in = comm.Exchange(out);

  // 3. Rank 0 sorts and deals the batches.
  out.assign(static_cast<size_t>(P), std::string());
  if (comm.rank() == 0) {
    std::vector<Candidate> all;
    for (const std::string& part : in) {
      Reader r(part);
      while (!r.done()) {
        Candidate c;
        c.archive = r.Get<uint32_t>();
        c.size = r.Get<uint64_t>();
        c.key = r.GetBytes();
        c.handle = r.GetBytes();
        all.push_back(std::move(c));
      }
    }
    auto batches = MakeBatches(std::move(all), opts.batch_bytes);
    std::vector<Writer> w(static_cast<size_t>(P));
    for (size_t b = 0; b < batches.size(); ++b) {
      Writer& o = w[b % static_cast<size_t>(P)];
      o.Put<uint32_t>(static_cast<uint32_t>(batches[b].size()));
      for (const Candidate& c : batches[b]) o.PutBytes(c.handle);
    }
    for (int r = 0; r < P; ++r) out[static_cast<size_t>(r)] = std::move(w[static_cast<size_t>(r)].str());
  }
  in = comm.Exchange(out);
  std::vector<std::vector<std::string>> batches;
  {
    Reader r(in[0]);
    while (!r.done()) {
      const uint32_t k = r.Get<uint32_t>();
      batches.emplace_back();
      for (uint32_t i = 0; i < k; ++i) batches.back().push_back(r.GetBytes());
    }
  }
  uint64_t requests = batches.size();
  std::vector<Verdict> verdicts = SendBatches(*client, batches, opts.requests_per_rank);

  // 4. Verdicts to the owners.
  out.assign(static_cast<size_t>(P), std::string());
  {
    std::vector<Writer> w(static_cast<size_t>(P));
    for (const Verdict& v : verdicts) {
      Writer& o = w[static_cast<size_t>(OwnerOf(v.handle, P))];
      o.PutBytes(v.handle);
      o.Put<int32_t>(v.err);
      o.Put<uint32_t>(v.hsm);
      o.Put<uint8_t>(v.recalled ? 1 : 0);
    }
    for (int r = 0; r < P; ++r) out[static_cast<size_t>(r)] = std::move(w[static_cast<size_t>(r)].str());
  }
  in = comm.Exchange(out);
  for (const std::string& part : in) {
    Reader r(part);
    while (!r.done()) {
      const std::string h = r.GetBytes();
      const int err = r.Get<int32_t>();
      const uint32_t flags = r.Get<uint32_t>();
      const bool recalled = r.Get<uint8_t>() != 0;
      auto it = mine.find(h);
      if (it == mine.end() || !it->second.candidate) throw MpiFailure{EPROTO};
      it->second.err = err;
      it->second.hsm = flags;
      it->second.recalled = recalled;
      it->second.judged = true;
    }
  }

  // 5. Every path's verdict to its origin; the owner counts the files.
  uint64_t tot[8] = {};  // paths files resident recalled failed_paths failed_files requests bytes
  out.assign(static_cast<size_t>(P), std::string());
  {
    std::vector<Writer> w(static_cast<size_t>(P));
    for (auto& [h, u] : mine) {
      // Rank 0 dealt every candidate it received; one without a verdict
      // means a lost message, not a resident file.
      if (u.candidate && !u.judged && u.err == 0) u.err = EPROTO;
      ++tot[1];
      if (u.err != 0) ++tot[5];
      else if (u.recalled) {
        ++tot[3];
        tot[7] += u.size;
      } else ++tot[2];
      uint32_t flags = (u.recalled ? PDM_PRESTAGE_RECALLED : 0u) | (u.who.size() > 1 ? PDM_PRESTAGE_DUPLICATE : 0u);
      for (auto& [src, idx] : u.who) {
        Writer& o = w[static_cast<size_t>(src)];
        o.Put<uint64_t>(idx);
        o.Put<int32_t>(u.err);
        o.Put<uint32_t>(flags);
        o.Put<uint32_t>(u.hsm);
      }
    }
    for (int r = 0; r < P; ++r) out[static_cast<size_t>(r)] = std::move(w[static_cast<size_t>(r)].str());
  }
  in = comm.Exchange(out);
  for (const std::string& part : in) {
    Reader r(part);
    while (!r.done()) {
      const uint64_t idx = r.Get<uint64_t>();
      if (idx >= n) throw MpiFailure{EPROTO};
      res[idx].error = r.Get<int32_t>();
      res[idx].flags = r.Get<uint32_t>();
      res[idx].hsm_flags = r.Get<uint32_t>();
    }
  }

  int first_err = 0;
  tot[0] = n;
  for (size_t i = 0; i < n; ++i)
    if (res[i].error != 0) {
      ++tot[4];
      if (first_err == 0) first_err = res[i].error;
    }
  tot[6] = requests;
  comm.Sum(tot, 8);
  const double secs = comm.MaxDouble(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  if (results) std::copy(res.begin(), res.end(), results);
  if (stats) {
    stats->paths = tot[0];
    stats->files = tot[1];
    stats->resident = tot[2];
    stats->recalled = tot[3];
    stats->failed_paths = tot[4];
    stats->failed_files = tot[5];
    stats->requests = tot[6];
    stats->bytes = tot[7];
    stats->seconds = secs;
  }
  if (tot[4] == 0) return 0;
  errno = first_err ? first_err : EREMOTE;
  return -1;
}

}  // namespace
}  // namespace pdm::prestage

extern "C" {

void pdm_prestage_options_init(pdm_prestage_options* opts) {
  if (!opts) return;
  opts->requests_per_rank = pdm::prestage::kDefaultRequests;
  opts->batch_bytes = pdm::prestage::kDefaultBatchBytes;
}

int pdm_prestage_ex(MPI_Comm comm, const char* const* paths, size_t n, const pdm_prestage_options* opts,
                    pdm_prestage_result* results, pdm_prestage_stats* stats) {
  pdm_prestage_options o;
  pdm_prestage_options_init(&o);
  if (opts) {
    if (opts->requests_per_rank) o.requests_per_rank = opts->requests_per_rank;
    if (opts->batch_bytes) o.batch_bytes = opts->batch_bytes;
  }
  // Nothing may unwind into C. These failures are symmetric only for MPI
  // errors (every rank sees its collective fail); memory exhaustion on one
  // rank can leave the others in a collective, as in any MPI program.
  int err = 0;
  try {
    return pdm::prestage::Run(comm, paths, n, o, results, stats);
  } catch (const pdm::prestage::MpiFailure& f) {
    err = f.err;
  } catch (const std::bad_alloc&) {
    err = ENOMEM;
  } catch (...) {
    err = EIO;
  }
  if (results)
    for (size_t i = 0; i < n; ++i) results[i] = pdm_prestage_result{err, 0, 0};
  if (stats) {
    *stats = pdm_prestage_stats{};
    stats->paths = stats->failed_paths = n;
  }
  errno = err;
  return -1;
}

int pdm_prestage(MPI_Comm comm, const char* const* paths, size_t n) {
  return pdm_prestage_ex(comm, paths, n, nullptr, nullptr, nullptr);
}

}  // extern "C"
