// rank=auto (compressors/auto_rank.h): the planning rules on hand-made spectra, the options and their
// refusals, and on two gloo ranks the ranks a plan finds for gradients of known rank, identical on
// every rank, with the bytes on the wire following the planned ranks.
#include "lowrank/compressors/auto_rank.h"

#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "compressors/family_support.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;

at::Tensor sq(std::vector<double> v) { return at::tensor(v, at::kDouble); }

TensorDict measured(std::vector<double> spectrum) {
  double total = 0;
  for (double x : spectrum) total += x;
  return {{compressor_keys::kSpectrum, sq(spectrum)}, {compressor_keys::kEnergy, at::tensor({total}, at::kDouble)}};
}

TEST(AutoRank, EnergyRankIsTheSmallestWhoseLeadingValuesHoldTheTarget) {
  const at::Tensor s = sq({4, 2, 1, 1});  // energy 8
  EXPECT_EQ(rank_for_energy(s, 8, 0.5, 1, 4), 1);   // 4/8
  EXPECT_EQ(rank_for_energy(s, 8, 0.6, 1, 4), 2);   // 6/8
  EXPECT_EQ(rank_for_energy(s, 8, 0.8, 1, 4), 3);   // 7/8
  EXPECT_EQ(rank_for_energy(s, 8, 0.9, 1, 4), 4);   // 8/8
  EXPECT_EQ(rank_for_energy(s, 8, 0.5, 2, 4), 2);   // the floor
  EXPECT_EQ(rank_for_energy(s, 8, 0.9, 1, 3), 3);   // the ceiling when no rank holds it
  EXPECT_EQ(rank_for_energy(s, 16, 0.9, 1, 6), 6);  // energy the spectrum does not hold (outside the sketch)
}

TEST(AutoRank, CeilingNeverLetsTheFactorsOutgrowTheMatrix) {
  AutoRankOptions o;  // rank_min 1, rank_max 16
  EXPECT_EQ(o.hi(16, 25), 9);   // 9·41 = 369 < 400, 10·41 = 410 >= 400
  EXPECT_EQ(o.hi(10, 128), 9);  // 9·138 < 1280
  EXPECT_EQ(o.hi(128, 1568), 16);
  EXPECT_EQ(o.hi(2, 2), 1);     // never below the floor
  EXPECT_EQ(o.lo(2, 2), 1);
  o.min = 4;
  EXPECT_EQ(o.lo(3, 50), 3);
  EXPECT_EQ(o.hi(3, 50), 3);
}

TEST(AutoRank, EnergyPlanGivesEveryMemberOfAGroupTheLargestRankOneNeeds) {
  AutoRankOptions o;
  o.energy = 0.75;
  std::vector<TensorDict> states = {measured({6, 1, 1}), measured({3, 3, 2}), measured({1, 1, 1, 1})};
  std::vector<PlannedMatrix> mats = {{"a", 20, 20, 0, &states[0]}, {"b", 20, 20, 0, &states[1]},
                                     {"c", 20, 20, 2, &states[2]}};
  const RankCost cost = [](int64_t m, int64_t n, int64_t k) { return 4 * k * (m + n); };
  // a needs 1 (6/8), b needs 2 (6/8): the group runs at 2; c needs 3 (3/4).
  EXPECT_EQ(plan_auto_ranks(o, mats, 0, cost), (std::vector<int64_t>{2, 2, 3}));
  apply_auto_ranks(o, mats, 7, 0, cost);
  EXPECT_EQ(states[2].at(compressor_keys::kRank).item<int64_t>(), 3);
  EXPECT_EQ(states[2].at(compressor_keys::kRankHistory).sizes(), (at::IntArrayRef{1, 2}));
  apply_auto_ranks(o, mats, 9, 0, cost);  // unchanged: no new history row
  EXPECT_EQ(states[2].at(compressor_keys::kRankHistory).size(0), 1);
  // A later plan that needs another rank appends a row: c now needs 1 (6/8).
  states[2] = measured({6, 1, 1});
  states[2][compressor_keys::kRank] = at::tensor({int64_t(3)}, at::kLong);
  states[2][compressor_keys::kRankHistory] = at::tensor({int64_t(7), int64_t(3)}, at::kLong).reshape({1, 2});
  apply_auto_ranks(o, mats, 11, 0, cost);
  EXPECT_EQ(states[2].at(compressor_keys::kRank).item<int64_t>(), 1);
  const at::Tensor h = states[2].at(compressor_keys::kRankHistory);
  ASSERT_EQ(h.size(0), 2);
  EXPECT_EQ(h[1][0].item<int64_t>(), 11);
  EXPECT_EQ(h[1][1].item<int64_t>(), 1);
}

