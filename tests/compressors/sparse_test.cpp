// The sparsifiers topk and randomk (docs/algorithms.md §6): top-k keeps exactly the k largest
// magnitudes and the reducer's output is the mean of every rank's top-k bit for bit; rand-k's
// positions are shared by all ranks and move with the step, its scaled form is unbiased (and the
// unscaled one demonstrably is not); error feedback telescopes; k from density or k; wire bytes; bad
// options; which variants run with error feedback by default.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compressors/family_support.h"
#include "lowrank/compressors/randomk.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/compressors/topk.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;

// A bias [7] (compressed as [1, 7]), two [9, 3] matrices (one shape group of b = 2) and a conv
// [4, 2, 3, 3] (viewed [4, 18]).
Params model(at::ScalarType dtype = at::kFloat) {
  const auto o = at::TensorOptions().dtype(dtype);
  return {{"bias", at::zeros({7}, o)}, {"w", at::zeros({9, 3}, o)}, {"w2", at::zeros({9, 3}, o)},
          {"conv", at::zeros({4, 2, 3, 3}, o)}};
}
// k of each at density 0.25: ⌈1.75⌉ = 2, ⌈6.75⌉ = 7, 7, 18 (72/4 exactly, not rounded up).
const std::vector<int64_t> kQuarterK = {2, 7, 7, 18};

void set_grads(Params& params, int64_t rank, int64_t step) {
  for (size_t p = 0; p < params.size(); ++p) {
    at::Tensor& t = params[p].second;
    t.mutable_grad() = testing::seeded_randn(t.sizes(), 3, rank, step, p).to(t.scalar_type());
  }
}

// One shape group over `delta` [b, m, n]; residual aliases delta when `in_place`.
ShapeGroup make_group(const at::Tensor& delta, bool in_place = false) {
  ShapeGroup g;
  g.m = delta.size(1);
  g.n = delta.size(2);
  for (int64_t j = 0; j < delta.size(0); ++j) g.names.push_back("p" + std::to_string(j));
  g.delta = delta;
  g.out = at::zeros_like(delta);
  g.residual = in_place ? delta : at::zeros_like(delta);
  return g;
}

// `x` with its k largest |x| kept and the rest +0, found by a sort (not at::topk); distinct magnitudes.
at::Tensor keep_largest(const at::Tensor& x, int64_t k) {
  const at::Tensor flat = x.flatten();
  const at::Tensor top = std::get<1>(flat.abs().sort(0, /*descending=*/true)).narrow(0, 0, k);
  return at::zeros_like(flat).index_copy_(0, top, flat.index_select(0, top)).view_as(x);
}

// On one rank (so ĝ is the rank's own sparse part), fp32 and fp64, residual apart from or aliasing Δ.
TEST(TopK, KeepsExactlyTheKLargestMagnitudesOfEachMember) {
  std::shared_ptr<comm::Communicator> local = comm::make_local_communicator();
  TopK topk(TopKOptions().budget(SparseBudget().density(0.25)));  // N = 27: k = 7
  for (const auto dtype : {at::kFloat, at::kDouble})
    for (const bool in_place : {false, true}) {
      const at::Tensor x = testing::seeded_randn({2, 9, 3}, 1, 0, 0).to(dtype);
      std::vector<ShapeGroup> groups = {make_group(x.clone(), in_place)};
      StepContext ctx;
      ctx.comm = local.get();
      topk.compress(groups, ctx);
      const at::Tensor kept = x - groups[0].residual;  // exact: x − 0 where kept, x − x = 0 where dropped
      EXPECT_TRUE(at::equal(groups[0].out, kept)) << dtype << " in_place=" << in_place;
      for (int64_t j = 0; j < 2; ++j) {
        const at::Tensor mag = x[j].flatten().abs(), res = groups[0].residual[j].flatten();
        const at::Tensor sorted = std::get<0>(mag.sort(0, /*descending=*/true));
        ASSERT_TRUE((sorted.narrow(0, 0, 26) > sorted.narrow(0, 1, 26)).all().item<bool>());  // distinct
        EXPECT_EQ((res != 0).sum().item<int64_t>(), 27 - 7) << dtype << " member " << j;
        const at::Tensor is_kept = res == 0;
        EXPECT_GE(mag.masked_select(is_kept).min().item<double>(), mag.masked_select(~is_kept).max().item<double>());
        EXPECT_TRUE(at::equal(res.masked_select(~is_kept), x[j].flatten().masked_select(~is_kept)));
        EXPECT_TRUE(at::equal(kept[j], keep_largest(x[j], 7))) << dtype << " member " << j;
      }
    }
}

