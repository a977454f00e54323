// GaLore-style lazy SVD (docs/algorithms.md §5), driven through the GradientReducer over gloo ranks: no
// EF by default, normal steps output α·PPᵀḡ for the stored P, refreshes per refresh_output, EF
// (when asked for) telescopes with α, and wire floats equal what is all-reduced.
#include "lowrank/compressors/galore.h"

#include <gtest/gtest.h>

#include "compressors/family_support.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;

// fp32 sums and products of O(1)–O(10) entries of ≤ 10×10 matrices against an fp64 reference.
constexpr double kTol = 1e-4;

// The view whose rows carry the basis: side=larger puts max(m, n) in the rows, side=smaller min(m, n).
at::Tensor orient(const at::Tensor& M, const std::string& side) {
  const bool transpose = side == "larger" ? M.size(0) < M.size(1) : M.size(0) > M.size(1);
  return transpose ? M.t() : M;
}

Params tall_and_wide() { return {{"tall", at::zeros({10, 4})}, {"wide", at::zeros({4, 10})}}; }

at::Tensor gradient(const at::Tensor& param, int64_t rank, int64_t step, int64_t salt) {
  return testing::planted(param.size(0), param.size(1), salt) + 0.3 * testing::seeded_randn(param.sizes(), 8, rank, step, salt);
}

TEST(GaLore, NoErrorFeedbackByDefault) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({8, 5});
    GradientReducer red({{"w", w}}, make_compressor("galore", Config{{"rank", "2"}, {"refresh_period", "3"}}), c,
                        ReducerOptions().min_compression_rate(0));
    EXPECT_FALSE(red.error_feedback());
    for (int64_t s = 0; s < 3; ++s) {
      w.mutable_grad() = gradient(w, c->rank(), s, 0);
      red.reduce();
    }
    for (const auto& kv : red.state_dict()) EXPECT_NE(kv.first.rfind("ef/", 0), 0u) << kv.first;
    EXPECT_EQ(red.stats().ef_norm, 0.0);
  });
}

// With EF asked for (the ablation of §5), Σ_s ĝ(s) + mean_i e_i = Σ_s mean_i g_i(s) exactly in
// exact arithmetic, α included: the residual counts α·PPᵀΔ_i as what was sent.
TEST(GaLore, ErrorFeedbackWhenAskedForTelescopesWithTheScale) {
  testing::run_ranks_shared(3, [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({7, 9});
    GradientReducer red({{"w", w}},
                        make_compressor("galore", Config{{"rank", "2"}, {"refresh_period", "3"}, {"galore_scale", "0.5"}}),
                        c, ReducerOptions().min_compression_rate(0).error_feedback(true));
    EXPECT_TRUE(red.error_feedback());
    at::Tensor sent = at::zeros({7, 9}, at::kDouble), mean_g = at::zeros({7, 9}, at::kDouble);
    for (int64_t s = 0; s < 5; ++s) {
      w.mutable_grad() = gradient(w, c->rank(), s, 1);
      mean_g += testing::gathered_mean(*c, w.grad());
      red.reduce();
      sent += w.grad().to(at::kDouble);
    }
    const at::Tensor mean_e = testing::gathered_mean(*c, testing::ef_of(red, "w", w));
    EXPECT_GT(testing::sq_norm(mean_e), 1.0);  // the buffer is in play
    EXPECT_LT(testing::max_abs_diff(sent + mean_e, mean_g), kTol);
  });
}

// Runs once per world size W = GetParam().
class GaLoreW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, GaLoreW2to3, ::testing::Values(2, 3));

