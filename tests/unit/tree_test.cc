#include "cluster/tree.h"

#include <gtest/gtest.h>

#include <set>

namespace pdm {
namespace {

// Every position except the root is reached exactly once, through its parent.
TEST(KnomialTree, CoversEveryNodeOnceForManySizesAndRadixes) {
  for (int k = 2; k <= 8; ++k)
    for (int n = 1; n <= 70; ++n) {
      std::set<int> seen{0};
      std::vector<int> frontier{0};
      int depth = 0;
      while (!frontier.empty()) {
        std::vector<int> next;
        for (int p : frontier)
          for (int c : KnomialChildren(p, n, k)) {
            EXPECT_TRUE(seen.insert(c).second) << "n=" << n << " k=" << k << " child " << c << " twice";
            EXPECT_EQ(KnomialParent(c, n, k), p) << "n=" << n << " k=" << k << " c=" << c;
            next.push_back(c);
          }
        frontier = next;
        ++depth;
      }
      EXPECT_EQ(static_cast<int>(seen.size()), n) << "n=" << n << " k=" << k;
      // log_k(n) levels below the root.
      int levels = 0;
      for (long p = 1; p < n; p *= k) ++levels;
      EXPECT_LE(depth - 1, levels) << "n=" << n << " k=" << k;
    }
}

TEST(KnomialTree, BinomialShape) {
  EXPECT_EQ(KnomialChildren(0, 8, 2), (std::vector<int>{4, 2, 1}));
  EXPECT_EQ(KnomialChildren(4, 8, 2), (std::vector<int>{6, 5}));
  EXPECT_EQ(KnomialChildren(7, 8, 2), std::vector<int>{});
  EXPECT_EQ(KnomialParent(6, 8, 2), 4);
  EXPECT_EQ(KnomialParent(0, 8, 2), -1);
}

TEST(KnomialTree, RejectsBadArguments) {
  EXPECT_TRUE(KnomialChildren(0, 4, 1).empty());
  EXPECT_TRUE(KnomialChildren(5, 4, 2).empty());
  EXPECT_EQ(KnomialParent(9, 4, 2), -1);
}

}  // namespace
}  // namespace pdm
