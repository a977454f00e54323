// ReducerOptions::norm_stats: turning the per-step norm statistics off changes nothing but the
// statistics (the counterexample simulation turns them off to save three .item() per step).
#include <gtest/gtest.h>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {
namespace {

TEST(ReducerNormStats, OffLeavesGradientsAndEfUnchangedAndStatsZero) {
  for (uint64_t seed = 0; seed < 5; ++seed) {
    auto comm_on = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
    auto comm_off = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
    at::Tensor w_on = at::zeros({6, 5}), w_off = at::zeros({6, 5});
    GradientReducer on({{"w", w_on}}, make_compressor("powersgd"), comm_on, ReducerOptions().min_compression_rate(0));
    GradientReducer off({{"w", w_off}}, make_compressor("powersgd"), comm_off,
                        ReducerOptions().min_compression_rate(0).norm_stats(false));
    at::manual_seed(seed);
    for (int step = 0; step < 3; ++step) {
      at::Tensor g = at::randn({6, 5});
      w_on.mutable_grad() = g.clone();
      w_off.mutable_grad() = g.clone();
      on.reduce();
      off.reduce();
      EXPECT_TRUE(at::equal(w_on.grad(), w_off.grad())) << "seed " << seed << " step " << step;
      EXPECT_GT(on.stats().ef_norm, 0.0) << "seed " << seed;  // rank 1 of a random 6×5: a residual is left
      EXPECT_EQ(off.stats().ef_norm, 0.0) << "seed " << seed;
      EXPECT_EQ(off.stats().relative_error, 0.0) << "seed " << seed;
      EXPECT_EQ(off.stats().last_floats_sent, on.stats().last_floats_sent) << "seed " << seed;
    }
    const auto sd_on = on.state_dict(), sd_off = off.state_dict();
    ASSERT_EQ(sd_on.size(), sd_off.size());
    for (size_t i = 0; i < sd_on.size(); ++i) {
      EXPECT_EQ(sd_on[i].first, sd_off[i].first);
      if (sd_on[i].first == state_keys::kStats) continue;  // holds the norms themselves
      EXPECT_TRUE(at::equal(sd_on[i].second, sd_off[i].second)) << sd_on[i].first << ", seed " << seed;
    }
  }
}

}  // namespace
}  // namespace lowrank
