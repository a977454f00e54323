// GreedyLore (docs/algorithms.md §4), driven through the GradientReducer over gloo ranks: contraction
// with exact scores at every step and on average with probes, identical selections on every rank,
// dense refreshes, the tie rule, every variant's output form, and wire floats.
#include "lowrank/compressors/greedylore.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "lowrank/launch/train_job.h"

#include <iostream>
#include <limits>
#include <string>

#include "compressors/family_support.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;

// fp32 sums and products of O(1) entries against an fp64 reference.
constexpr double kMeanTol = 1e-5;
// Relative slack on ‖·‖² identities and bounds: fp32 rounding of a few products of ≤ 12×12 matrices.
constexpr double kRelTol = 1e-4;

at::Tensor orient(const at::Tensor& M) { return M.size(0) > M.size(1) ? M.t() : M; }

// The tests here are about the steps from the first refresh on: no dense warm-up unless a test asks.
std::unique_ptr<Compressor> greedylore(Config cfg) {
  if (!cfg.has("dense_steps")) cfg.set("dense_steps", "0");
  return make_compressor("greedylore", cfg);
}

// Runs once per world size W = GetParam().
class GreedyLoreW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, GreedyLoreW2to3, ::testing::Values(2, 3));

// With scores=exact, every non-refresh step keeps the k most energetic directions of the complete
// basis U: ‖Δ̄ − ĝ‖² = ‖Δ̄‖² − (top-k row energies of UᵀΔ̄) ≤ (1 − k/a)‖Δ̄‖², however stale U is.
TEST_P(GreedyLoreW2to3, ExactScoresContractEveryStep) {
  constexpr int64_t kRank = 2, kPeriod = 4, kSteps = 9;
  constexpr int kSeeds = 3;
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (int seed = 0; seed < kSeeds; ++seed) {
      SCOPED_TRACE("seed=" + std::to_string(seed) + " W=" + std::to_string(W));
      Params params = {{"tall", at::zeros({10, 6})}, {"wide", at::zeros({6, 10})}, {"square", at::zeros({7, 7})}};
      GradientReducer red(params,
                          greedylore(Config{{"rank", "2"}, {"refresh_period", std::to_string(kPeriod)},
                                            {"scores", "exact"}}),
                          c, ReducerOptions().min_compression_rate(0).seed(seed));
      for (int64_t s = 0; s < kSteps; ++s) {
        std::vector<at::Tensor> mean_delta;
        for (size_t p = 0; p < params.size(); ++p) {
          at::Tensor g = testing::seeded_randn(params[p].second.sizes(), seed, c->rank(), s, p);
          params[p].second.mutable_grad() = g;
          mean_delta.push_back(testing::gathered_mean(*c, g + testing::ef_of(red, params[p].first, g)));
        }
        red.reduce();
        for (size_t p = 0; p < params.size(); ++p) {
          const std::string& name = params[p].first;
          const at::Tensor out = params[p].second.grad();
          EXPECT_TRUE(testing::same_on_all_ranks(*c, out)) << name << " s=" << s;
          if (s % kPeriod == 0) {  // refresh: the dense mean, and E_i = 0
            EXPECT_LT(testing::max_abs_diff(out, mean_delta[p]), kMeanTol) << name << " s=" << s;
            EXPECT_EQ(testing::sq_norm(testing::ef_of(red, name, out)), 0.0) << name << " s=" << s;
            continue;
          }
          const double a = std::min(out.size(0), out.size(1));
          const double total = testing::sq_norm(mean_delta[p]);
          const double err = testing::sq_norm(mean_delta[p] - out.to(at::kDouble));
          EXPECT_LE(err, (1 - kRank / a) * total * (1 + kRelTol)) << name << " s=" << s;
          const at::Tensor U = testing::state_of(red, name, "U").to(at::kDouble);  // [a, a]
          const at::Tensor energy = U.t().matmul(orient(mean_delta[p])).pow(2).sum(1);
          const double kept = std::get<0>(energy.topk(kRank)).sum().item<double>();
          EXPECT_NEAR(err, total - kept, kRelTol * total) << name << " s=" << s;
        }
      }
    }
  });
}

