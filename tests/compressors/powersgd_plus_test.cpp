// PowerSGD+ (docs/algorithms.md §3), driven through the GradientReducer over gloo ranks: restarts are
// the exact rank-k truncated SVD of the mean, randomized restarts approach it, between restarts it
// is PowerSGD warm-started from the restart, and the reported wire floats are what is all-reduced.
#include "lowrank/compressors/powersgd_plus.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <iostream>

#include "compressors/family_support.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;

// fp32 SVD / QR of matrices up to 12×12 with O(1) entries, against an fp64 reference.
constexpr double kSvdTol = 2e-4;
// Inputs must have σ_k − σ_{k+1} >= kMinGap·σ_1, so that the rank-k subspace is well defined and
// the fp32 error of its basis stays ~ 1e-6/kMinGap.
constexpr double kMinGap = 0.05;

Params tall_wide_square() {
  return {{"tall", at::zeros({12, 5})}, {"wide", at::zeros({5, 12})}, {"square", at::zeros({8, 8})},
          {"bias", at::zeros({5})}};
}

// Runs once per world size W = GetParam().
class PowerSgdPlusW1to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, PowerSgdPlusW1to3, ::testing::Values(1, 2, 3));

TEST_P(PowerSgdPlusW1to3, RestartEqualsTruncatedSvdOfTheMean) {
  constexpr int64_t kRank = 2, kPeriod = 3;
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (const std::string restart : {"svd", "rsvd", "rsvd_dist"}) {
      Params params = tall_wide_square();
      // oversampling 64 makes the sketch as wide as the matrix: the randomized restarts are exact too.
      GradientReducer red(params,
                          make_compressor("powersgd+", Config{{"rank", std::to_string(kRank)},
                                                              {"restart_period", std::to_string(kPeriod)},
                                                              {"restart", restart},
                                                              {"oversampling", "64"}}),
                          c, ReducerOptions().min_compression_rate(0));
      for (int64_t s = 0; s <= kPeriod; ++s) {
        std::vector<at::Tensor> mean_delta;  // Δ̄ = mean_i (g_i + e_i), EF included (not reset at restarts)
        for (size_t p = 0; p < params.size(); ++p) {
          const auto shape = params[p].second.sizes();
          at::Tensor g = testing::seeded_randn(shape, 1, c->rank(), s, p) * 0.3;
          if (shape.size() == 2) g += testing::planted(shape[0], shape[1], p);
          params[p].second.mutable_grad() = g;
          if (s % kPeriod == 0 && shape.size() == 2)
            mean_delta.push_back(testing::gathered_mean(*c, g + testing::ef_of(red, params[p].first, g)));
        }
        red.reduce();
        if (s % kPeriod != 0) continue;
        for (size_t p = 0; p < 3; ++p) {
          const at::Tensor sv = testing::singular_values(mean_delta[p]);
          ASSERT_GT((sv[kRank - 1] - sv[kRank]).item<double>(), kMinGap * sv[0].item<double>())
              << "test input has no spectral gap: " << params[p].first << " W=" << W << " s=" << s;
          EXPECT_LT(testing::max_abs_diff(params[p].second.grad(), testing::truncated_svd(mean_delta[p], kRank)),
                    kSvdTol)
              << params[p].first << " restart=" << restart << " W=" << W << " s=" << s;
        }
      }
    }
  });
}

TEST(PowerSgdPlus, BetweenRestartsItIsPowerSgdWarmStartedFromTheRestart) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w_plus = at::zeros({9, 7}), w_base = at::zeros({9, 7});
    const Config cfg{{"rank", "2"}};
    GradientReducer plus({{"w", w_plus}}, make_compressor("powersgd+", Config{{"rank", "2"}, {"restart_period", "50"}}),
                         c, ReducerOptions().min_compression_rate(0));
    w_plus.mutable_grad() = testing::seeded_randn({9, 7}, 2, c->rank(), 0);
    plus.reduce();  // s = 0: the restart
    // PowerSGD resumed from PowerSGD+'s state (step, EF buffer, Q) must then be bit-identical.
    GradientReducer base({{"w", w_base}}, make_compressor("powersgd", cfg), c, ReducerOptions().min_compression_rate(0));
    // A deliberate cross-compressor load: without the settings entry, which would refuse it.
    auto state = plus.state_dict();
    state.erase(std::remove_if(state.begin(), state.end(),
                               [](const auto& kv) { return kv.first == state_keys::kSettings; }),
                state.end());
    base.load_state_dict(state);
    for (int64_t s = 1; s < 4; ++s) {
      at::Tensor g = testing::seeded_randn({9, 7}, 2, c->rank(), s);
      w_plus.mutable_grad() = g.clone();
      w_base.mutable_grad() = g.clone();
      plus.reduce();
      base.reduce();
      EXPECT_TRUE(at::equal(w_plus.grad(), w_base.grad())) << "s=" << s;
      EXPECT_TRUE(at::equal(testing::ef_of(plus, "w", g), testing::ef_of(base, "w", g))) << "s=" << s;
    }
  });
}