TEST(AutoRank, BudgetTakesTheMostEnergyPerByteFirstAndGrowsAGroupTogether) {
  AutoRankOptions o;
  o.min = 1;
  o.max = 3;
  const RankCost cost = [](int64_t m, int64_t n, int64_t k) { return k * (m + n); };  // 20 bytes per rank for 10x10
  std::vector<TensorDict> states = {measured({9, 4, 1}), measured({3, 2.5, 2}), measured({5, 0.6, 0.5}),
                                    measured({5, 0.6, 0.5}), measured({5, 1.0, 0.9})};
  std::vector<PlannedMatrix> mats = {{"a", 10, 10, 0, &states[0]}, {"b", 10, 10, 1, &states[1]},
                                     {"c", 10, 10, 2, &states[2]}, {"d", 10, 10, 2, &states[3]},
                                     {"e", 10, 10, 4, &states[4]}};
  RankBudget b;
  // Floor: 5 matrices at rank 1 = 100 bytes, plus 7 dense bytes.
  b.bytes = 107.0;
  o.budget = b;
  EXPECT_EQ(plan_auto_ranks(o, mats, 7, cost), (std::vector<int64_t>{1, 1, 1, 1, 1}));
  // 20 more: a's second direction (4 per 20 bytes) beats b's (2.5), e's (1.0) and the group c+d's (1.2 per 40).
  b.bytes = 127.0;
  o.budget = b;
  EXPECT_EQ(plan_auto_ranks(o, mats, 7, cost), (std::vector<int64_t>{2, 1, 1, 1, 1}));
  // 40 more: then b's (2.5) over a's third (1).
  b.bytes = 147.0;
  o.budget = b;
  EXPECT_EQ(plan_auto_ranks(o, mats, 7, cost), (std::vector<int64_t>{2, 2, 1, 1, 1}));
  // 80 more: a's and b's second, b's third (2 per 20), then a's third and e's second tie at 1 per 20
  // (the group c+d gives 1.2 per 40): the earlier group, a, takes the last 20.
  b.bytes = 187.0;
  o.budget = b;
  EXPECT_EQ(plan_auto_ranks(o, mats, 7, cost), (std::vector<int64_t>{3, 3, 1, 1, 1}));
  // Everything at the ceiling fits: 5·3·20 + 7.
  b.bytes = 307.0;
  o.budget = b;
  EXPECT_EQ(plan_auto_ranks(o, mats, 7, cost), (std::vector<int64_t>{3, 3, 3, 3, 3}));
  // A budget below the floor is refused at set-up, naming both numbers.
  b.bytes = 106.0;
  o.budget = b;
  const std::string e = testing::error_of([&] { check_rank_budget(o, "powersgd", mats, 7, cost); });
  EXPECT_TRUE(testing::contains(e, "rank_budget=106")) << e;
  EXPECT_TRUE(testing::contains(e, "give rank_budget >= 107")) << e;
}