// Every rank sees A + 0.5·N_i(s), A of rank 3 (singular values 4, 2, 1): the refreshed basis is
// aligned with A, and the probes' estimates are noisy. The contraction bound then holds on average
// over seeds, greedy beats random selection, 16 probes select better than 1, and all ranks select
// alike (ĝ bit-identical).
TEST(GreedyLore, ProbeScoresContractOnAverageAndAgreeAcrossRanks) {
  constexpr int64_t m = 8, n = 12, kRank = 2, kPeriod = 5, kSteps = 10;
  constexpr int kSeeds = 8;
  testing::run_ranks_shared(3, [&](std::shared_ptr<comm::Communicator> c) {
    const at::Tensor U = std::get<0>(at::linalg_qr(testing::seeded_randn({m, 3}, 77, 0, 0)));
    const at::Tensor V = std::get<0>(at::linalg_qr(testing::seeded_randn({n, 3}, 77, 0, 1)));
    const at::Tensor A = U.matmul(at::diag(at::tensor({4.f, 2.f, 1.f}))).matmul(V.t());
    auto mean_ratio = [&](const std::string& select, const std::string& probes) {
      double sum = 0;
      int count = 0;
      for (int seed = 0; seed < kSeeds; ++seed) {
        at::Tensor w = at::zeros({m, n});
        GradientReducer red({{"w", w}},
                            greedylore(Config{{"rank", std::to_string(kRank)},
                                              {"refresh_period", std::to_string(kPeriod)},
                                              {"scores", "shared_probe"},
                                              {"probes", probes},
                                              {"select", select}}),
                            c, ReducerOptions().min_compression_rate(0).seed(seed));
        for (int64_t s = 0; s < kSteps; ++s) {
          at::Tensor g = A + 0.5 * testing::seeded_randn({m, n}, seed, c->rank(), s);
          w.mutable_grad() = g;
          const at::Tensor mean = testing::gathered_mean(*c, g + testing::ef_of(red, "w", g));
          red.reduce();
          EXPECT_TRUE(testing::same_on_all_ranks(*c, w.grad())) << "seed=" << seed << " s=" << s;
          if (s % kPeriod == 0) continue;
          sum += testing::sq_norm(mean - w.grad().to(at::kDouble)) / testing::sq_norm(mean);
          ++count;
        }
      }
      return sum / count;
    };
    const double greedy = mean_ratio("greedy", "1"), random = mean_ratio("random", "1");
    const double many = mean_ratio("greedy", "16");  // less selection noise
    if (c->rank() == 0)
      std::cout << "mean ‖Δ̄ − ĝ‖²/‖Δ̄‖²: 1 probe " << greedy << ", 16 probes " << many << ", random " << random
                << ", bound " << 1.0 - double(kRank) / m << "\n";
    EXPECT_LE(greedy, 1.0 - double(kRank) / m);
    EXPECT_LT(greedy, random);
    EXPECT_LT(many, greedy);
  });
}

TEST(GreedyLore, RefreshAveragesCorrectedOrRawGradientAndZeroesTheErrorBuffer) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    for (const std::string input : {"corrected", "discard"}) {
      at::Tensor w = at::zeros({6, 9});
      GradientReducer red({{"w", w}}, greedylore(Config{{"refresh_period", "2"}, {"refresh_input", input}}), c,
                          ReducerOptions().min_compression_rate(0));
      for (int64_t s = 0; s < 3; ++s) {
        at::Tensor g = testing::seeded_randn({6, 9}, 5, c->rank(), s);
        w.mutable_grad() = g;
        const at::Tensor e = testing::ef_of(red, "w", g);
        const at::Tensor mean_g = testing::gathered_mean(*c, g), mean_delta = testing::gathered_mean(*c, g + e);
        red.reduce();
        if (s != 2) continue;
        // The EF buffer is non-trivial here, so the two refresh inputs give visibly different means.
        ASSERT_GT(testing::max_abs_diff(mean_g, mean_delta), 1000 * kMeanTol);
        const at::Tensor& want = input == "discard" ? mean_g : mean_delta;
        EXPECT_LT(testing::max_abs_diff(w.grad(), want), kMeanTol) << input;
        EXPECT_EQ(testing::sq_norm(testing::ef_of(red, "w", g)), 0.0) << input;
      }
    }
  });
}

