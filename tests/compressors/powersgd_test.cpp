// Property tests of PowerSGD (docs/algorithms.md §2) driven through the GradientReducer on real gloo
// ranks over loopback, world sizes 1–4: exactness on low-rank input (§2.1), error feedback
// telescoping (§1.4), bit-identical factors and outputs on every rank (§1.7), rank clamping
// (§1.1), the alternating variant's wire cost (§2.3) and recovery after an all-zero step.
#include "lowrank/compressors/powersgd.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"
#include "support/seeded.h"

namespace lowrank {
namespace {

using testing::mix;
using testing::randn_seeded;

using testing::run_ranks_shared;
using Params = std::vector<std::pair<std::string, at::Tensor>>;

// PowerSGD output vs. the exact mean when the mean has rank <= r, relative to 1 + max |mean|: fp32
// rounding of two bmm's and two orthogonalizations, amplified by the condition number of P = Δ̄Q.
// A warm-started Q spans the previous step's row space, which can be nearly orthogonal to part of
// a fresh random Δ̄'s (κ(P) ~ 1e4 seen: worst observed 5.8e-4, seed 2, W = 2, tall, step 2).
// A real failure (a direction of Δ̄ missed) gives errors of O(0.1–1).
constexpr double kExactTol = 5e-3;
// Error-feedback telescoping: fp32 rounding accumulated over a few steps of O(1) entries, relative
// to 1 + max |Σ_t mean_i g_i(t)|. Observed worst case ~1e-6.
constexpr double kTelescopeTol = 1e-4;
// The mean residual must be clearly non-zero, or telescoping would hold trivially.
constexpr double kMinResidualNorm = 0.1;

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// The [m, n] matrix view of a parameter shape (§1.2).
std::pair<int64_t, int64_t> view_of(const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  return {shape[0], numel / shape[0]};
}

Params make_params(const std::vector<ParamSpec>& specs) {
  Params ps;
  for (const auto& s : specs) ps.emplace_back(s.name, at::zeros(s.shape));
  return ps;
}

at::Tensor entry(const GradientReducer& red, const std::string& key) {
  for (const auto& kv : red.state_dict())
    if (kv.first == key) return kv.second;
  return at::Tensor();
}

// Full-rank random gradient of worker `rank` at step t (fp32 values, held in fp64).
at::Tensor full_grad(const ParamSpec& p, uint64_t seed, int rank, int64_t t, size_t index) {
  return randn_seeded(p.shape, mix({seed, uint64_t(rank), uint64_t(t), index}), at::kDouble).to(at::kFloat).to(at::kDouble);
}

// ---------------------------------------------------------------------------------------------
// 2. Exact when every worker's gradient lies in one shared rank-q column space, q <= r.

const std::vector<ParamSpec> kExactSpecs = {
    {"one", {1, 1}},    {"bias", {7}},        {"tall", {12, 3}},   {"tall_b", {12, 3}}, {"wide", {3, 12}},
    {"square", {6, 6}}, {"square_b", {6, 6}}, {"conv", {4, 2, 3}}, {"short", {2, 5}},
};

// g_i = U B_i with U [m, q] shared by all workers and B_i [q, n] per worker, so rank(Δ̄) <= q.
at::Tensor low_rank_grad(const ParamSpec& p, int64_t q, uint64_t seed, int rank, int64_t t, size_t index) {
  if (p.shape.size() < 2) return full_grad(p, seed, rank, t, index);
  const auto mn = view_of(p.shape);
  q = std::min({q, mn.first, mn.second});
  at::Tensor U = randn_seeded({mn.first, q}, mix({seed, 1000, uint64_t(t), index}), at::kDouble);
  at::Tensor B = randn_seeded({q, mn.second}, mix({seed, 2000 + uint64_t(rank), uint64_t(t), index}), at::kDouble);
  return U.matmul(B).to(at::kFloat).to(at::kDouble).reshape(p.shape);
}

// Runs once per world size W = GetParam().
class PowerSgdW1to4 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, PowerSgdW1to4, ::testing::Values(1, 2, 3, 4));

TEST_P(PowerSgdW1to4, ExactWhenTheMeanHasRankAtMostR) {
  constexpr int64_t kSteps = 3;
  // Seed s uses requested rank r and data rank q <= r (q < r: P = Δ̄Q is rank-deficient).
  const std::vector<std::pair<int64_t, int64_t>> kRanks = {{1, 1}, {2, 1}, {2, 2}, {3, 1}, {3, 3}};
  // (batch_same_shape, warm_start)
  const std::vector<std::pair<bool, bool>> kConfigs = {{true, true}, {false, true}, {true, false}};
  const int W = GetParam();
  run_ranks_shared(W, [&, W](std::shared_ptr<comm::Communicator> c) {
    double worst = 0;
    for (int seed = 0; seed < int(kRanks.size()); ++seed) {
      const int64_t r = kRanks[seed].first, q = kRanks[seed].second;
      for (const auto& config : kConfigs) {
        const bool batch = config.first, warm = config.second;
        Params ps = make_params(kExactSpecs);
        Config cfg{{"rank", std::to_string(r)}, {"warm_start", warm ? "true" : "false"}};
        GradientReducer red(ps, make_compressor("powersgd", cfg), c,
                            ReducerOptions().min_compression_rate(0).batch_same_shape(batch).seed(seed));
        ASSERT_EQ(red.compressed_names().size(), kExactSpecs.size() - 1) << "seed=" << seed;
        for (int64_t t = 0; t < kSteps; ++t) {
          std::vector<at::Tensor> want;
          for (size_t j = 0; j < kExactSpecs.size(); ++j) {
            at::Tensor mean = at::zeros(kExactSpecs[j].shape, at::kDouble);
            for (int i = 0; i < W; ++i) mean += low_rank_grad(kExactSpecs[j], q, seed, i, t, j);
            want.push_back(mean / W);
            ps[j].second.mutable_grad() = low_rank_grad(kExactSpecs[j], q, seed, c->rank(), t, j).to(at::kFloat);
          }
          red.reduce();
          EXPECT_EQ(red.stats().last_floats_sent, red.expected_bytes(t) / 4);
          for (size_t j = 0; j < kExactSpecs.size(); ++j) {
            const double err = (ps[j].second.grad().to(at::kDouble) - want[j]).abs().max().item<double>();
            const double scale = 1 + want[j].abs().max().item<double>();
            worst = std::max(worst, err / scale);
            EXPECT_LE(err, kExactTol * scale)
                << "seed=" << seed << " W=" << W << " r=" << r << " q=" << q << " batch=" << batch << " warm=" << warm
                << " step=" << t << " param=" << kExactSpecs[j].name;
          }
        }
      }
    }
    if (c->rank() == 0) std::cout << "  W=" << W << " worst relative error " << worst << "\n";
  });
}

// ---------------------------------------------------------------------------------------------
// 3 and 14. Error feedback telescopes: Σ_t ĝ(t) + mean_i e_i(T) = Σ_t mean_i g_i(t).

// ρ = 1: a [2, 2] matrix stays dense in every mode (so global residual covers a dense matrix),
// the others are compressed (the [3, 2, 2] one only in alternating mode).
const std::vector<ParamSpec> kEfSpecs = {
    {"a", {8, 6}}, {"a2", {8, 6}}, {"wide", {5, 9}}, {"conv", {3, 2, 2}}, {"tiny", {2, 2}}, {"bias", {6}},
};

TEST_P(PowerSgdW1to4, ErrorFeedbackTelescopes) {
  constexpr int kSeeds = 1;  // per configuration: 4 world sizes × 3 modes × 2 residuals = 24 of them
  constexpr int64_t kSteps = 5;
  struct Mode {
    std::string mode;
    int64_t iters;
  };
  const std::vector<Mode> modes = {{"two_allreduce", 1}, {"alternating", 1}, {"alternating", 2}};
  const int W = GetParam();
  run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& mode : modes) {
      for (const std::string residual : {"local", "global"}) {
        for (int seed = 0; seed < kSeeds; ++seed) {
          Params ps = make_params(kEfSpecs);
          Config cfg{{"rank", "2"}, {"powersgd_mode", mode.mode}};
          if (mode.iters > 1) cfg.set("iters_per_step", mode.iters);
          const EfResidual ef_residual = parse_choice("ef_residual", residual, ef_residual_choices());
          GradientReducer red(ps, make_compressor("powersgd", cfg), c,
                              ReducerOptions().min_compression_rate(1).ef_residual(ef_residual).seed(seed));
          ASSERT_GE(red.compressed_names().size(), 3u);
          std::vector<at::Tensor> sent, truth;
          for (const auto& s : kEfSpecs) {
            sent.push_back(at::zeros(s.shape, at::kDouble));
            truth.push_back(at::zeros(s.shape, at::kDouble));
          }
          for (int64_t t = 0; t < kSteps; ++t) {
            for (size_t j = 0; j < kEfSpecs.size(); ++j) {
              for (int i = 0; i < W; ++i) truth[j] += full_grad(kEfSpecs[j], seed, i, t, j) / W;
              ps[j].second.mutable_grad() = full_grad(kEfSpecs[j], seed, c->rank(), t, j).to(at::kFloat);
            }
            red.reduce();
            for (size_t j = 0; j < kEfSpecs.size(); ++j) sent[j] += ps[j].second.grad().to(at::kDouble);
          }
          double residual_sq = 0;
          for (size_t j = 0; j < kEfSpecs.size(); ++j) {
            at::Tensor e = entry(red, "ef/" + kEfSpecs[j].name);
            at::Tensor mean_e =
                e.defined() ? e.to(at::kDouble).contiguous() : at::zeros(kEfSpecs[j].shape, at::kDouble);
            c->all_reduce_(mean_e);
            mean_e /= W;
            residual_sq += mean_e.pow(2).sum().item<double>();
            const double err = (sent[j] + mean_e - truth[j]).abs().max().item<double>();
            const double scale = 1 + truth[j].abs().max().item<double>();
            EXPECT_LE(err, kTelescopeTol * scale)
                << "seed=" << seed << " W=" << W << " mode=" << mode.mode << " iters=" << mode.iters
                << " residual=" << residual << " param=" << kEfSpecs[j].name;
          }
          EXPECT_GT(std::sqrt(residual_sq), kMinResidualNorm)
              << "seed=" << seed << " W=" << W << " mode=" << mode.mode << " residual=" << residual;
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 4. Shared random factors and outputs are bit-identical across ranks.

// Runs once per world size W = GetParam().
class PowerSgdW2to4 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, PowerSgdW2to4, ::testing::Values(2, 3, 4));

TEST_P(PowerSgdW2to4, FactorsAndOutputsAreBitIdenticalOnEveryRank) {
  constexpr int64_t kSteps = 4;
  const int W = GetParam();
  run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
    for (const std::string mode : {"two_allreduce", "alternating"}) {
      for (bool warm : {true, false}) {
        if (mode == "alternating" && !warm) continue;  // alternating always keeps P and Q
        Params ps = make_params(kEfSpecs);
        GradientReducer red(
            ps,
            make_compressor("powersgd",
                            Config{{"rank", "3"}, {"powersgd_mode", mode}, {"warm_start", warm ? "true" : "false"}}),
            c, ReducerOptions().min_compression_rate(0).seed(7));
        for (int64_t t = 0; t < kSteps; ++t) {
          for (size_t j = 0; j < kEfSpecs.size(); ++j)
            ps[j].second.mutable_grad() = full_grad(kEfSpecs[j], 11, c->rank(), t, j).to(at::kFloat);
          red.reduce();
          // Every factor and every output, flattened into one tensor per kind: one all-gather each.
          std::vector<at::Tensor> factors, grads;
          for (const auto& name : red.compressed_names()) {
            for (const std::string key : {"Q", "P"}) {
              at::Tensor f = entry(red, "state/" + name + "/" + key);
              if (key == "P" && mode == "two_allreduce") {
                EXPECT_FALSE(f.defined());
                continue;
              }
              ASSERT_TRUE(f.defined()) << name << "/" << key;
              factors.push_back(f.reshape({-1}));
            }
          }
          for (auto& p : ps) grads.push_back(p.second.grad().reshape({-1}));
          for (const auto& kind :
               {std::make_pair("factors", at::cat(factors)), std::make_pair("grads", at::cat(grads))}) {
            auto all = c->all_gather(kind.second);
            for (int i = 1; i < W; ++i)
              EXPECT_TRUE(at::equal(all[i], all[0]))
                  << "W=" << W << " mode=" << mode << " step=" << t << ": " << kind.first << " differ on rank " << i;
          }
        }
      }
    }
  });
}

TEST(PowerSgd, TheSeedChangesTheRandomFactors) {
  auto run = [](uint64_t seed) {
    auto c = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
    at::Tensor w = at::zeros({8, 6});
    GradientReducer red({{"w", w}}, make_compressor("powersgd"), c, ReducerOptions().seed(seed));
    w.mutable_grad() = randn_seeded({8, 6}, 3, at::kDouble).to(at::kFloat);
    red.reduce();
    return w.grad().clone();
  };
  EXPECT_TRUE(at::equal(run(5), run(5)));
  EXPECT_FALSE(at::equal(run(5), run(6)));
}

// ---------------------------------------------------------------------------------------------
// 7. Rank larger than the matrix: k = min(r, m, n), and the step is then exact.

TEST_P(PowerSgdW1to4, RankLargerThanTheMatrixIsClampedAndExact) {
  const std::vector<ParamSpec> specs = {{"wide", {3, 5}}, {"tall", {5, 3}}, {"one", {1, 1}}, {"col", {4, 1}}};
  const int W = GetParam();
  run_ranks_shared(W, [&, W](std::shared_ptr<comm::Communicator> c) {
    Params ps = make_params(specs);
    GradientReducer red(ps, make_compressor("powersgd", Config{{"rank", "10"}}), c,
                        ReducerOptions().min_compression_rate(0));
    EXPECT_EQ(red.compressed_names(), (std::vector<std::string>{"wide", "tall", "one", "col"}));
    // k(m+n) per matrix with k = min(10, m, n): 3·8 + 3·8 + 1·2 + 1·5.
    EXPECT_EQ(red.expected_bytes(0) / 4, 24 + 24 + 2 + 5);
    for (int64_t t = 0; t < 3; ++t) {
      std::vector<at::Tensor> want;
      for (size_t j = 0; j < specs.size(); ++j) {
        at::Tensor mean = at::zeros(specs[j].shape, at::kDouble);
        for (int i = 0; i < W; ++i) mean += full_grad(specs[j], 21, i, t, j) / W;
        want.push_back(mean);
        ps[j].second.mutable_grad() = full_grad(specs[j], 21, c->rank(), t, j).to(at::kFloat);
      }
      red.reduce();
      EXPECT_EQ(red.stats().last_floats_sent, 24 + 24 + 2 + 5);
      for (size_t j = 0; j < specs.size(); ++j) {
        const double scale = 1 + want[j].abs().max().item<double>();
        EXPECT_LE((ps[j].second.grad().to(at::kDouble) - want[j]).abs().max().item<double>(), kExactTol * scale)
            << "W=" << W << " step=" << t << " " << specs[j].name;
        // k = m: P̂ spans all of ℝ^m, so even each rank's local residual is zero up to rounding.
        if (specs[j].shape[0] <= specs[j].shape[1])
          EXPECT_LE(entry(red, "ef/" + specs[j].name).abs().max().item<double>(), kExactTol * scale)
              << "W=" << W << " step=" << t << " " << specs[j].name;
      }
    }
    EXPECT_EQ(entry(red, "state/wide/Q").sizes(), at::IntArrayRef({5, 3}));  // Q [n, k]
    EXPECT_EQ(entry(red, "state/tall/Q").sizes(), at::IntArrayRef({3, 3}));
    EXPECT_EQ(entry(red, "state/col/Q").sizes(), at::IntArrayRef({1, 1}));
  });
  // At the default ρ = 2 a 3×5 matrix at k = 3 fails the size rule: 15 > 2·24 is false.
  auto c = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
  GradientReducer dense({{"wide", at::zeros({3, 5})}}, make_compressor("powersgd", Config{{"rank", "10"}}), c);
  EXPECT_TRUE(dense.compressed_names().empty());
  EXPECT_EQ(dense.expected_bytes(0) / 4, 15);
}

// ---------------------------------------------------------------------------------------------
// 14. Alternating mode (§2.3): k·n floats on even steps, k·m on odd steps.

// Runs once per world size W = GetParam().
class PowerSgdW1to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, PowerSgdW1to3, ::testing::Values(1, 2, 3));

