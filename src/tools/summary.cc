#include "tools/summary.h"

#include <algorithm>
#include <vector>

#include "tools/select.h"
#include "tools/units.h"

namespace pdm::tools {
namespace {
constexpr char kTypes[] = "fdlpscb?";
const char* const kTypeNames[] = {"files", "dirs", "links", "fifos", "sockets", "char devs", "block devs", "other"};
}  // namespace

int Summary::TypeIndex(char t) {
  for (int i = 0; i < 7; ++i)
    if (kTypes[i] == t) return i;
  return 7;
}

void Summary::Add(const Entry& e) {
  ++entries_;
  ++types_[TypeIndex(e.type)];
  const uint64_t b = e.is_dir() ? 0 : e.size;
  bytes_ += b;
  auto& u = users_[e.uid];
  ++u.entries;
  u.bytes += b;
}

uint64_t Summary::count(char type) const { return types_[TypeIndex(type)]; }

void Summary::Reduce(MPI_Comm comm) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  uint64_t local[10] = {entries_, bytes_};
  std::copy(std::begin(types_), std::end(types_), local + 2);
  uint64_t sums[10] = {};
  MPI_Reduce(local, sums, 10, MPI_UINT64_T, MPI_SUM, 0, comm);
  std::vector<uint64_t> mine;
  for (const auto& [uid, t] : users_) {
    mine.push_back(uid);
    mine.push_back(t.entries);
    mine.push_back(t.bytes);
  }
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(size), displs(size);
  MPI_Gather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, comm);
  std::vector<uint64_t> all;
  if (rank == 0) {
    int total = 0;
    for (int r = 0; r < size; ++r) {
      displs[r] = total;
      total += counts[r];
    }
    all.resize(static_cast<size_t>(total));
  }
  MPI_Gatherv(mine.data(), n, MPI_UINT64_T, all.data(), counts.data(), displs.data(), MPI_UINT64_T, 0, comm);
  if (rank != 0) return;
  entries_ = sums[0];
  bytes_ = sums[1];
  std::copy(sums + 2, sums + 10, types_);
  users_.clear();
  for (size_t i = 0; i + 2 < all.size(); i += 3) {
    auto& u = users_[static_cast<uint32_t>(all[i])];
    u.entries += all[i + 1];
    u.bytes += all[i + 2];
  }
}

namespace {
std::vector<std::pair<uint32_t, UserTotals>> TopUsers(const std::map<uint32_t, UserTotals>& users, size_t n) {
  std::vector<std::pair<uint32_t, UserTotals>> v(users.begin(), users.end());
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
    return a.second.bytes != b.second.bytes ? a.second.bytes > b.second.bytes : a.first < b.first;
  });
  if (v.size() > n) v.resize(n);
  return v;
}
}  // namespace

std::string Summary::Human(size_t top_users) const {
  std::string s = FormatCount(entries_) + " entries:";
  bool first = true;
  for (int i = 0; i < 8; ++i) {
    if (types_[i] == 0) continue;
    s += std::string(first ? " " : ", ") + FormatCount(types_[i]) + " " + kTypeNames[i];
    first = false;
  }
  s += "; " + FormatBytes(bytes_) + "\n";
  const auto top = TopUsers(users_, top_users);
  if (!top.empty()) s += "top users by bytes:\n";
  for (const auto& [uid, t] : top) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-16s %12s entries %12s\n", UserName(uid).c_str(), FormatCount(t.entries).c_str(),
                  FormatBytes(t.bytes).c_str());
    s += line;
  }
  return s;
}

nlohmann::json Summary::Json(size_t top_users) const {
  nlohmann::json types = nlohmann::json::object();
  for (int i = 0; i < 8; ++i) types[std::string(1, kTypes[i])] = types_[i];
  nlohmann::json top = nlohmann::json::array();
  for (const auto& [uid, t] : TopUsers(users_, top_users))
    top.push_back({{"user", UserName(uid)}, {"uid", uid}, {"entries", t.entries}, {"bytes", t.bytes}});
  return {{"entries", entries_}, {"bytes", bytes_}, {"types", types}, {"top_users", top}};
}

}  // namespace pdm::tools