// U = I is injected through the state, so every score is exact arithmetic: rows 1 and 2 tie.
TEST(GreedyLore, TiesGoToTheSmallerIndex) {
  testing::run_ranks_shared(1, [](std::shared_ptr<comm::Communicator> c) {
    for (int first : {0, 1}) {
      at::Tensor w = at::zeros({3, 5});
      GradientReducer red({{"w", w}}, greedylore(Config{{"rank", "1"}, {"scores", "exact"}}), c,
                          ReducerOptions().min_compression_rate(0));
      red.load_state_dict({{"step", at::tensor({int64_t{1}})}, {"state/w/U", at::eye(3)}});
      // Energies per row: first == 0: (4, 1, 4) -> J = {0}; first == 1: (1, 4, 4) -> J = {1}.
      at::Tensor g = at::zeros({3, 5});
      g[0][0] = first == 0 ? 2 : 1;
      g[1][1] = first == 1 ? 2 : 1;
      g[2][3] = 2;
      w.mutable_grad() = g.clone();
      red.reduce();
      at::Tensor want = at::zeros({3, 5});
      want[first] = g[first];
      EXPECT_TRUE(at::equal(w.grad(), want)) << "first=" << first << "\n" << w.grad();
    }
  });
}

// A diverged run (inf/NaN in Δ) stops at the first compressed step on every rank with an error that
// names the parameter and the step, instead of selecting directions from NaN scores.
TEST(GreedyLore, NonFiniteScoresStopNamingTheParameterAndStep) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({4, 6});
    // The reducer's own check (skip_nonfinite) would skip the step first: off, to reach GreedyLore's.
    GradientReducer red({{"fc.weight", w}}, greedylore(Config{{"rank", "1"}}), c,
                        ReducerOptions().min_compression_rate(0).skip_nonfinite(false));
    w.mutable_grad() = testing::seeded_randn({4, 6}, 3, c->rank(), 0);
    red.reduce();  // step 0: the refresh
    at::Tensor g = testing::seeded_randn({4, 6}, 3, c->rank(), 1);
    if (c->rank() == 1) g[2][3] = std::numeric_limits<float>::quiet_NaN();
    w.mutable_grad() = g;
    try {
      red.reduce();
      ADD_FAILURE() << "rank " << c->rank() << ": a NaN gradient was reduced without an error";
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      EXPECT_NE(msg.find("'fc.weight'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("at step 1"), std::string::npos) << msg;
      EXPECT_NE(msg.find("diverged"), std::string::npos) << msg;
    }
  });
}

// Whatever the scores, a normal step outputs Δ̄ projected onto k columns of the stored basis:
// Uᵀĝ has k non-zero rows, equal to the same rows of UᵀΔ̄.
TEST(GreedyLore, EveryVariantProjectsOntoKBasisDirections) {
  constexpr int64_t kRank = 2;
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    std::vector<Config> variants;
    for (const std::string s : {"probe", "shared_probe", "local_energy", "uniform_probe", "exact"})
      variants.push_back(Config{{"rank", "2"}, {"refresh_period", "3"}, {"scores", s}});
    variants.push_back(Config{{"rank", "2"}, {"refresh_period", "3"}, {"select", "random"}});
    for (const auto& cfg : variants) {
      const std::string label = greedylore(cfg)->describe();
      at::Tensor w = at::zeros({9, 6});  // tall: oriented as [6, 9]
      GradientReducer red({{"w", w}}, greedylore(cfg), c, ReducerOptions().min_compression_rate(0));
      for (int64_t s = 0; s < 3; ++s) {
        at::Tensor g = testing::seeded_randn({9, 6}, 11, c->rank(), s);
        w.mutable_grad() = g;
        const at::Tensor mean = testing::gathered_mean(*c, g + testing::ef_of(red, "w", g));
        red.reduce();
        EXPECT_TRUE(testing::same_on_all_ranks(*c, w.grad())) << label << " s=" << s;
        if (s == 0) continue;
        const at::Tensor U = testing::state_of(red, "w", "U").to(at::kDouble);
        ASSERT_TRUE(U.size(0) == 6 && U.size(1) == 6) << label;
        const at::Tensor coef = U.t().matmul(orient(w.grad().to(at::kDouble)));  // [6, 9]
        const at::Tensor want = U.t().matmul(orient(mean));
        const at::Tensor row_norm = coef.pow(2).sum(1);
        const at::Tensor kept = row_norm > kRelTol * testing::sq_norm(mean);
        EXPECT_EQ(kept.sum().item<int64_t>(), kRank) << label << " s=" << s << " row energies " << row_norm;
        for (int64_t j = 0; j < 6; ++j)
          if (kept[j].item<bool>())
            EXPECT_LT(testing::max_abs_diff(coef[j], want[j]), 1e2 * kMeanTol) << label << " s=" << s << " row " << j;
      }
    }
  });
}

