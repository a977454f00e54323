#include "lowrank/reducer/gradient_reducer.h"

#include <gtest/gtest.h>

#include "lowrank/compressors/registry.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

// fp32 rounding of a handful of bmm/orth steps on O(10) entries.
constexpr double kExactTol = 1e-4;

TEST(GradientReducer, PowerSgdIsExactWhenTheMeanHasRankAtMostR) {
  for (int W : {1, 2, 3, 4}) {
    testing::run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
      at::Tensor w = at::zeros({8, 6});
      at::Tensor b = at::zeros({6});
      GradientReducer red({{"w", w}, {"b", b}}, make_compressor("powersgd", Config{{"rank", "2"}}), c,
                          ReducerOptions().min_compression_rate(0));
      // Every rank's gradient lies in the same 2-D column space: the mean has rank <= 2.
      at::Tensor u = at::arange(8, at::kFloat).unsqueeze(1);
      at::Tensor v = at::ones({8, 1});
      const double r = c->rank();
      w.mutable_grad() = u.matmul(at::full({1, 6}, r + 1)) + v.matmul(at::arange(6, at::kFloat).unsqueeze(0) * (r - 1));
      b.mutable_grad() = at::full({6}, r);
      at::Tensor want_w = at::zeros({8, 6});
      for (int q = 0; q < W; ++q)
        want_w += u.matmul(at::full({1, 6}, q + 1.0)) + v.matmul(at::arange(6, at::kFloat).unsqueeze(0) * (q - 1.0));
      want_w /= W;
      red.reduce();
      EXPECT_LT((w.grad() - want_w).abs().max().item<double>(), kExactTol) << "W=" << W;
      EXPECT_TRUE(at::allclose(b.grad(), at::full({6}, (W - 1) / 2.0)));
      EXPECT_EQ(red.stats().last_floats_sent, red.expected_floats(0));
      EXPECT_EQ(red.stats().last_floats_sent, 2 * (8 + 6) + 6);
    });
  }
}

}  // namespace
}  // namespace lowrank
