// The 16-bit casts "fp16" and "bf16" (docs/algorithms.md §6): the cast's round-trip error is within
// the format's unit roundoff and lands in the residual; through the GradientReducer every tensor
// (0-d and 1-d included) is compressed, bf16 equals the rank-order fp32 sum of the bf16 packets bit
// for bit, fp16 stays within a derived bound of the exact mean (and is exact at W = 2), the wire is
// 2 bytes per element, fp16 clamps instead of overflowing, and error feedback (when asked for) keeps
// the clamped remainder.
#include "lowrank/compressors/low_precision.h"

#include <ATen/CPUGeneratorImpl.h>
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

using Params = std::vector<std::pair<std::string, at::Tensor>>;

// 0-d, 1-d (a bias), a matrix and a 4-D "conv" tensor: an elementwise method compresses them all.
const std::vector<std::pair<std::string, std::vector<int64_t>>> kShapes = {
    {"scalar", {}}, {"bias", {7}}, {"tall", {9, 3}}, {"conv", {4, 2, 3, 3}}};

const double kU16 = std::ldexp(1.0, -11);  // fp16's unit roundoff
const double kUbf = std::ldexp(1.0, -8);   // bf16's unit roundoff

// N(0, 1) times 2^k, k uniform in {−kmax, …, kmax}: magnitudes over many decades.
at::Tensor varied(at::IntArrayRef shape, int64_t kmax, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const at::Tensor k = at::randint(-kmax, kmax + 1, shape, gen, at::TensorOptions().dtype(at::kFloat));
  return at::randn(shape, gen, at::kFloat) * at::exp2(k);
}

// Whether every element of x is a value of the 16-bit `dtype` (survives the round trip unchanged).
bool representable(const at::Tensor& x, at::ScalarType dtype) {
  return at::equal(x.to(dtype).to(x.scalar_type()), x);
}

// One group per delta ([b, m, n]); residual is delta itself when `alias` (the reducer's in-place path).
std::vector<ShapeGroup> groups_of(const std::vector<at::Tensor>& deltas, TensorDict* state, bool alias) {
  std::vector<ShapeGroup> groups;
  for (size_t i = 0; i < deltas.size(); ++i) {
    ShapeGroup g;
    g.ordinal = static_cast<int64_t>(i);
    g.m = deltas[i].size(1);
    g.n = deltas[i].size(2);
    for (int64_t j = 0; j < deltas[i].size(0); ++j) {
      g.names.push_back("p" + std::to_string(i) + "." + std::to_string(j));
      g.states.push_back(state);
    }
    g.delta = deltas[i].clone();
    g.out = at::zeros_like(g.delta);
    g.residual = alias ? g.delta : at::zeros_like(g.delta);
    groups.push_back(std::move(g));
  }
  return groups;
}

TEST(LowPrecision, DescribesItself) {
  for (const std::string name : {"fp16", "bf16"}) {
    auto c = make_compressor(name);
    EXPECT_EQ(c->name(), name);
    EXPECT_EQ(c->describe(), name);
    const Compressor::Traits t = c->traits();
    EXPECT_TRUE(t.compresses && t.communicates && t.elementwise && t.in_place_residual) << name;
    EXPECT_FALSE(t.default_error_feedback || t.wants_raw_gradient || t.fuses_delta) << name;
    for (const at::ScalarType work : {at::kFloat, at::kDouble}) EXPECT_EQ(c->wire_bytes(7, 3, 5, work), 42) << name;
    EXPECT_DOUBLE_EQ(c->size_test_bytes(7, 3), 42.0);
  }
}

// A 16-bit format: unit roundoff u, smallest normal value, and the exponent range of the test data.
struct Format {
  std::string name;
  at::ScalarType half;
  double u, min_normal;
  int64_t kmax;  // fp16: |x| < 5·2^12 stays under the clamp; bf16: far inside fp32's normal range
};

