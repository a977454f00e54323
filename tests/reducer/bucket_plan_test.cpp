#include "lowrank/reducer/bucket_plan.h"

#include <gtest/gtest.h>

namespace lowrank {
namespace {

using Plan = std::vector<std::vector<size_t>>;

std::vector<BucketPlanEntry> sizes(std::initializer_list<int64_t> bytes, at::ScalarType dtype = at::kFloat) {
  std::vector<BucketPlanEntry> out;
  for (int64_t b : bytes) out.push_back({b, dtype});
  return out;
}

// Reverse registration order, closed once a bucket reaches the cap; members listed ascending.
TEST(BucketPlan, FillsBucketsInReverseOrderUpToTheCap) {
  EXPECT_EQ(plan_buckets(sizes({10, 10, 10, 10, 10}), 20), (Plan{{3, 4}, {1, 2}, {0}}));
  EXPECT_EQ(plan_buckets(sizes({10, 30, 5, 5}), 20), (Plan{{1, 2, 3}, {0}}));
  EXPECT_EQ(plan_buckets(sizes({100, 1, 1}), 50), (Plan{{0, 1, 2}}));  // the big one closes the first bucket
}

TEST(BucketPlan, ZeroCapMeansOneBucket) {
  EXPECT_EQ(plan_buckets(sizes({10, 10, 10}), 0), (Plan{{0, 1, 2}}));
  EXPECT_EQ(plan_buckets(sizes({}), 10), (Plan{}));
}

// Different dtypes never share a bucket; buckets launch by their last parameter.
TEST(BucketPlan, DtypesNeverShareABucket) {
  std::vector<BucketPlanEntry> p = {{8, at::kDouble}, {4, at::kFloat}, {8, at::kDouble}, {4, at::kFloat}};
  EXPECT_EQ(plan_buckets(p, 0), (Plan{{1, 3}, {0, 2}}));
  EXPECT_EQ(plan_buckets(p, 8), (Plan{{1, 3}, {2}, {0}}));
}

// Every parameter lands in exactly one bucket, whatever the cap.
TEST(BucketPlan, EveryParameterExactlyOnce) {
  auto p = sizes({7, 3, 9, 1, 4, 4, 12, 2});
  for (int64_t cap : {0, 1, 5, 8, 13, 100}) {
    std::vector<int> seen(p.size(), 0);
    for (const auto& b : plan_buckets(p, cap)) {
      EXPECT_FALSE(b.empty());
      EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
      for (size_t i : b) seen[i]++;
    }
    for (int s : seen) EXPECT_EQ(s, 1) << "cap " << cap;
  }
}

}  // namespace
}  // namespace lowrank
