// The low-rank family (powersgd+, greedylore, galore) on the reducer's other paths: batching same-
// shape matrices or not, and fp64 parameters, must compute the same thing as the batched fp32 run.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compressors/family_support.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

// fp32 against fp64 and batched against unbatched LAPACK calls, on ≤ 9×9 matrices with entries O(1)–O(10).
constexpr double kTol = 2e-4;

struct ReducerRun {
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::unique_ptr<GradientReducer> reducer;
};

// Configurations without per-step random draws, so batching (which renumbers the shared random
// streams) cannot change the result.
TEST(LowRankFamily, BatchingAndFp64GiveTheSameResult) {
  const std::vector<std::pair<std::string, Config>> configs = {
      {"powersgd+", Config{{"rank", "2"}, {"restart_period", "3"}}},
      {"greedylore", Config{{"rank", "2"}, {"refresh_period", "3"}, {"dense_steps", "1"}, {"scores", "exact"}}},
      {"galore", Config{{"rank", "2"}, {"refresh_period", "3"}}},
  };
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& nc : configs) {
      std::vector<ReducerRun> runs(3);  // batched fp32, unbatched fp32, batched fp64
      for (size_t r = 0; r < runs.size(); ++r) {
        const auto dtype = r == 2 ? at::kDouble : at::kFloat;
        runs[r].params = {{"a", at::zeros({9, 6}, dtype)}, {"b", at::zeros({9, 6}, dtype)},
                          {"c", at::zeros({6, 9}, dtype)}, {"bias", at::zeros({6}, dtype)}};
        runs[r].reducer = std::make_unique<GradientReducer>(
            runs[r].params, make_compressor(nc.first, nc.second), c,
            ReducerOptions().min_compression_rate(0).batch_same_shape(r != 1));
      }
      EXPECT_NE(runs[0].reducer->describe(), runs[1].reducer->describe());  // 2 vs 3 shape groups
      for (int64_t s = 0; s < 5; ++s) {
        for (auto& run : runs) {
          for (size_t p = 0; p < run.params.size(); ++p) {
            at::Tensor& t = run.params[p].second;
            at::Tensor g = 0.3 * testing::seeded_randn(t.sizes(), 9, c->rank(), s, p);
            if (t.dim() == 2) g += testing::planted(t.size(0), t.size(1), p);
            t.mutable_grad() = g.to(t.scalar_type());
          }
          run.reducer->reduce();
        }
        for (size_t p = 0; p < runs[0].params.size(); ++p) {
          const at::Tensor want = runs[0].params[p].second.grad();
          EXPECT_LT(testing::max_abs_diff(runs[1].params[p].second.grad(), want), kTol)
              << nc.first << " unbatched, " << runs[0].params[p].first << " s=" << s;
          EXPECT_EQ(runs[2].params[p].second.grad().scalar_type(), at::kDouble);
          EXPECT_LT(testing::max_abs_diff(runs[2].params[p].second.grad(), want), kTol)
              << nc.first << " fp64, " << runs[0].params[p].first << " s=" << s;
        }
      }
    }
  });
}

// Runs once per world size W = GetParam().
class LowRankFamilyW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, LowRankFamilyW2to3, ::testing::Values(2, 3));

// Error feedback telescopes for every EF member of the family (§1.4), through refresh/restart steps
// (s = 0, 3, 6 with τ = 3): Σ_t ĝ(t) + mean_i e_i(T) = Σ_t mean_i g_i(t). A refresh delivers the
// mean of the corrected gradients and zeroes e, so the identity must survive it too. A wrong
// residual (wrong side, missing transpose, R̄ instead of R_i, e not zeroed) breaks it by O(1).
TEST_P(LowRankFamilyW2to3, ErrorFeedbackTelescopesThroughRefreshes) {
  // fp32 rounding over 8 steps of O(1)–O(10) entries, relative to 1 + max |Σ_t mean g|; seen ~1e-6.
  constexpr double kTelescopeTol = 1e-4;
  constexpr int64_t kSteps = 8;  // the last step (s = 7) is not a refresh, so e is non-zero
  std::vector<std::pair<std::string, Config>> configs;
  // refresh_input=corrected: the default discard refresh drops e_i unsent, so it does not telescope.
  const Config greedy{{"rank", "2"}, {"refresh_period", "3"}, {"dense_steps", "0"}, {"refresh_input", "corrected"}};
  for (const char* scores : {"probe", "shared_probe", "local_energy", "uniform_probe", "exact"})
    configs.push_back({"greedylore", Config(greedy).set("scores", scores)});
  configs.push_back({"greedylore", Config(greedy).set("select", "random")});
  // GreedyLore's own dense warm-up (s = 0, 1), then refreshes at s = 2 and 5: e = 0 through the warm-up
  configs.push_back({"greedylore", Config(greedy).set("dense_steps", "2")});
  for (const char* restart : {"svd", "rsvd", "rsvd_dist"})
    configs.push_back({"powersgd+", Config{{"rank", "2"}, {"restart_period", "3"}, {"restart", restart}}});
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& nc : configs) {
      std::vector<std::pair<std::string, at::Tensor>> params = {
          {"tall", at::zeros({9, 6})}, {"wide", at::zeros({6, 9})}, {"conv", at::zeros({4, 2, 3})}, {"bias", at::zeros({6})}};
      GradientReducer red(params, make_compressor(nc.first, nc.second), c,
                          ReducerOptions().min_compression_rate(0).seed(5));
      ASSERT_EQ(red.compressed_names().size(), 3u) << nc.first;
      std::vector<at::Tensor> sent, truth;
      for (const auto& p : params) {
        sent.push_back(at::zeros(p.second.sizes(), at::kDouble));
        truth.push_back(at::zeros(p.second.sizes(), at::kDouble));
      }
      for (int64_t s = 0; s < kSteps; ++s) {
        for (size_t p = 0; p < params.size(); ++p) {
          at::Tensor& t = params[p].second;
          at::Tensor g = testing::seeded_randn(t.sizes(), 11, c->rank(), s, p);
          if (t.dim() == 2) g += testing::planted(t.size(0), t.size(1), p);
          t.mutable_grad() = g;
          truth[p] += testing::gathered_mean(*c, g);
        }
        red.reduce();
        for (size_t p = 0; p < params.size(); ++p) sent[p] += params[p].second.grad().to(at::kDouble);
      }
      double residual_sq = 0;
      for (size_t p = 0; p < params.size(); ++p) {
        const at::Tensor& t = params[p].second;
        const at::Tensor mean_e = testing::gathered_mean(*c, testing::ef_of(red, params[p].first, t));
        residual_sq += mean_e.pow(2).sum().item<double>();
        const double scale = 1 + truth[p].abs().max().item<double>();
        EXPECT_LE((sent[p] + mean_e - truth[p]).abs().max().item<double>(), kTelescopeTol * scale)
            << red.describe() << " W=" << W << " param=" << params[p].first;
      }
      EXPECT_GT(std::sqrt(residual_sq), 0.1) << red.describe() << " W=" << W << ": e is ~0, the check is vacuous";
    }
  });
}

}  // namespace
}  // namespace lowrank