// Per matrix (§8), a = min(m, n), b = max(m, n): normal k·b + a (exact: a·b; select=random: k·b),
// refresh a·b. Model: a, b [12, 5] (one batched group), c [5, 12], conv [4, 2, 3, 3] = [4, 18],
// bias [12] dense; k = 2, τ = 3.
TEST(GreedyLore, WireFloatsEqualWhatIsAllReduced) {
  constexpr int64_t kRefresh = 3 * (5 * 12) + 4 * 18 + 12;                     // 264
  constexpr int64_t kProbe = 3 * (2 * 12 + 5) + (2 * 18 + 4) + 12;              // 139
  constexpr int64_t kExact = kRefresh;                                          // 264
  constexpr int64_t kRandom = 3 * (2 * 12) + 2 * 18 + 12;                       // 120
  constexpr int64_t kThreeProbes = 3 * (2 * 12 + 5 * 3) + (2 * 18 + 4 * 3) + 12; // 177: a·p scores
  static_assert(kRefresh == 264 && kProbe == 139 && kRandom == 120 && kThreeProbes == 177, "hand arithmetic");
  struct Case {
    Config cfg;
    int64_t normal, normal_collectives;
  };
  const std::vector<Case> cases = {
      {Config{{"scores", "probe"}}, kProbe, 3},
      {Config{{"scores", "shared_probe"}, {"probes", "1"}}, kProbe, 3},
      {Config{{"scores", "shared_probe"}, {"probes", "3"}}, kThreeProbes, 3},
      {Config{{"scores", "local_energy"}}, kProbe, 3},  {Config{{"scores", "uniform_probe"}}, kProbe, 3},
      {Config{{"scores", "exact"}}, kExact, 2},         {Config{{"select", "random"}}, kRandom, 2},
  };
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& cs : cases) {
      Config cfg = cs.cfg;
      cfg.set("rank", std::string("2")).set("refresh_period", std::string("3"));
      Params params = {{"a", at::zeros({12, 5})}, {"b", at::zeros({12, 5})}, {"c", at::zeros({5, 12})},
                       {"conv", at::zeros({4, 2, 3, 3})}, {"bias", at::zeros({12})}};
      GradientReducer red(params, greedylore(cfg), c, ReducerOptions().min_compression_rate(0));
      const std::string label = red.compressor().describe();
      for (int64_t s = 0; s < 5; ++s) {
        for (size_t p = 0; p < params.size(); ++p)
          params[p].second.mutable_grad() = testing::seeded_randn(params[p].second.sizes(), 4, c->rank(), s, p);
        const int64_t before = c->stats().collectives;
        red.reduce();
        const bool refresh = s % 3 == 0;
        EXPECT_EQ(red.stats().last_floats_sent, refresh ? kRefresh : cs.normal) << label << " s=" << s;
        EXPECT_EQ(red.expected_bytes(s) / 4, refresh ? kRefresh : cs.normal) << label << " s=" << s;
        // refresh: dense + H̄; normal: dense + scores + R (exact: dense + Z; random: dense + R).
        EXPECT_EQ(c->stats().collectives - before, refresh ? 2 : cs.normal_collectives) << label << " s=" << s;
      }
    }
  });
}