TEST(SparseBudget, KFromDensityOrFromK) {
  EXPECT_EQ(SparseBudget().density(0.25).kept(27), 7);        // ⌈6.75⌉
  EXPECT_EQ(SparseBudget().density(0.25).kept(72), 18);       // exact, not rounded up
  EXPECT_EQ(SparseBudget().density(0.07).kept(100), 7);       // 0.07·100 is 7.000000000000001 in double
  EXPECT_EQ(SparseBudget().density(1).kept(27), 27);
  EXPECT_EQ(SparseBudget().kept(7), 1);                       // default 0.01: at least 1
  EXPECT_EQ(SparseBudget().kept(1), 1);
  EXPECT_EQ(SparseBudget().density(0.25).k(5).kept(27), 5);   // k overrides density
  EXPECT_EQ(SparseBudget().k(5).kept(3), 3);                  // min(k, N)

  const auto topk = make_compressor("topk", Config{{"density", "0.25"}});
  EXPECT_TRUE(topk->traits().elementwise);
  EXPECT_EQ(topk->describe(), "topk(density=0.25)");
  EXPECT_EQ(topk->wire_bytes(9, 3, 0, at::kFloat), 7 * 8);    // k fp32 values + k int32 positions
  EXPECT_EQ(topk->wire_bytes(9, 3, 0, at::kDouble), 7 * 12);
  EXPECT_EQ(topk->size_test_bytes(9, 3), 7 * 8.0);
  const auto topk5 = make_compressor("topk", Config{{"density", "0.25"}, {"k", "5"}});
  EXPECT_EQ(topk5->describe(), "topk(density=0.25 k=5)");
  EXPECT_EQ(topk5->wire_bytes(9, 3, 0, at::kFloat), 5 * 8);
  EXPECT_EQ(make_compressor("topk")->wire_bytes(1, 7, 0, at::kFloat), 8);  // tiny: k = 1

  const auto randk = make_compressor("randomk", Config{{"density", "0.25"}});
  EXPECT_TRUE(randk->traits().elementwise);
  EXPECT_EQ(randk->describe(), "randomk(density=0.25)");
  EXPECT_EQ(randk->wire_bytes(9, 3, 0, at::kFloat), 7 * 4);   // values only
  EXPECT_EQ(randk->wire_bytes(9, 3, 0, at::kDouble), 7 * 8);
  EXPECT_EQ(randk->size_test_bytes(9, 3), 7 * 4.0);
  EXPECT_EQ(make_compressor("randomk", Config{{"scaled", "true"}})->describe(), "randomk(density=0.01 scaled=true)");
}

// Runs once per world size W = GetParam().
class SparseW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, SparseW2to3, ::testing::Values(2, 3));

// With EF off, ĝ = (Σ_r topk_r(g_r)) / W, summed in rank order in fp32: the test rebuilds it from an
// all-gather of the raw gradients and expects the same bits.
TEST_P(SparseW2to3, TopKOutputIsTheMeanOfEveryRanksTopKBitForBit) {
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    Params params = model();
    GradientReducer red(params, make_compressor("topk", Config{{"density", "0.25"}}), c,
                        ReducerOptions().error_feedback(false));
    ASSERT_EQ(red.compressed_names().size(), params.size());  // elementwise: the bias too
    for (int64_t s = 0; s < 3; ++s) {
      set_grads(params, c->rank(), s);
      std::vector<at::Tensor> want;
      for (size_t p = 0; p < params.size(); ++p) {
        at::Tensor sum = at::zeros(params[p].second.sizes());
        for (const auto& g : c->all_gather(params[p].second.grad().contiguous())) sum = sum + keep_largest(g, kQuarterK[p]);
        want.push_back(sum.div_(W));
      }
      ASSERT_TRUE(red.reduce());
      for (size_t p = 0; p < params.size(); ++p) {
        const at::Tensor out = params[p].second.grad();
        EXPECT_TRUE(at::equal(out, want[p])) << params[p].first << " W=" << W << " s=" << s << " max diff "
                                             << testing::max_abs_diff(out, want[p]);
        EXPECT_TRUE(testing::same_on_all_ranks(*c, out)) << params[p].first << " s=" << s;
      }
    }
  });
}