// Low rank plus noise: every rank sees A + 0.2·N_i, A of rank 6 with singular values 10, 8, 6, 4,
// 3, 2; k = 3. The restart's error ‖Δ̄ − P̃P̃ᵀΔ̄‖ is compared with the SVD's over kSeeds sketches.
TEST(PowerSgdPlus, RandomizedRestartsApproachTheSvd) {
  constexpr int64_t m = 40, n = 30, k = 3;
  constexpr int kSeeds = 8;
  // p = 8, q = 2 (the defaults) leave less than 1% excess error over the SVD on this input.
  constexpr double kNearOptimal = 1e-2;
  // rsvd and rsvd_dist compute the same P̃ from the same sketch; they differ by fp32 rounding only.
  constexpr double kSameQuality = 1e-4;
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    const at::Tensor U = std::get<0>(at::linalg_qr(testing::seeded_randn({m, 6}, 99, 0, 0)));
    const at::Tensor V = std::get<0>(at::linalg_qr(testing::seeded_randn({n, 6}, 99, 0, 1)));
    const at::Tensor A = U.matmul(at::diag(at::tensor({10.f, 8.f, 6.f, 4.f, 3.f, 2.f}))).matmul(V.t());
    // Mean over seeds of e/e_svd − 1 for one (restart, p, q); also returns the per-seed errors.
    auto excess = [&](const std::string& restart, int64_t p, int64_t q, std::vector<double>* errors) {
      double total = 0;
      for (int seed = 0; seed < kSeeds; ++seed) {
        at::Tensor w = at::zeros({m, n});
        GradientReducer red({{"w", w}},
                            make_compressor("powersgd+", Config{{"rank", std::to_string(k)},
                                                                {"restart", restart},
                                                                {"oversampling", std::to_string(p)},
                                                                {"power_iters", std::to_string(q)}}),
                            c, ReducerOptions().min_compression_rate(0).seed(seed));
        w.mutable_grad() = A + 0.2 * testing::seeded_randn({m, n}, seed, c->rank(), 0, 7);
        const at::Tensor mean = testing::gathered_mean(*c, w.grad());
        red.reduce();
        const double e_svd = std::sqrt(testing::sq_norm(mean - testing::truncated_svd(mean, k)));
        const double e = std::sqrt(testing::sq_norm(mean - w.grad().to(at::kDouble)));
        if (errors) errors->push_back(e / e_svd);
        total += e / e_svd - 1;
      }
      return total / kSeeds;
    };
    for (const std::string restart : {"rsvd", "rsvd_dist"}) {
      const double p0 = excess(restart, 0, 0, nullptr), p4 = excess(restart, 4, 0, nullptr),
                   p16 = excess(restart, 16, 0, nullptr), q1 = excess(restart, 0, 1, nullptr),
                   q3 = excess(restart, 0, 3, nullptr), best = excess(restart, 8, 2, nullptr);
      if (c->rank() == 0)
        std::cout << restart << " mean excess error over the SVD: p=0,q=0 " << p0 << " | p=4 " << p4 << " | p=16 "
                  << p16 << " | q=1 " << q1 << " | q=3 " << q3 << " | p=8,q=2 " << best << "\n";
      EXPECT_GT(p0, p4) << restart;
      EXPECT_GT(p4, p16) << restart;
      EXPECT_GT(p0, q1) << restart;
      EXPECT_GT(q1, q3) << restart;
      EXPECT_LT(best, kNearOptimal) << restart;
      EXPECT_GE(best, -kSameQuality) << restart << ": better than the optimal rank-k error";
    }
    for (auto pq : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {4, 1}, {8, 2}}) {
      std::vector<double> local, dist;
      excess("rsvd", pq.first, pq.second, &local);
      excess("rsvd_dist", pq.first, pq.second, &dist);
      for (int seed = 0; seed < kSeeds; ++seed)
        EXPECT_NEAR(local[seed], dist[seed], kSameQuality) << "p=" << pq.first << " q=" << pq.second << " seed=" << seed;
    }
  });
}