// The round trip of one group on one rank (no pre-division, no sum): ĝ is the packet itself, so
// residual = Δ − ĝ exactly and ĝ is a 16-bit value, and the cast loses at most u·|x| in the normal
// range, min_normal·u (half the subnormal spacing) below it. The residual is exact (x and its
// rounding are within a factor 2: Sterbenz); fp64 deltas hold fp32 values, so no double rounding.
void expect_round_trip(const ShapeGroup& g, const at::Tensor& delta, const Format& f, const std::string& what) {
  ASSERT_EQ(g.out.scalar_type(), delta.scalar_type()) << what;
  EXPECT_TRUE(representable(g.out, f.half)) << what;
  EXPECT_TRUE(at::equal(g.residual, delta - g.out)) << what;
  EXPECT_GT(testing::sq_norm(g.residual), 0.0) << what;  // the cast did round
  const at::Tensor x = delta.to(at::kDouble).abs();
  const at::Tensor bound = at::where(x >= f.min_normal, x * f.u, at::full_like(x, f.min_normal * f.u));
  EXPECT_TRUE((g.residual.to(at::kDouble).abs() <= bound).all().item<bool>()) << what;
}

// Two groups (the flat buffer's views) in fp32 and fp64; the same results with the residual aliasing
// delta (Traits::in_place_residual); one collective of 2 bytes per element.
TEST(LowPrecision, RoundTripErrorIsWithinTheUnitRoundoff) {
  const std::vector<Format> formats = {{"fp16", at::kHalf, kU16, std::ldexp(1.0, -14), 12},
                                       {"bf16", at::kBFloat16, kUbf, std::ldexp(1.0, -126), 100}};
  TensorDict state;
  for (const Format& f : formats)
    for (const at::ScalarType work : {at::kFloat, at::kDouble}) {
      const std::vector<at::Tensor> deltas = {varied({2, 3, 40}, f.kmax, 11).to(work),
                                              varied({1, 1, 50}, f.kmax, 12).to(work)};
      std::vector<ShapeGroup> groups = groups_of(deltas, &state, false), aliased = groups_of(deltas, &state, true);
      auto comm = comm::make_local_communicator();
      StepContext ctx;
      ctx.comm = comm.get();
      make_compressor(f.name)->compress(groups, ctx);
      EXPECT_EQ(comm->stats().bytes_sent, 2 * (2 * 3 * 40 + 50)) << f.name;
      EXPECT_EQ(comm->stats().collectives, 1) << f.name;
      make_compressor(f.name)->compress(aliased, ctx);
      for (size_t i = 0; i < groups.size(); ++i) {
        const std::string what = f.name + " " + c10::toString(work) + " group " + std::to_string(i);
        expect_round_trip(groups[i], deltas[i], f, what);
        EXPECT_TRUE(at::equal(aliased[i].out, groups[i].out)) << what;
        EXPECT_TRUE(at::equal(aliased[i].residual, groups[i].residual)) << what;
      }
    }
}