// Normal steps: ĝ = α·P Pᵀ ḡ with P the stored projector (oriented per side); refresh steps:
// projected gives α·(rank-k truncated SVD of Ḡ), dense gives Ḡ.
TEST_P(GaLoreW2to3, OutputIsTheScaledProjectionOfTheMean) {
  constexpr int64_t kRank = 2, kPeriod = 3;
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (const std::string side : {"larger", "smaller"})
      for (const std::string output : {"projected", "dense"})
        {
          const double alpha = output == "projected" ? 0.5 : 1.0;  // both scales reach the normal steps
          Params params = tall_and_wide();
          const Config cfg{{"rank", std::to_string(kRank)}, {"refresh_period", std::to_string(kPeriod)},
                           {"side", side}, {"refresh_output", output}, {"galore_scale", std::to_string(alpha)}};
          GradientReducer red(params, make_compressor("galore", cfg), c, ReducerOptions().min_compression_rate(0));
          const std::string label = red.compressor().describe() + " W=" + std::to_string(W);
          for (int64_t s = 0; s < 5; ++s) {
            std::vector<at::Tensor> mean;
            for (size_t p = 0; p < params.size(); ++p) {
              params[p].second.mutable_grad() = gradient(params[p].second, c->rank(), s, p);
              mean.push_back(testing::gathered_mean(*c, params[p].second.grad()));
            }
            red.reduce();
            for (size_t p = 0; p < params.size(); ++p) {
              const std::string& name = params[p].first;
              const at::Tensor out = params[p].second.grad();
              EXPECT_TRUE(testing::same_on_all_ranks(*c, out)) << label << " " << name << " s=" << s;
              const at::Tensor P = testing::state_of(red, name, "P").to(at::kDouble);
              ASSERT_EQ(P.size(0), side == "larger" ? 10 : 4) << label << " " << name;
              ASSERT_EQ(P.size(1), kRank) << label << " " << name;
              at::Tensor want;
              if (s % kPeriod != 0) {
                want = alpha * P.matmul(P.t()).matmul(orient(mean[p], side));
              } else if (output == "projected") {
                want = alpha * orient(testing::truncated_svd(mean[p], kRank), side);
              } else {
                want = orient(mean[p], side);
              }
              EXPECT_LT(testing::max_abs_diff(orient(out, side), want), kTol) << label << " " << name << " s=" << s;
            }
          }
        }
  });
}

// Per matrix (§8): normal k·min(m, n) (side=smaller: k·max(m, n)), refresh m·n. Model: a, b [12, 5]
// (one batched group), c [5, 12], conv [4, 2, 3, 3] = [4, 18], bias [12] dense; k = 2, τ = 3.
TEST(GaLore, WireFloatsEqualWhatIsAllReduced) {
  constexpr int64_t kRefresh = 3 * (12 * 5) + 4 * 18 + 12;          // 264
  constexpr int64_t kLarger = 3 * (2 * 5) + 2 * 4 + 12;             // 50
  constexpr int64_t kSmaller = 3 * (2 * 12) + 2 * 18 + 12;          // 120
  static_assert(kRefresh == 264 && kLarger == 50 && kSmaller == 120, "hand arithmetic");
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    for (const std::string side : {"larger", "smaller"}) {
      Params params = {{"a", at::zeros({12, 5})}, {"b", at::zeros({12, 5})}, {"c", at::zeros({5, 12})},
                       {"conv", at::zeros({4, 2, 3, 3})}, {"bias", at::zeros({12})}};
      GradientReducer red(params,
                          make_compressor("galore", Config{{"rank", "2"}, {"refresh_period", "3"}, {"side", side}}), c,
                          ReducerOptions().min_compression_rate(0));
      for (int64_t s = 0; s < 5; ++s) {
        for (size_t p = 0; p < params.size(); ++p)
          params[p].second.mutable_grad() = testing::seeded_randn(params[p].second.sizes(), 6, c->rank(), s, p);
        const int64_t before = c->stats().collectives;
        red.reduce();
        const int64_t want = s % 3 == 0 ? kRefresh : (side == "larger" ? kLarger : kSmaller);
        EXPECT_EQ(red.stats().last_floats_sent, want) << side << " s=" << s;
        EXPECT_EQ(red.expected_bytes(s) / 4, want) << side << " s=" << s;
        EXPECT_EQ(c->stats().collectives - before, 2) << side << " s=" << s;  // dense + (Ḡ or R)
      }
    }
  });
}

TEST(GaLore, ConstructsFromConfigAndRejectsBadOptions) {
  auto c = make_compressor("galore", Config{});
  EXPECT_EQ(c->name(), "galore");
  EXPECT_FALSE(c->traits().default_error_feedback);
  EXPECT_EQ(c->size_test_bytes(6, 20) / 4, 1 * 6);  // k·min(m, n)
  EXPECT_EQ(make_compressor("galore", Config{{"side", "smaller"}})->size_test_bytes(6, 20) / 4, 1 * 20);

  std::string msg = testing::error_of([] { make_compressor("galore", Config{{"refresh_period", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "refresh_period") && testing::contains(msg, "got 0")) << msg;
  msg = testing::error_of([] { make_compressor("galore", Config{{"side", "middle"}}); });
  EXPECT_TRUE(testing::contains(msg, "'middle'") && testing::contains(msg, "larger, smaller")) << msg;
  msg = testing::error_of([] { make_compressor("galore", Config{{"refresh_output", "full"}}); });
  EXPECT_TRUE(testing::contains(msg, "'full'") && testing::contains(msg, "projected, dense")) << msg;
  msg = testing::error_of([] { make_compressor("galore", Config{{"galore_scale", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "galore_scale") && testing::contains(msg, "got 0")) << msg;
}

}  // namespace
}  // namespace lowrank