// Per matrix (§8): normal k(m+n); restart svd/rsvd m·n + n·k; rsvd_dist (q+1)·ℓ·(m+n), ℓ = min(k+p, m, n).
// Model: a, b [12, 5] (one batched group), c [5, 12], conv [4, 2, 3, 3] viewed as [4, 18], bias [12]
// dense; k = 2, p = 2, q = 1, τ = 3.
TEST(PowerSgdPlus, WireFloatsEqualWhatIsAllReduced) {
  constexpr int64_t kNormal = 2 * 2 * (12 + 5) + 2 * (5 + 12) + 2 * (4 + 18) + 12;             // 158
  constexpr int64_t kRestartSvd = 2 * (12 * 5 + 5 * 2) + (5 * 12 + 12 * 2) + (4 * 18 + 18 * 2) + 12;  // 344
  constexpr int64_t kRestartDist = 2 * (2 * 4 * (12 + 5)) + 2 * 4 * (5 + 12) + 2 * 4 * (4 + 18) + 12;  // 596
  static_assert(kNormal == 158 && kRestartSvd == 344 && kRestartDist == 596, "hand arithmetic");
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    for (const std::string restart : {"svd", "rsvd", "rsvd_dist"}) {
      Params params = {{"a", at::zeros({12, 5})}, {"b", at::zeros({12, 5})}, {"c", at::zeros({5, 12})},
                       {"conv", at::zeros({4, 2, 3, 3})}, {"bias", at::zeros({12})}};
      GradientReducer red(params,
                          make_compressor("powersgd+", Config{{"rank", "2"}, {"restart_period", "3"},
                                                              {"restart", restart}, {"oversampling", "2"},
                                                              {"power_iters", "1"}}),
                          c, ReducerOptions().min_compression_rate(0));
      for (int64_t s = 0; s < 7; ++s) {
        for (size_t p = 0; p < params.size(); ++p)
          params[p].second.mutable_grad() = testing::seeded_randn(params[p].second.sizes(), 3, c->rank(), s, p);
        const int64_t before = c->stats().collectives;
        red.reduce();
        const bool is_restart = s % 3 == 0;
        const int64_t want = !is_restart ? kNormal : (restart == "rsvd_dist" ? kRestartDist : kRestartSvd);
        // dense + P + Q; restart: dense + Δ̄ + Q, or dense + (2q+2) sketch collectives.
        const int64_t want_collectives = is_restart && restart == "rsvd_dist" ? 1 + 4 : 3;
        EXPECT_EQ(red.stats().last_floats_sent, want) << restart << " s=" << s;
        EXPECT_EQ(red.expected_bytes(s) / 4, want) << restart << " s=" << s;
        EXPECT_EQ(c->stats().collectives - before, want_collectives) << restart << " s=" << s;
      }
    }
  });
}

TEST(PowerSgdPlus, ConstructsFromConfigAndRejectsBadOptions) {
  auto c = make_compressor("powersgd+", Config{});
  EXPECT_EQ(c->name(), "powersgd+");
  EXPECT_TRUE(testing::contains(c->describe(), "restart_period=100")) << c->describe();
  EXPECT_TRUE(c->traits().default_error_feedback);
  // The configuration the counterexample uses.
  auto ce = make_compressor("powersgd+", Config{{"rank", "1"}, {"restart_period", "10"}});
  EXPECT_EQ(ce->wire_bytes(2, 2, 0, at::kFloat) / 4, 2 * 2 + 2 * 1);
  EXPECT_EQ(ce->wire_bytes(2, 2, 1, at::kFloat) / 4, 1 * (2 + 2));
  EXPECT_EQ(ce->wire_bytes(2, 2, 10, at::kFloat) / 4, 2 * 2 + 2 * 1);

  std::string msg = testing::error_of([] { make_compressor("powersgd+", Config{{"restart_period", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "restart_period") && testing::contains(msg, "got 0")) << msg;
  msg = testing::error_of([] { make_compressor("powersgd+", Config{{"restart", "qr"}}); });
  EXPECT_TRUE(testing::contains(msg, "'qr'") && testing::contains(msg, "svd, rsvd, rsvd_dist")) << msg;
  msg = testing::error_of([] { make_compressor("powersgd+", Config{{"oversampling", "-1"}}); });
  EXPECT_TRUE(testing::contains(msg, "oversampling") && testing::contains(msg, "-1")) << msg;
  msg = testing::error_of([] { make_compressor("powersgd+", Config{{"power_iters", "-2"}}); });
  EXPECT_TRUE(testing::contains(msg, "power_iters") && testing::contains(msg, "-2")) << msg;
  msg = testing::error_of([] { make_compressor("powersgd+", Config{{"powersgd_mode", "alternating"}}); });
  EXPECT_TRUE(testing::contains(msg, "two_allreduce") && testing::contains(msg, "'alternating'")) << msg;
  msg = testing::error_of([] { make_compressor("powersgd+", Config{{"restart_perod", "5"}}); });
  EXPECT_TRUE(testing::contains(msg, "restart_perod")) << msg;
}

}  // namespace
}  // namespace lowrank
