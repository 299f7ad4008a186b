// k-nomial broadcast tree over positions 0..n-1, position 0 the root.
//
// Position p's parent is p with its lowest non-zero base-k digit cleared; its
// children are p + j*k^l for every level l below that digit and j in 1..k-1.
// Depth is ceil(log_k n), so an SM broadcast costs O(log N) hops, and the root
// sends to at most (k-1)*log_k(n) children. Positions map to ranks through the
// member list carried in each Update (wire/cluster.fbs).
#pragma once

#include <vector>

namespace pdm {

// Children of `pos`, farthest subtree first (so big subtrees start early).
std::vector<int> KnomialChildren(int pos, int n, int k);
// Parent of `pos`; -1 for the root.
int KnomialParent(int pos, int n, int k);

}  // namespace pdm