// The start-of-run warning (docs/results.md, "Why GreedyLore diverges"): a ≥ 16k and τ > a/k, either
// orientation; the example CNN's fc1 (128×1568, k = 4, τ = 200) is flagged, its conv2 (32×400:
// a/k = 8) and classifier (10×128) are not, nor fc1 at τ = 20 (< a/k = 32, which trained).
TEST(GreedyLore, FlagsOnlyMatricesWhoseHeldBackDirectionsComeBackInBursts) {
  const GreedyLore defaults(GreedyLoreOptions().rank(4));
  EXPECT_TRUE(defaults.holds_back_in_bursts(128, 1568));
  EXPECT_TRUE(defaults.holds_back_in_bursts(1568, 128));
  EXPECT_FALSE(defaults.holds_back_in_bursts(32, 400));
  EXPECT_FALSE(defaults.holds_back_in_bursts(10, 128));
  EXPECT_FALSE(defaults.holds_back_in_bursts(16, 25));
  EXPECT_TRUE(GreedyLore(GreedyLoreOptions().rank(4).refresh_period(50)).holds_back_in_bursts(128, 1568));
  EXPECT_TRUE(GreedyLore(GreedyLoreOptions().rank(4).refresh_period(33)).holds_back_in_bursts(128, 1568));
  EXPECT_FALSE(GreedyLore(GreedyLoreOptions().rank(4).refresh_period(32)).holds_back_in_bursts(128, 1568));
  EXPECT_FALSE(GreedyLore(GreedyLoreOptions().rank(4).refresh_period(20)).holds_back_in_bursts(128, 1568));
  EXPECT_TRUE(GreedyLore(GreedyLoreOptions().rank(8)).holds_back_in_bursts(128, 1568));   // a = 16k
  EXPECT_FALSE(GreedyLore(GreedyLoreOptions().rank(9)).holds_back_in_bursts(128, 1568));  // a < 16k
  EXPECT_EQ(defaults.stability_warning({{"conv2.weight", 32, 400}, {"fc2.weight", 10, 128}}), "");
  const std::string w = defaults.stability_warning({{"conv2.weight", 32, 400}, {"fc1.weight", 128, 1568}});
  EXPECT_TRUE(testing::contains(w, "'fc1.weight' (128x1568: k=4 of a=128 directions)")) << w;
  EXPECT_TRUE(testing::contains(w, "every 200 steps") && testing::contains(w, "a/k up to 32")) << w;
  EXPECT_TRUE(testing::contains(w, "releases them in bursts") && testing::contains(w, "\"Why GreedyLore diverges\""))
      << w;
  EXPECT_FALSE(testing::contains(w, "conv2")) << w;
  // The Compressor hook the reducer calls: the note that it trails PowerSGD whenever a matrix is
  // compressed, then the same text, and that only with error feedback on.
  const std::vector<MatrixInfo> fc1 = {{"fc1.weight", 128, 1568}};
  EXPECT_EQ(defaults.start_warnings(fc1, /*error_feedback=*/true),
            (std::vector<std::string>{GreedyLore::trails_warning(), defaults.stability_warning(fc1)}));
  EXPECT_EQ(defaults.start_warnings(fc1, /*error_feedback=*/false), std::vector<std::string>{GreedyLore::trails_warning()});
  EXPECT_TRUE(defaults.start_warnings({}, /*error_feedback=*/true).empty());
  const std::string t = GreedyLore::trails_warning();
  EXPECT_TRUE(testing::contains(t, "less well than powersgd") && testing::contains(t, "GreedyLore's operating point") &&
              testing::contains(t, "--compressor powersgd"))
      << t;
}

// lowrank train prints the burst warning at start (launch::start_warnings) only for GreedyLore with
// error feedback and only for the matrices it compresses; the note that it trails PowerSGD always.
TEST(GreedyLore, ReducerWarnsAtStartWhenErrorFeedbackHoldsBackInBursts) {
  testing::run_ranks_shared(1, [&](std::shared_ptr<comm::Communicator> c) {
    auto params = [] {
      return Params{{"conv2.weight", at::zeros({32, 16, 5, 5})}, {"fc1.weight", at::zeros({128, 1568})},
                    {"fc1.bias", at::zeros({128})}};
    };
    const Config rank4{{"rank", "4"}};
    {
      GradientReducer red(params(), greedylore(rank4), c);
      ASSERT_EQ(red.warnings().size(), 2u);
      EXPECT_EQ(red.warnings()[0], GreedyLore::trails_warning());
      EXPECT_TRUE(testing::contains(red.warnings()[1], "'fc1.weight'")) << red.warnings()[1];
      EXPECT_FALSE(testing::contains(red.warnings()[1], "conv2")) << red.warnings()[1];
      // start_warnings() (lowrank train's start) prints them on lines of their own.
      const auto lines = launch::start_warnings(train::TrainOptions(), red, 100);
      EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [](const std::string& l) {
        return l.rfind("warning: greedylore: 'fc1.weight'", 0) == 0;
      }));
    }
    // No burst warning: only the note (GreedyLore), or nothing (PowerSGD).
    const auto quiet = [&](std::unique_ptr<Compressor> comp, ReducerOptions o, const char* what) {
      const bool greedy = comp->name() == "greedylore";
      GradientReducer red(params(), std::move(comp), c, o);
      const auto want = greedy ? std::vector<std::string>{GreedyLore::trails_warning()} : std::vector<std::string>{};
      EXPECT_EQ(red.warnings(), want) << what;
      EXPECT_EQ(launch::start_warnings(train::TrainOptions(), red, 100).size(), want.size()) << what;
    };
    quiet(greedylore(rank4), ReducerOptions().error_feedback(false), "error feedback off");
    quiet(greedylore(rank4), ReducerOptions().uncompressed_names({"fc1"}), "fc1 dense");
    quiet(greedylore(Config{{"rank", "4"}, {"refresh_period", "20"}}), ReducerOptions(), "tau 20");
    quiet(make_compressor("powersgd", rank4), ReducerOptions(), "powersgd");
    // Nothing compressed: no note either.
    GradientReducer dense(params(), greedylore(rank4), c, ReducerOptions().uncompressed_names({"fc1", "conv2"}));
    EXPECT_TRUE(dense.warnings().empty()) << dense.warnings()[0];
  });
}