// §1.4: Σ_t ĝ(t) + mean_i e_i(T) = Σ_t mean_i g_i(t) for the EF variants (exact in exact arithmetic).
TEST_P(SparseW2to3, ErrorFeedbackTelescopesForTopKAndUnscaledRandomK) {
  constexpr double kTol = 1e-4;  // fp32 rounding over 6 steps of O(1) entries, relative to 1 + max |Σ mean g|
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (const std::string name : {"topk", "randomk"}) {
      Params params = model();
      GradientReducer red(params, make_compressor(name, Config{{"density", "0.25"}}), c, ReducerOptions().seed(4));
      ASSERT_TRUE(red.error_feedback()) << name << ": EF is on by default";
      std::vector<at::Tensor> sent, truth;
      for (const auto& p : params) {
        sent.push_back(at::zeros(p.second.sizes(), at::kDouble));
        truth.push_back(at::zeros(p.second.sizes(), at::kDouble));
      }
      for (int64_t s = 0; s < 6; ++s) {
        set_grads(params, c->rank(), 10 + s);
        for (size_t p = 0; p < params.size(); ++p) truth[p] += testing::gathered_mean(*c, params[p].second.grad());
        ASSERT_TRUE(red.reduce());
        for (size_t p = 0; p < params.size(); ++p) sent[p] += params[p].second.grad().to(at::kDouble);
      }
      double e_sq = 0;
      for (size_t p = 0; p < params.size(); ++p) {
        const at::Tensor mean_e = testing::gathered_mean(*c, testing::ef_of(red, params[p].first, params[p].second));
        e_sq += testing::sq_norm(mean_e);
        const double scale = 1 + truth[p].abs().max().item<double>();
        EXPECT_LE(testing::max_abs_diff(sent[p] + mean_e, truth[p]), kTol * scale) << name << " W=" << W << " "
                                                                                  << params[p].first;
      }
      EXPECT_GT(std::sqrt(e_sq), 0.1) << name << ": e is ~0, the check is vacuous";
    }
  });
}

// Unscaled, EF off: ĝ is the mean gradient at exactly k shared positions and 0 elsewhere.
TEST_P(SparseW2to3, RandomKPositionsAreSharedAndMoveWithTheStep) {
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    Params params = model();
    GradientReducer red(params, make_compressor("randomk", Config{{"density", "0.25"}}), c,
                        ReducerOptions().error_feedback(false).seed(9));
    std::vector<at::Tensor> before(params.size());
    for (int64_t s = 0; s < 3; ++s) {
      set_grads(params, c->rank(), s);
      std::vector<at::Tensor> mean;
      for (const auto& p : params) mean.push_back(testing::gathered_mean(*c, p.second.grad()));
      ASSERT_TRUE(red.reduce());
      for (size_t p = 0; p < params.size(); ++p) {
        const std::string what = params[p].first + " W=" + std::to_string(W) + " s=" + std::to_string(s);
        const at::Tensor out = params[p].second.grad(), kept = out != 0;
        EXPECT_TRUE(testing::same_on_all_ranks(*c, kept.to(at::kByte))) << what;
        EXPECT_TRUE(testing::same_on_all_ranks(*c, out)) << what;
        EXPECT_EQ(kept.sum().item<int64_t>(), kQuarterK[p]) << what;
        EXPECT_LT(testing::max_abs_diff(out.masked_select(kept), mean[p].masked_select(kept)), 1e-5) << what;
        // Moves with the step (w, w2, conv: C(27, 7) and C(72, 18) subsets; the bias has only C(7, 2) = 21).
        if (s > 0 && p > 0) {
          EXPECT_FALSE(at::equal(kept, before[p])) << what << ": the positions of step " << s - 1;
        }
        before[p] = kept;
      }
      EXPECT_FALSE(at::equal(before[1], before[2])) << "w and w2 (one batched group) drew the same positions";
    }
  });
}

