#include "cluster/tree.h"

namespace pdm {

namespace {
// Place value of pos's lowest non-zero base-k digit; for the root, the first
// power of k that is >= n.
long LowestDigitPlace(int pos, int n, int k) {
  long place = 1;
  while (place < n) {
    if ((pos / place) % k != 0) return place;
    place *= k;
  }
  return place;
}
}  // namespace

std::vector<int> KnomialChildren(int pos, int n, int k) {
  std::vector<int> out;
  if (k < 2 || pos < 0 || pos >= n) return out;
  for (long place = LowestDigitPlace(pos, n, k) / k; place >= 1; place /= k)
    for (int j = 1; j < k; ++j) {
      long c = pos + j * place;
      if (c < n) out.push_back(static_cast<int>(c));
    }
  return out;
}

int KnomialParent(int pos, int n, int k) {
  if (k < 2 || pos <= 0 || pos >= n) return -1;
  long place = LowestDigitPlace(pos, n, k);
  int digit = static_cast<int>((pos / place) % k);
  return static_cast<int>(pos - digit * place);
}

}  // namespace pdm