// fp16: ĝ = fl16(Σ_j p_j), p_j = half(fl(g_j / W)), summed by gloo in its own order, so ĝ is checked
// against the exact mean by a bound. Per element, with S = Σ_j |g_j| / W and γ_k = k·u / (1 − k·u):
//   |p_j − g_j / W| <= (u + 2^-24 + u·2^-24)·|g_j| / W + 2^-25   (the division, the cast; 2^-25 for
//                                                                 fp16 subnormals)
//   |fl16(Σ_j p_j) − Σ_j p_j| <= γ_{W−1}·Σ_j |p_j|              (any order; additions whose result is
//                                                                 subnormal are exact)
// so |ĝ − mean_j g_j| <= (u + γ_{W−1})·(1 + 2u)·S + W·2^-24 <= 1.01·W·u·S + W·2^-24 for W <= 3.
// At W = 2 the one addition is commutative: ĝ = fl16(p_0 + p_1) exactly (gloo rounds to nearest even).
void expect_fp16_result(const at::Tensor& out, const std::vector<at::Tensor>& all, const std::string& what) {
  const int64_t W = static_cast<int64_t>(all.size());
  at::Tensor mean = at::zeros(out.sizes(), at::kDouble), S = at::zeros(out.sizes(), at::kDouble);
  for (const at::Tensor& g : all) {
    mean += g.to(at::kDouble);
    S += g.to(at::kDouble).abs();
  }
  mean /= static_cast<double>(W);
  S /= static_cast<double>(W);
  const at::Tensor tol = S * (1.01 * double(W) * kU16) + double(W) * std::ldexp(1.0, -24);
  EXPECT_TRUE(((out.to(at::kDouble) - mean).abs() <= tol).all().item<bool>()) << what << ": " << out << " vs " << mean;
  EXPECT_TRUE(representable(out, at::kHalf)) << what;
  if (W == 2) {
    const at::Tensor p0 = (all[0] / 2).to(at::kHalf).to(at::kFloat), p1 = (all[1] / 2).to(at::kHalf).to(at::kFloat);
    EXPECT_TRUE(at::equal(out, (p0 + p1).to(at::kHalf).to(out.scalar_type()))) << what;
  }
}

// bf16: ĝ = (Σ_j bf16(g_j), in rank order, in the working dtype) / W, bit for bit.
void expect_bf16_result(const at::Tensor& out, const std::vector<at::Tensor>& all, const std::string& what) {
  at::Tensor sum = at::zeros(out.sizes(), out.scalar_type());
  for (const at::Tensor& g : all) sum.add_(g.to(at::kBFloat16).to(out.scalar_type()));
  sum.div_(static_cast<int64_t>(all.size()));
  EXPECT_TRUE(at::equal(out, sum)) << what << ": " << out << " vs " << sum;
}

// Runs once per world size W = GetParam().
class LowPrecisionW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, LowPrecisionW2to3, ::testing::Values(2, 3));

// Default options: every tensor compressed, EF off (no "ef/" state), ĝ bit-identical on all ranks
// and equal to the references above, 2 bytes per element handed to the communicator.
TEST_P(LowPrecisionW2to3, MatchesTheReferenceOnEveryTensor) {
  const int W = GetParam();
  testing::run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
    for (const std::string name : {"fp16", "bf16"})
      for (const at::ScalarType work : {at::kFloat, at::kDouble}) {
        Params ps;
        for (const auto& s : kShapes) ps.emplace_back(s.first, at::zeros(s.second, work));
        GradientReducer red(ps, make_compressor(name), c);
        ASSERT_EQ(red.compressed_names().size(), kShapes.size()) << name;
        EXPECT_FALSE(red.error_feedback()) << name;
        for (int64_t t = 0; t < 2; ++t) {
          std::vector<std::vector<at::Tensor>> all(ps.size());
          for (size_t j = 0; j < ps.size(); ++j) {
            const at::Tensor& p = ps[j].second;
            const at::Tensor g = varied(p.sizes(), 8, 7919 * c->rank() + 104729 * t + 131 * j + 1).to(work);
            for (const at::Tensor& a : c->all_gather(g.reshape({-1}))) all[j].push_back(a.reshape(p.sizes()));
            ps[j].second.mutable_grad() = g.clone();
          }
          const int64_t before = c->stats().bytes_sent;
          red.reduce();
          EXPECT_EQ(c->stats().bytes_sent - before, red.expected_bytes(t)) << name;
          EXPECT_EQ(c->stats().bytes_sent - before, 2 * red.numel()) << name;
          for (size_t j = 0; j < ps.size(); ++j) {
            const at::Tensor out = ps[j].second.grad();
            const std::string what = name + " " + c10::toString(work) + " W=" + std::to_string(W) + " step " +
                                     std::to_string(t) + " " + ps[j].first;
            ASSERT_EQ(out.scalar_type(), work) << what;
            EXPECT_TRUE(testing::same_on_all_ranks(*c, out.reshape({-1}))) << what;
            if (name == "fp16") expect_fp16_result(out, all[j], what);
            else expect_bf16_result(out, all[j], what);
          }
        }
        for (const auto& kv : red.state_dict()) EXPECT_NE(kv.first.rfind("ef/", 0), 0u) << name << " " << kv.first;
      }
  });
}