// Over `draws` compressed steps on one rank, the elements of the mean ĝ farther from x than 5 standard
// errors |x|·sqrt((N/k − 1)/draws) (scaled rand-k: Var ĝ_e = x_e²·(N/k − 1) per draw). Also checks
// ĝ + e = x (C_i(x) is what ĝ holds on one rank).
int64_t outside_five_standard_errors(RandomK& c, const at::Tensor& x, int64_t draws) {
  std::shared_ptr<comm::Communicator> local = comm::make_local_communicator();
  at::Tensor sum = at::zeros(x.sizes(), at::kDouble);
  for (int64_t s = 0; s < draws; ++s) {
    std::vector<ShapeGroup> groups = {make_group(x.clone())};
    StepContext ctx;
    ctx.compressed_step = s;
    ctx.seed = 2;
    ctx.comm = local.get();
    c.compress(groups, ctx);
    EXPECT_LT(testing::max_abs_diff(groups[0].out + groups[0].residual, x), 1e-5) << c.describe() << " s=" << s;
    sum += groups[0].out.to(at::kDouble);
  }
  const double N = static_cast<double>(x.size(1) * x.size(2)), k = static_cast<double>(c.k_of(x.size(1), x.size(2)));
  const at::Tensor se = x.to(at::kDouble).abs() * std::sqrt((N / k - 1) / static_cast<double>(draws));
  return ((sum / static_cast<double>(draws) - x.to(at::kDouble)).abs() > 5 * se + 1e-9).sum().item<int64_t>();
}

TEST(RandomK, ScaledIsUnbiasedAndTheUnscaledEstimatorFailsTheSameCheck) {
  constexpr int64_t kDraws = 400;
  const at::Tensor x = testing::seeded_randn({2, 4, 6}, 5, 0, 0);  // N = 24, k = 6: N/k = 4
  RandomK scaled(RandomKOptions().budget(SparseBudget().k(6)).scaled(true));
  RandomK plain(RandomKOptions().budget(SparseBudget().k(6)));
  EXPECT_EQ(outside_five_standard_errors(scaled, x, kDraws), 0);
  // Without N/k, E ĝ = x/4: 0.75·|x| away, about 8.7 standard errors, so (nearly) every element fails.
  EXPECT_GT(outside_five_standard_errors(plain, x, kDraws), x.numel() / 2);
}

// Per matrix: topk k·(elem + 4), randomk k·elem; one collective per step for all groups together.
TEST_P(SparseW2to3, BytesHandedEqualTheFormula) {
  struct Case {
    std::string name;
    Config config;
    int64_t sum_k;  // Σ k over model(): density 0.25 gives 2 + 7 + 7 + 18, k = 5 gives 5 each
  };
  const std::vector<Case> cases = {{"topk", Config{{"density", "0.25"}}, 34},
                                   {"topk", Config{{"k", "5"}}, 20},
                                   {"randomk", Config{{"density", "0.25"}}, 34},
                                   {"randomk", Config{{"k", "5"}, {"scaled", "true"}}, 20}};
  const int W = GetParam();
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto dtype : {at::kFloat, at::kDouble})
      for (const auto& cs : cases) {
        const int64_t elem = dtype == at::kDouble ? 8 : 4;
        const int64_t want = cs.sum_k * (elem + (cs.name == "topk" ? 4 : 0));
        Params params = model(dtype);
        GradientReducer red(params, make_compressor(cs.name, cs.config), c);
        for (int64_t s = 0; s < 3; ++s) {
          set_grads(params, c->rank(), s);
          const int64_t bytes = c->stats().bytes_sent, collectives = c->stats().collectives;
          ASSERT_TRUE(red.reduce());
          const std::string what = red.compressor().describe() + " " + c10::toString(dtype) + " s=" + std::to_string(s);
          EXPECT_EQ(c->stats().bytes_sent - bytes, want) << what;
          EXPECT_EQ(red.expected_bytes(s), want) << what;
          EXPECT_EQ(c->stats().collectives - collectives, 1) << what;
        }
      }
  });
}