TEST_P(PowerSgdW1to3, AlternatingWireFloatsAlternateBetweenKnAndKm) {
  const int W = GetParam();
  run_ranks_shared(W, [](std::shared_ptr<comm::Communicator> c) {
    for (int64_t iters : {1, 2, 3}) {
      at::Tensor a = at::zeros({8, 6}), b = at::zeros({3, 5}), bias = at::zeros({4});
      Config cfg{{"rank", "2"}, {"powersgd_mode", "alternating"}, {"iters_per_step", std::to_string(iters)}};
      GradientReducer red({{"a", a}, {"b", b}, {"bias", bias}}, make_compressor("powersgd", cfg), c,
                          ReducerOptions().min_compression_rate(0).start_iter(1));
      int64_t total_compressed = 0;
      for (int64_t t = 0; t < 6; ++t) {
        a.mutable_grad() = randn_seeded({8, 6}, mix({3, uint64_t(c->rank()), uint64_t(t)}), at::kDouble).to(at::kFloat);
        b.mutable_grad() = randn_seeded({3, 5}, mix({4, uint64_t(c->rank()), uint64_t(t)}), at::kDouble).to(at::kFloat);
        bias.mutable_grad() = at::ones({4});
        red.reduce();
        int64_t want = 48 + 15 + 4;  // t = 0 is dense warm-up
        if (t >= 1) {
          want = 4;
          for (int64_t j = 0; j < iters; ++j) {
            const int64_t l = (t - 1) * iters + j;  // half-step counter ℓ
            // k = 2 for a [8, 6] and for b [3, 5]: even ℓ sends Q (k·n), odd ℓ sends P (k·m).
            want += l % 2 == 0 ? 2 * 6 + 2 * 5 : 2 * 8 + 2 * 3;
          }
          total_compressed += want;
        }
        EXPECT_EQ(red.stats().last_floats_sent, want) << "iters=" << iters << " t=" << t;
        EXPECT_EQ(red.expected_bytes(t - 1) / 4, want) << "iters=" << iters << " t=" << t;
      }
      // Over the 5 compressed steps: Σ dense / Σ sent.
      EXPECT_DOUBLE_EQ(red.stats().compression_ratio(), double(5 * (48 + 15 + 4)) / double(total_compressed));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// An all-zero mean (an unused layer, the first step of a frozen one; a missing gradient counts as
// zero) must not leave a warm-start factor at zero forever. A [6, 2] matrix at rank 2 has k = n; with
// every rank holding the same gradient U·B_t (U fixed), live factors make every step exact in both
// modes (alternating: Q̂ spans ℝ², P̂ spans col(U)). With a dead factor the output would stay zero
// and error feedback would swallow every gradient.

// Runs once per world size W = GetParam().
class PowerSgdW1to2 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, PowerSgdW1to2, ::testing::Values(1, 2));

TEST_P(PowerSgdW1to2, RecoversAfterAnAllZeroStep) {
  const int W = GetParam();
  run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
    for (const std::string mode : {"two_allreduce", "alternating"}) {
      at::Tensor w = at::zeros({6, 2});
      GradientReducer red({{"w", w}}, make_compressor("powersgd", Config{{"rank", "2"}, {"powersgd_mode", mode}}), c,
                          ReducerOptions().min_compression_rate(0));
      red.reduce();  // no gradient at all: counts as zero
      EXPECT_TRUE(at::equal(w.grad(), at::zeros({6, 2}))) << mode << ": zero in, zero out, no NaN";
      for (int t = 1; t < 4; ++t) {
        at::Tensor g = randn_seeded({6, 2}, 0, at::kDouble).matmul(randn_seeded({2, 2}, t, at::kDouble)).to(at::kFloat);  // same on all ranks
        w.mutable_grad() = g.clone();
        red.reduce();
        const double scale = 1 + g.abs().max().item<double>();
        EXPECT_LE((w.grad() - g).abs().max().item<double>(), kExactTol * scale)
            << mode << " W=" << W << " step " << t << ": a factor stayed zero after the all-zero step";
      }
    }
  });
}

}  // namespace
}  // namespace lowrank