// Gradients far beyond fp16's range: Δ_i / W is clamped to c_W = Fp16Cast::fp16_limit(W), so ĝ is
// the fp16 sum of W packets a = half(c_W), finite. With error feedback on, the residual keeps the
// clamped remainder and the sum over steps telescopes:
//   Σ_t ĝ_t + mean_j e_j = Σ_t mean_j g_j
// up to (1) each step's fp16 sum, |fl16(Σ_j p_j) − Σ_j p_j| <= γ_{W−1}·Σ_j |p_j| <= γ_{W−1}·65504 (the
// clamp bounds Σ_j |p_j| by W·c_W·(1 + u) <= 65504), and (2) the fp32 roundings of Δ = e + g and of
// e = Δ − W·p, each at most 2^-24·|Δ| <= 2^-24·kSteps·1e6 per step.
TEST_P(LowPrecisionW2to3, Fp16ClampsAndErrorFeedbackKeepsTheRemainder) {
  constexpr int64_t kSteps = 4;
  const int W = GetParam();
  testing::run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({3, 4});
    GradientReducer red({{"w", w}}, make_compressor("fp16"), c, ReducerOptions().error_feedback(true));
    ASSERT_TRUE(red.error_feedback());
    const float a = at::full({}, Fp16Cast::fp16_limit(W), at::kFloat).to(at::kHalf).item<float>();
    at::Tensor summed = at::full({}, a, at::kFloat);  // W copies of a, summed in fp16
    for (int j = 1; j < W; ++j) summed = (summed + a).to(at::kHalf).to(at::kFloat);
    at::Tensor sent = at::zeros({3, 4}, at::kDouble), mean_g = at::zeros({3, 4}, at::kDouble);
    for (int64_t t = 0; t < kSteps; ++t) {
      at::Tensor g = testing::seeded_randn({3, 4}, 9, c->rank(), t);
      g[0][0].fill_(1e6);                           // beyond fp16 on every rank
      g[1][2].fill_(-3e5 * double(c->rank() + 1));  // negative, different per rank, still beyond c_W·W
      mean_g += testing::gathered_mean(*c, g);
      w.mutable_grad() = g.clone();
      red.reduce();
      const at::Tensor out = w.grad();
      ASSERT_TRUE(at::isfinite(out).all().item<bool>()) << "step " << t << ": " << out;
      EXPECT_LE(out.abs().max().item<double>(), 65504.0);
      EXPECT_EQ(out[0][0].item<float>(), summed.item<float>()) << "step " << t;
      EXPECT_EQ(out[1][2].item<float>(), -summed.item<float>()) << "step " << t;
      // 1e6 − W·a: integers below 2^24, exact in fp32.
      if (t == 0) {
        EXPECT_EQ(testing::ef_of(red, "w", w)[0][0].item<float>(), 1e6f - float(W) * a);
      }
      sent += out.to(at::kDouble);
    }
    EXPECT_GT(summed.item<float>(), 0.99f * 65504.0f);  // the clamp is not needlessly tight
    const at::Tensor mean_e = testing::gathered_mean(*c, testing::ef_of(red, "w", w));
    EXPECT_GT(mean_e[0][0].item<double>(), 0.5 * kSteps * 1e6);  // the clamped remainder is kept
    const double gamma = (W - 1) * kU16 / (1 - (W - 1) * kU16);
    const double tol = double(kSteps) * (gamma * 65504.0 + std::ldexp(double(kSteps) * 1e6, -23));
    EXPECT_LT(testing::max_abs_diff(sent + mean_e, mean_g), tol) << "W=" << W;
  });
}

}  // namespace
}  // namespace lowrank