TEST(SparseOptions, BadDensityAndKAreRefusedNamingTheRange) {
  for (const std::string name : {"topk", "randomk"}) {
    for (const std::string bad : {"0", "1.5", "-1"}) {
      const std::string msg = testing::error_of([&] { make_compressor(name, Config{{"density", bad}}); });
      EXPECT_TRUE(testing::contains(msg, name + ": density must be in (0, 1], got " + bad)) << msg;
    }
    std::string msg = testing::error_of([&] { make_compressor(name, Config{{"density", "nan"}}); });
    EXPECT_TRUE(testing::contains(msg, "density")) << msg;  // Config reads no NaN
    msg = testing::error_of([&] { make_compressor(name, Config{{"k", "-1"}}); });
    EXPECT_TRUE(testing::contains(msg, name + ": k must be >= 0") && testing::contains(msg, "got -1")) << msg;
    EXPECT_NO_THROW(make_compressor(name, Config{{"density", "1"}, {"k", "0"}})) << name;  // the edges
  }
  // NaN set in code reaches validate().
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::string msg = testing::error_of([&] { std::make_unique<TopK>(TopKOptions().budget(SparseBudget().density(nan))); });
  EXPECT_TRUE(testing::contains(msg, "topk: density must be in (0, 1], got nan")) << msg;
  msg = testing::error_of([&] { std::make_unique<RandomK>(RandomKOptions().budget(SparseBudget().density(nan))); });
  EXPECT_TRUE(testing::contains(msg, "randomk: density must be in (0, 1], got nan")) << msg;
}

TEST(SparseOptions, ErrorFeedbackIsOnByDefaultExceptForScaledRandomK) {
  struct Case {
    std::string name;
    Config config;
    bool ef;
  };
  const std::vector<Case> cases = {{"topk", Config{}, true},
                                   {"randomk", Config{}, true},
                                   {"randomk", Config{{"scaled", "true"}}, false}};
  std::shared_ptr<comm::Communicator> local = comm::make_local_communicator();
  for (const auto& cs : cases) {
    EXPECT_EQ(make_compressor(cs.name, cs.config)->traits().default_error_feedback, cs.ef) << cs.name;
    at::Tensor w = at::zeros({9, 3});
    GradientReducer red({{"w", w}}, make_compressor(cs.name, cs.config), local);
    EXPECT_EQ(red.error_feedback(), cs.ef) << red.describe();
    w.mutable_grad() = testing::seeded_randn({9, 3}, 1, 0, 0);
    ASSERT_TRUE(red.reduce());
    bool has_ef = false;
    for (const auto& kv : red.state_dict()) has_ef = has_ef || kv.first == "ef/w";
    EXPECT_EQ(has_ef, cs.ef) << red.describe();
  }
}

// randomk's settings that trained badly where measured warn at start and name what works better;
// topk's do not.
TEST(SparseWarnings, RandomKWarnsAndNamesTheAlternativeTopKDoesNot) {
  const std::vector<MatrixInfo> mats = {{"w", 10, 10}};
  const auto ef = make_compressor("randomk")->start_warnings(mats, true);
  ASSERT_EQ(ef.size(), 1u);
  EXPECT_NE(ef[0].find("--compressor topk"), std::string::npos) << ef[0];
  EXPECT_NE(ef[0].find("--momentum 0"), std::string::npos) << ef[0];
  const auto scaled = make_compressor("randomk", Config{{"scaled", "true"}})->start_warnings(mats, false);
  ASSERT_EQ(scaled.size(), 1u);
  EXPECT_NE(scaled[0].find("variance"), std::string::npos) << scaled[0];
  EXPECT_TRUE(make_compressor("randomk", Config{{"scaled", "true"}, {"density", "0.5"}})->start_warnings(mats, false).empty());
  EXPECT_TRUE(make_compressor("randomk")->start_warnings({}, true).empty());
  EXPECT_TRUE(make_compressor("topk")->start_warnings(mats, true).empty());
}

}  // namespace
}  // namespace lowrank