TEST(GreedyLore, ConstructsFromConfigAndRejectsBadOptions) {
  auto c = make_compressor("greedylore", Config{});
  EXPECT_EQ(c->name(), "greedylore");
  EXPECT_TRUE(c->traits().default_error_feedback);
  EXPECT_EQ(c->size_test_bytes(6, 20) / 4, 1 * 20);  // k·max(m, n)
  EXPECT_EQ(c->size_test_bytes(20, 6) / 4, 1 * 20);

  std::string msg = testing::error_of([] { make_compressor("greedylore", Config{{"refresh_period", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "refresh_period") && testing::contains(msg, "got 0")) << msg;
  msg = testing::error_of([] { make_compressor("greedylore", Config{{"scores", "energy"}}); });
  EXPECT_TRUE(testing::contains(msg, "'energy'") &&
              testing::contains(msg, "probe, shared_probe, local_energy, uniform_probe, exact"))
      << msg;
  msg = testing::error_of([] { make_compressor("greedylore", Config{{"select", "best"}}); });
  EXPECT_TRUE(testing::contains(msg, "'best'") && testing::contains(msg, "greedy, random")) << msg;
  msg = testing::error_of([] { make_compressor("greedylore", Config{{"refresh_input", "keep"}}); });
  EXPECT_TRUE(testing::contains(msg, "'keep'") && testing::contains(msg, "corrected, discard")) << msg;
  msg = testing::error_of([] { make_compressor("greedylore", Config{{"rank", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "rank") && testing::contains(msg, "got 0")) << msg;
  msg = testing::error_of([] { make_compressor("greedylore", Config{{"dense_steps", "-1"}}); });
  EXPECT_TRUE(testing::contains(msg, "dense_steps must be >= 0, got -1")) << msg;
  for (const char* p : {"0", "257"}) {
    msg = testing::error_of([&] { make_compressor("greedylore", Config{{"scores", "shared_probe"}, {"probes", p}}); });
    EXPECT_TRUE(testing::contains(msg, std::string("probes must lie in [1, 256], got ") + p)) << msg;
  }
  // probes is shown only where it is used
  EXPECT_FALSE(testing::contains(make_compressor("greedylore", Config{{"scores", "local_energy"}})->describe(), "probes"));
  EXPECT_TRUE(testing::contains(make_compressor("greedylore", Config{})->describe(), "scores=shared_probe probes=4"));
}

// The defaults (docs/results.md, "GreedyLore's operating point"): 4 shared probes and a dense warm-up
// before the first refresh, which averages the corrected gradients.
TEST(GreedyLore, DefaultsAreTheMeasuredOperatingPoint) {
  const GreedyLoreOptions o;
  EXPECT_EQ(o.scores(), GreedyScores::kSharedProbe);
  EXPECT_EQ(o.probes(), 4);
  EXPECT_EQ(o.refresh_input(), RefreshInput::kCorrected);
  EXPECT_EQ(o.dense_steps(), 26);
  EXPECT_EQ(o.refresh_period(), 200);
  const GreedyLore c(o);
  EXPECT_FALSE(c.traits().wants_raw_gradient);
  for (int64_t s : {0, 25}) EXPECT_TRUE(c.is_warmup(s) && !c.is_refresh(s) && c.resets_error_feedback(s)) << s;
  for (int64_t s : {26, 226, 426}) EXPECT_TRUE(!c.is_warmup(s) && c.is_refresh(s) && c.resets_error_feedback(s)) << s;
  for (int64_t s : {27, 200, 225}) EXPECT_FALSE(c.is_refresh(s) || c.resets_error_feedback(s)) << s;
}

// Steps s < w: the plain mean of the raw gradients (m·n bytes, E = 0, no basis yet); then a refresh at
// s = w and every τ after it, and normal steps in between.
TEST(GreedyLore, WarmUpSendsTheDenseMeanThenRefreshesFromItsEnd) {
  constexpr int64_t m = 7, n = 10, kW = 2, kPeriod = 3, k = 2;
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    for (const std::string input : {"corrected", "discard"}) {
      at::Tensor w = at::zeros({m, n});
      GradientReducer red({{"w", w}},
                          greedylore(Config{{"rank", std::to_string(k)}, {"refresh_period", std::to_string(kPeriod)},
                                            {"dense_steps", std::to_string(kW)}, {"refresh_input", input},
                                            {"probes", "3"}}),
                          c, ReducerOptions().min_compression_rate(0));
      for (int64_t s = 0; s < 7; ++s) {
        const std::string what = input + " s=" + std::to_string(s);
        const at::Tensor g = testing::seeded_randn({m, n}, 21, c->rank(), s);
        w.mutable_grad() = g.clone();
        const at::Tensor mean_g = testing::gathered_mean(*c, g);
        red.reduce();
        const bool warm = s < kW, refresh = s >= kW && (s - kW) % kPeriod == 0;
        EXPECT_EQ(red.expected_bytes(s), warm || refresh ? 4 * m * n : 4 * (k * n + 3 * m)) << what;  // a·p scores
        EXPECT_EQ(red.stats().last_bytes_sent, red.expected_bytes(s)) << what;
        EXPECT_EQ(testing::state_of(red, "w", "U").defined(), s >= kW) << what;
        if (warm) {
          EXPECT_LT(testing::max_abs_diff(w.grad(), mean_g), kMeanTol) << what;
          EXPECT_EQ(testing::sq_norm(testing::ef_of(red, "w", g)), 0.0) << what;
        } else if (!refresh) {
          EXPECT_GT(testing::sq_norm(testing::ef_of(red, "w", g)), 0.0) << what;
        }
      }
    }
  });
}

// GreedyLore's own warm-up of w steps is the reducer's dense warm-up (start_iter = w) moved inside the
// compressor: the same outputs at every step. (Scores without random probes: the probes are drawn per
// compressed step s, which the two count from different starts.)
TEST(GreedyLore, WarmUpMatchesTheReducersDenseWarmUp) {
  constexpr int64_t kW = 3, kSteps = 9;
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    Params own = {{"a", at::zeros({8, 12})}, {"b", at::zeros({12, 8})}};
    Params reducer = {{"a", at::zeros({8, 12})}, {"b", at::zeros({12, 8})}};
    GradientReducer red_own(own, greedylore(Config{{"rank", "2"}, {"refresh_period", "4"}, {"dense_steps", "3"}, {"scores", "local_energy"}}), c,
                            ReducerOptions().min_compression_rate(0));
    GradientReducer red_reducer(reducer,
                                greedylore(Config{{"rank", "2"}, {"refresh_period", "4"}, {"dense_steps", "0"}, {"scores", "local_energy"}}), c,
                                ReducerOptions().min_compression_rate(0).start_iter(kW));
    for (int64_t s = 0; s < kSteps; ++s) {
      for (size_t p = 0; p < own.size(); ++p) {
        at::Tensor g = testing::seeded_randn(own[p].second.sizes(), 31, c->rank(), s, p);
        g += testing::planted(own[p].second.size(0), own[p].second.size(1), p);
        own[p].second.mutable_grad() = g.clone();
        reducer[p].second.mutable_grad() = g.clone();
      }
      red_own.reduce();
      red_reducer.reduce();
      // The two means may round differently (sum then divide, or divide then sum) and the basis
      // carries that on: a few ulp of entries up to ~10, so 1e-5 relative.
      for (size_t p = 0; p < own.size(); ++p) {
        const at::Tensor want = reducer[p].second.grad();
        const double scale = 1 + want.abs().max().item<double>();
        EXPECT_LT(testing::max_abs_diff(own[p].second.grad(), want), 1e-5 * scale) << own[p].first << " s=" << s;
      }
    }
  });
}

}  // namespace
}  // namespace lowrank