TEST(AutoRank, OptionsReadDescribeAndRefuseBadValues) {
  auto c = make_compressor("powersgd", Config{{"rank", "auto"}});
  EXPECT_TRUE(c->plans_ranks());
  EXPECT_TRUE(testing::contains(c->describe(), "rank=auto")) << c->describe();
  EXPECT_TRUE(testing::contains(c->describe(), "rank_energy=0.9 rank_min=1 rank_max=16 rank_period=100"))
      << c->describe();
  auto b = make_compressor("powersgd", Config{{"rank", "auto"}, {"rank_budget", "5000"}, {"rank_max", "8"}});
  EXPECT_TRUE(testing::contains(b->describe(), "rank_budget=5000 rank_min=1 rank_max=8")) << b->describe();
  EXPECT_FALSE(testing::contains(b->describe(), "rank_energy")) << b->describe();
  EXPECT_TRUE(testing::contains(b->rank_plan_text(), "a budget of 5000 bytes per step")) << b->rank_plan_text();
  // A fixed rank describes itself as before the option existed (checkpoints compare the text).
  auto fixed = make_compressor("powersgd", Config{{"rank", "4"}});
  EXPECT_FALSE(fixed->plans_ranks());
  EXPECT_FALSE(testing::contains(fixed->describe(), "rank_")) << fixed->describe();
  EXPECT_TRUE(make_compressor("powersgd+", Config{{"rank", "auto"}})->plans_ranks());
  EXPECT_TRUE(make_compressor("greedylore", Config{{"rank", "auto"}})->plans_ranks());

  const std::vector<std::pair<Config, std::string>> bad = {
      {{{"rank", "auto"}, {"rank_energy", "0"}}, "rank_energy must lie in (0, 1], got 0"},
      {{{"rank", "auto"}, {"rank_energy", "1.5"}}, "rank_energy must lie in (0, 1], got 1.5"},
      {{{"rank", "auto"}, {"rank_budget", "0"}}, "rank_budget=0 must be a number of bytes per step in (0, 1e15]"},
      {{{"rank", "auto"}, {"rank_budget", "-3"}}, "rank_budget=-3 must be a number of bytes per step in (0, 1e15]"},
      {{{"rank", "auto"}, {"rank_budget", "100"}, {"rank_energy", "0.5"}}, "are two targets for rank=auto: give one"},
      {{{"rank", "auto"}, {"rank_min", "5"}, {"rank_max", "4"}}, "rank_min=5 lies above rank_max=4"},
      {{{"rank", "auto"}, {"rank_min", "0"}}, "rank_min must be >= 1, got 0"},
      {{{"rank", "auto"}, {"rank_period", "0"}}, "rank_period must be >= 1, got 0"},
      {{{"rank", "4"}, {"rank_energy", "0.5"}}, "apply to rank=auto only"},
      {{{"rank", "fast"}}, "fast"},
  };
  for (const auto& kv : bad) {
    const std::string e = testing::error_of([&] { make_compressor("powersgd", kv.first); });
    EXPECT_TRUE(testing::contains(e, kv.second)) << kv.second << " | " << e;
  }
  // PowerSGD+ measures at its restarts and GreedyLore at its refreshes: rank_period is not theirs.
  for (const char* name : {"powersgd+", "greedylore"}) {
    const std::string e =
        testing::error_of([&] { make_compressor(name, Config{{"rank", "auto"}, {"rank_period", "5"}}); });
    EXPECT_TRUE(testing::contains(e, "rank_period")) << name << " | " << e;
  }
  // Compressors without a rank do not take it.
  const std::string e = testing::error_of([&] { make_compressor("topk", Config{{"rank", "auto"}}); });
  EXPECT_TRUE(testing::contains(e, "rank")) << e;
}

// A gradient whose mean over the ranks is L (rank r, singular values `sv`), while every rank's own
// gradient is L ± N, full rank: a plan read from a rank's local spectrum would pick the ceiling.
at::Tensor low_rank(int64_t m, int64_t n, const std::vector<double>& sv, int64_t salt) {
  const int64_t r = static_cast<int64_t>(sv.size());
  at::Tensor U = std::get<0>(at::linalg_qr(testing::seeded_randn({m, r}, 11, 0, 0, salt)));
  at::Tensor V = std::get<0>(at::linalg_qr(testing::seeded_randn({n, r}, 12, 0, 0, salt)));
  return at::matmul(U * at::tensor(sv).to(at::kFloat), V.t());
}

struct Expectation {
  std::string compressor;
  Config config;
  int64_t spectrum_step;     ///< the first compressed step that measures
  int64_t normal_step_bytes;  ///< at the planned ranks 2, 5, 8 (hand arithmetic)
};

TEST(AutoRank, PlansTheRankOfTheMeanGradientIdenticallyOnEveryRank) {
  // a [40, 30] of rank 2, b [30, 50] of rank 5, c [20, 20] noise of full rank; ceiling 8 (c: min(8, 399/40 = 9)).
  const std::vector<double> sa = {3, 2}, sb = {5, 4, 3, 2, 1.5};
  const int64_t psgd = 4 * (2 * (40 + 30) + 5 * (30 + 50) + 8 * (20 + 20));
  const int64_t glore = 4 * ((2 * 40 + 30 * 4) + (5 * 50 + 30 * 4) + (8 * 20 + 20 * 4));  // k·b + a·p, p = 4
  const std::vector<Expectation> cases = {
      {"powersgd", {{"rank", "auto"}, {"rank_energy", "0.99"}, {"rank_max", "8"}, {"rank_period", "3"}}, 0, psgd},
      {"powersgd",
       {{"rank", "auto"}, {"rank_energy", "0.99"}, {"rank_max", "8"}, {"rank_period", "3"},
        {"powersgd_mode", "alternating"}},
       0, 4 * (2 * 40 + 5 * 30 + 8 * 20)},  // step 1 sends P_i [m, k]
      {"powersgd+", {{"rank", "auto"}, {"rank_energy", "0.99"}, {"rank_max", "8"}, {"restart_period", "3"}}, 0, psgd},
      {"powersgd+",
       {{"rank", "auto"}, {"rank_energy", "0.99"}, {"rank_max", "8"}, {"restart_period", "3"}, {"restart", "rsvd_dist"}},
       0, psgd},
      {"greedylore",
       {{"rank", "auto"}, {"rank_energy", "0.99"}, {"rank_max", "8"}, {"refresh_period", "3"}, {"dense_steps", "1"}},
       1, glore},
  };
  for (const auto& cs : cases) {
    const std::string label = cs.compressor + " " + cs.config.get("powersgd_mode", std::string("")) +
                              cs.config.get("restart", std::string(""));
    std::mutex mu;
    std::map<int, std::vector<RankedMatrix>> seen;
    testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
      Params params = {{"a", at::zeros({40, 30})}, {"b", at::zeros({30, 50})}, {"c", at::zeros({20, 20})}};
      const std::vector<at::Tensor> mean = {low_rank(40, 30, sa, 1), low_rank(30, 50, sb, 2),
                                            testing::seeded_randn({20, 20}, 13, 0, 0, 3)};
      GradientReducer red(params, make_compressor(cs.compressor, cs.config), c,
                          ReducerOptions().min_compression_rate(0));
      const double sign = c->rank() == 0 ? 1.0 : -1.0;
      for (int64_t s = 0; s <= cs.spectrum_step + 1; ++s) {
        for (size_t p = 0; p < params.size(); ++p)
          params[p].second.mutable_grad() =
              (p == 2 ? mean[p] : mean[p] + sign * testing::seeded_randn(mean[p].sizes(), 21, 0, s, p));
        const int64_t want = red.expected_bytes(s);
        red.reduce();
        EXPECT_EQ(red.stats().last_bytes_sent, want) << label << " s=" << s;
        if (s == cs.spectrum_step + 1) EXPECT_EQ(want, cs.normal_step_bytes) << label;
      }
      std::lock_guard<std::mutex> lock(mu);
      seen[c->rank()] = red.ranks();
    });
    ASSERT_EQ(seen.size(), 2u) << label;
    const auto& r0 = seen[0];
    ASSERT_EQ(r0.size(), 3u) << label;
    EXPECT_EQ(r0[0].rank, 2) << label;
    EXPECT_EQ(r0[1].rank, 5) << label;
    EXPECT_EQ(r0[2].rank, 8) << label;
    EXPECT_EQ(r0[0].history, (std::vector<std::pair<int64_t, int64_t>>{{cs.spectrum_step, 2}})) << label;
    for (size_t i = 0; i < r0.size(); ++i) {
      EXPECT_EQ(seen[1][i].rank, r0[i].rank) << label << " " << r0[i].name;
      EXPECT_EQ(seen[1][i].history, r0[i].history) << label << " " << r0[i].name;
    }
  }
}

// The sketch's energy estimate is exact for a gradient of rank below the sketch width, and within the
// noise of its probes for one that is not.
TEST(AutoRank, SketchEnergyEstimateIsExactWithinTheSketchedRange) {
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    Params params = {{"a", at::zeros({40, 30})}, {"c", at::zeros({64, 64})}};
    GradientReducer red(params, make_compressor("powersgd", Config{{"rank", "auto"}, {"rank_max", "4"}}), c,
                        ReducerOptions().min_compression_rate(0).error_feedback(false));
    const at::Tensor a = low_rank(40, 30, {3, 2, 1}, 4);
    const at::Tensor noise = testing::seeded_randn({64, 64}, 14, 0, 0, 5);
    params[0].second.mutable_grad() = a.clone();
    params[1].second.mutable_grad() = noise.clone();
    red.reduce();
    const double exact_a = a.to(at::kDouble).pow(2).sum().item<double>();
    const double exact_c = noise.to(at::kDouble).pow(2).sum().item<double>();
    const double est_a = testing::state_of(red, "a", compressor_keys::kEnergy).item<double>();
    const double est_c = testing::state_of(red, "c", compressor_keys::kEnergy).item<double>();
    EXPECT_NEAR(est_a / exact_a, 1.0, 1e-4);
    // 8 probes of a 64x64 Gaussian: the relative error of the left-out part is about sqrt(2/(8·64)).
    EXPECT_NEAR(est_c / exact_c, 1.0, 0.25);
  });
}

}  // namespace
}  // namespace lowrank
