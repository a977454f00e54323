// The quantizing baselines (docs/algorithms.md §6): bit packing; QSGD (Alistarh et al. 2017), unbiased
// stochastic levels of bucket norms from per-rank rounding streams; EF-signSGD (Karimireddy et al.
// 2019), the scaled sign with error feedback. Through the GradientReducer over gloo ranks, and by direct
// compress() calls on hand-built shape groups where that is sharper.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compressors/family_support.h"
#include "lowrank/compressors/bit_pack.h"
#include "lowrank/compressors/qsgd.h"
#include "lowrank/compressors/signsgd.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Params = std::vector<std::pair<std::string, at::Tensor>>;
using Case = std::pair<std::string, Config>;  // compressor name, options

std::unique_ptr<Compressor> make_quantizer(const Case& c) {
  return c.first == "qsgd" ? Qsgd::create(c.second) : SignSgd::create(c.second);
}

// A bias, a matrix, a conv tensor ([4, 18]) and a vector that spans two qsgd buckets of 512.
Params quant_params(at::ScalarType dtype) {
  return {{"bias", at::zeros({7}, dtype)}, {"w", at::zeros({9, 3}, dtype)},
          {"conv", at::zeros({4, 2, 3, 3}, dtype)}, {"long", at::zeros({600}, dtype)}};
}

// Seeded N(0, 1) gradients of rank `rank` at step `step`, the first element of every tensor 0 (sign(0)).
void set_grads(Params& params, int64_t rank, int64_t step, uint64_t seed = 21) {
  for (size_t p = 0; p < params.size(); ++p) {
    at::Tensor& t = params[p].second;
    at::Tensor g = testing::seeded_randn(t.sizes(), seed, rank, step, static_cast<int64_t>(p)).to(t.scalar_type());
    g.view(-1)[0].zero_();
    t.mutable_grad() = g;
  }
}

// A hand-built shape group (ordinal 0) of the members of X [b, m, n]; `dicts` holds their (unused) state.
ShapeGroup hand_group(const at::Tensor& X, std::vector<TensorDict>& dicts) {
  ShapeGroup g;
  g.m = X.size(1);
  g.n = X.size(2);
  dicts.resize(X.size(0));
  for (int64_t j = 0; j < X.size(0); ++j) {
    g.names.push_back("p" + std::to_string(j));
    g.states.push_back(&dicts[j]);
  }
  g.delta = X;
  g.out = at::empty_like(X);
  g.residual = at::empty_like(X);
  return g;
}

// Per element of X [b, m, n], in fp64: the norm of its bucket (`bucket` consecutive elements of its member).
at::Tensor bucket_norms(const at::Tensor& X, int64_t bucket) {
  const at::Tensor flat = X.to(at::kDouble).reshape({X.size(0), -1}).contiguous();
  at::Tensor out = at::empty_like(flat);
  const int64_t N = flat.size(1);
  const double* x = flat.data_ptr<double>();
  double* o = out.data_ptr<double>();
  for (int64_t j = 0; j < flat.size(0); ++j)
    for (int64_t start = 0; start < N; start += bucket) {
      const int64_t end = std::min(start + bucket, N);
      double sq = 0;
      for (int64_t k = start; k < end; ++k) sq += x[j * N + k] * x[j * N + k];
      for (int64_t k = start; k < end; ++k) o[j * N + k] = std::sqrt(sq);
    }
  return out.view(X.sizes());
}

// What signsgd sends for g, in g's dtype: scale·sign(g), scale = ‖g‖₁/N summed in fp64 element by
// element and rounded to fp32, sign(0) = +1.
at::Tensor scaled_sign(const at::Tensor& g) {
  const at::Tensor flat = g.to(at::kDouble).reshape(-1).contiguous();
  const double* p = flat.data_ptr<double>();
  double l1 = 0;
  for (int64_t k = 0; k < flat.numel(); ++k) l1 += std::abs(p[k]);
  const float scale = static_cast<float>(l1 / static_cast<double>(flat.numel()));
  return at::where(g >= 0, 1.0, -1.0).to(g.scalar_type()) * static_cast<double>(scale);
}

// World size 1 that keeps what compress() hands to all_gather (one rank's wire bytes).
class Recorder : public comm::Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "recorder"; }
  std::vector<at::Tensor> gathered;

 protected:
  struct NoWait : comm::Handle {
    void wait() override {}
  };
  comm::HandlePtr do_all_reduce(at::Tensor, comm::ReduceOp) override {
    ADD_FAILURE() << "the quantizers only all_gather";
    return std::make_shared<NoWait>();
  }
  std::vector<at::Tensor> do_all_gather(const at::Tensor& t) override {
    gathered.push_back(t.clone());
    return {t.clone()};
  }
  void do_broadcast(at::Tensor, int) override { ADD_FAILURE() << "the quantizers only all_gather"; }
};

TEST(BitPack, RoundTripsRandomCodes) {
  auto gen = at::detail::createCPUGenerator(11);
  for (int bits : {1, 2, 4, 8})
    for (int64_t count : {1, 7, 8, 9, 1000}) {
      const at::Tensor codes = at::randint(0, int64_t{1} << bits, {count}, gen, at::kByte);
      const at::Tensor packed = pack_bits(codes, bits);
      EXPECT_EQ(packed_bytes(count, bits), static_cast<int64_t>(std::ceil(count * bits / 8.0))) << bits << " " << count;
      EXPECT_EQ(packed.numel(), packed_bytes(count, bits)) << bits << " bits, " << count << " codes";
      EXPECT_TRUE(at::equal(unpack_bits(packed, count, bits), codes)) << bits << " bits, " << count << " codes";
    }
}

// Little-endian within a byte: the first code takes the lowest bits; padding bits are 0.
TEST(BitPack, FirstCodeTakesTheLowestBits) {
  auto bytes = [](const std::vector<int64_t>& codes, int bits) {
    const at::Tensor p = pack_bits(at::tensor(codes).to(at::kByte), bits);
    std::vector<int64_t> out;
    for (int64_t k = 0; k < p.numel(); ++k) out.push_back(p[k].item<int64_t>());
    return out;
  };
  EXPECT_EQ(bytes({1, 0, 1, 1, 0, 0, 0, 0, 1}, 1), (std::vector<int64_t>{0x0D, 0x01}));
  EXPECT_EQ(bytes({1, 2, 3}, 2), (std::vector<int64_t>{0x39}));
  EXPECT_EQ(bytes({3, 10, 15}, 4), (std::vector<int64_t>{0xA3, 0x0F}));
  EXPECT_EQ(bytes({200, 7}, 8), (std::vector<int64_t>{200, 7}));
  std::string msg = testing::error_of([] { pack_bits(at::tensor(std::vector<int64_t>{1, 4}).to(at::kByte), 2); });
  EXPECT_TRUE(testing::contains(msg, "does not fit in 2 bits")) << msg;
  msg = testing::error_of([] { packed_bytes(5, 3); });
  EXPECT_TRUE(testing::contains(msg, "got 3")) << msg;
}

// E[ĝ] = x on one rank: over S = 400 steps (each its own rounding stream) the mean of ĝ is within 5
// standard errors of x everywhere, SE ≤ ‖v‖/(2s·√S) from Var ≤ (‖v‖/s)²/4. Round-to-nearest, biased by
// up to ‖v‖/(2s), fails the same check for most elements.
TEST(Qsgd, IsUnbiasedWhereDeterministicRoundingIsNot) {
  constexpr int64_t kSteps = 400, kLevels = 2, kBucket = 16;
  const at::Tensor X = testing::seeded_randn({2, 3, 10}, 3, 0, 0);
  std::vector<TensorDict> dicts;
  std::vector<ShapeGroup> groups = {hand_group(X, dicts)};
  auto comm = comm::make_local_communicator();
  StepContext ctx;
  ctx.seed = 5;
  ctx.comm = comm.get();
  Qsgd q(QsgdOptions().levels(kLevels).bucket_size(kBucket));
  at::Tensor sum = at::zeros(X.sizes(), at::kDouble), first;
  for (int64_t t = 0; t < kSteps; ++t) {
    ctx.compressed_step = t;
    q.compress(groups, ctx);
    if (t == 0) first = groups[0].out.clone();
    sum += groups[0].out.to(at::kDouble);
  }
  EXPECT_GT(testing::max_abs_diff(first, X), 0.05);  // one step is quantized
  ctx.compressed_step = 0;
  q.compress(groups, ctx);
  EXPECT_TRUE(at::equal(groups[0].out, first));  // a pure function of (seed, step): resumes bit-exactly
  const at::Tensor x = X.to(at::kDouble), norm = bucket_norms(X, kBucket);
  const at::Tensor se = norm / (2.0 * kLevels * std::sqrt(static_cast<double>(kSteps)));
  EXPECT_LE(((sum / static_cast<double>(kSteps) - x).abs() / se).max().item<double>(), 5.0);
  const at::Tensor nearest = x.sign() * norm / kLevels * (x.abs() * kLevels / norm + 0.5).floor();
  EXPECT_GT(((nearest - x).abs() / se > 5.0).sum().item<int64_t>(), X.numel() / 2);
}

// Member `wire` (qsgd.h's layout: codes, then fp32 bucket norms) against its x and ĝ = out (W = 1).
void check_qsgd_member(const Qsgd& q, const at::Tensor& wire, const at::Tensor& x, const at::Tensor& out) {
  const int64_t L = q.options().levels(), bucket = q.options().bucket_size(), N = x.numel();
  const int64_t nb = (N + bucket - 1) / bucket, code_bytes = packed_bytes(N, q.code_bits());
  ASSERT_EQ(wire.numel(), code_bytes + 4 * nb);
  const at::Tensor codes = unpack_bits(wire, N, q.code_bits()).to(at::kLong);
  const at::Tensor norms = wire.narrow(0, code_bytes, 4 * nb).clone().view(at::kFloat).to(at::kDouble);
  const at::Tensor truth = bucket_norms(x.reshape({1, 1, N}), bucket).reshape(-1);
  const at::Tensor xs = x.reshape(-1).to(at::kDouble), os = out.reshape(-1).to(at::kDouble);
  EXPECT_LE(codes.max().item<int64_t>(), 2 * L);
  for (int64_t k = 0; k < N; ++k) {
    const double nf = norms[k / bucket].item<double>(), xk = xs[k].item<double>();
    const int64_t c = codes[k].item<int64_t>() - L;
    EXPECT_NEAR(nf, truth[k].item<double>(), 1e-6 * nf);
    EXPECT_NEAR(os[k].item<double>(), nf / static_cast<double>(L) * static_cast<double>(c), 1e-6 * nf) << k;
    if (nf == 0) continue;  // a zero bucket: ĝ = 0 (checked just above)
    EXPECT_LT(std::abs(std::abs(static_cast<double>(c)) - std::abs(xk) * L / nf), 1.0 + 1e-5) << k;  // adjacent level
    if (c != 0) {
      EXPECT_EQ(c > 0, xk > 0) << k;
    }
  }
}

// One rank's codes c + s stay in [0, 2s], in 2, 4, 8 bits for s = 1, 7, 127; ĝ = ‖v‖/s·c with |c| one
// of the two levels around |x|·s/‖v‖ and the sign of x; a zero bucket decodes to 0; e = x − ĝ.
TEST(Qsgd, CodesStayInRangeAndDecodeToLevelsOfTheBucketNorm) {
  at::Tensor X = testing::seeded_randn({2, 3, 10}, 4, 0, 0);
  X[1].view(-1).narrow(0, 0, 16).zero_();  // member 1's first bucket
  for (const auto& levels_bits : std::vector<std::pair<int64_t, int>>{{1, 2}, {7, 4}, {127, 8}}) {
    Qsgd q(QsgdOptions().levels(levels_bits.first).bucket_size(16));
    EXPECT_EQ(q.code_bits(), levels_bits.second);
    std::vector<TensorDict> dicts;
    std::vector<ShapeGroup> groups = {hand_group(X, dicts)};
    Recorder rec;
    StepContext ctx;
    ctx.compressed_step = 3;
    ctx.comm = &rec;
    q.compress(groups, ctx);
    ASSERT_EQ(rec.gathered.size(), 1u);
    const int64_t mb = q.wire_bytes(3, 10, 3, at::kFloat);
    ASSERT_EQ(rec.gathered[0].numel(), 2 * mb);
    for (int64_t j = 0; j < 2; ++j)
      check_qsgd_member(q, rec.gathered[0].narrow(0, j * mb, mb), X[j], groups[0].out[j]);
    EXPECT_LT(testing::max_abs_diff(groups[0].residual + groups[0].out, X), 1e-6);
  }
}

TEST(Quantizers, WireBytesFollowTheCodeWidthPaddedPerMatrix) {
  // N = 600, bucket 512: packed codes + 2 norms; 2s + 1 codes need 2, 4, 4, 8, 8 bits.
  for (const auto& lb : std::vector<std::pair<int64_t, int64_t>>{{1, 158}, {2, 308}, {7, 308}, {8, 608}, {127, 608}}) {
    const auto q = Qsgd::create(Config{{"levels", std::to_string(lb.first)}});
    EXPECT_EQ(q->wire_bytes(1, 600, 0, at::kFloat), lb.second) << "levels " << lb.first;
    EXPECT_EQ(q->wire_bytes(20, 30, 5, at::kDouble), lb.second) << "levels " << lb.first;
    EXPECT_EQ(q->size_test_bytes(20, 30), static_cast<double>(lb.second)) << "levels " << lb.first;
  }
  EXPECT_EQ(Qsgd::create(Config{{"bucket_size", "100"}})->wire_bytes(1, 600, 0, at::kFloat), 300 + 4 * 6);
  EXPECT_EQ(Qsgd::create(Config{})->wire_bytes(1, 7, 0, at::kFloat), 4 + 4);  // 28 bits padded to 4 bytes
  const auto s = SignSgd::create(Config{});
  EXPECT_EQ(s->wire_bytes(1, 600, 0, at::kFloat), 75 + 4);
  EXPECT_EQ(s->wire_bytes(9, 3, 0, at::kDouble), 4 + 4);  // 27 bits padded to 4 bytes
  EXPECT_EQ(s->size_test_bytes(1, 7), 1.0 + 4.0);
}

TEST(Quantizers, ConstructFromConfigAndRejectBadOptions) {
  EXPECT_EQ(Qsgd::create(Config{})->describe(), "qsgd(levels=7 bucket_size=512)");
  EXPECT_EQ(Qsgd::create(Config{{"levels", "3"}, {"bucket_size", "64"}})->describe(), "qsgd(levels=3 bucket_size=64)");
  EXPECT_EQ(SignSgd::create(Config{})->describe(), "signsgd");
  EXPECT_TRUE(Qsgd::create(Config{})->traits().elementwise);
  EXPECT_TRUE(SignSgd::create(Config{})->traits().elementwise);
  std::string msg = testing::error_of([] { Qsgd::create(Config{{"levels", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "qsgd: levels must be in [1, 127], got 0")) << msg;
  msg = testing::error_of([] { Qsgd::create(Config{{"levels", "128"}}); });
  EXPECT_TRUE(testing::contains(msg, "qsgd: levels must be in [1, 127], got 128")) << msg;
  msg = testing::error_of([] { Qsgd::create(Config{{"bucket_size", "0"}}); });
  EXPECT_TRUE(testing::contains(msg, "qsgd: bucket_size must be in [1, 2147483648], got 0")) << msg;
}

// Error feedback when the user does not say: on for EF-signSGD, off for the unbiased QSGD.
TEST(Quantizers, DefaultErrorFeedbackIsOnForSignSgdOffForQsgd) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    for (const std::string name : {"signsgd", "qsgd"}) {
      at::Tensor w = at::zeros({9, 3});
      GradientReducer red({{"w", w}}, make_quantizer({name, Config{}}), c);
      w.mutable_grad() = testing::seeded_randn({9, 3}, 51, c->rank(), 0);
      red.reduce();
      bool has_ef = false;
      for (const auto& kv : red.state_dict()) has_ef = has_ef || kv.first == "ef/w";
      EXPECT_EQ(has_ef, name == "signsgd") << name;
      EXPECT_EQ(red.error_feedback(), name == "signsgd") << name;
    }
  });
}

// Runs once per world size W = GetParam().
class QuantizeW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, QuantizeW2to3, ::testing::Values(2, 3));

// ĝ = (Σ_r scale_r·sign(g_r)) / W in rank order, bit for bit against the test's own all-gather of the
// raw gradients (EF off, so Δ = g), fp32 and fp64; sign(0) counts as +. With EF on, each rank's buffer
// after one step is its own residual g − scale·sign(g).
TEST_P(QuantizeW2to3, SignSgdIsTheRankOrderMeanOfScaledSigns) {
  testing::run_ranks_shared(GetParam(), [](std::shared_ptr<comm::Communicator> c) {
    for (const auto dtype : {at::kFloat, at::kDouble})
      for (const bool ef : {false, true}) {
        Params params = quant_params(dtype);
        GradientReducer red(params, SignSgd::create(Config{}), c, ReducerOptions().error_feedback(ef));
        for (int64_t s = 0; s < (ef ? 1 : 3); ++s) {
          set_grads(params, c->rank(), s);
          std::vector<at::Tensor> want, grads;
          for (auto& p : params) {
            grads.push_back(p.second.grad().clone());
            at::Tensor acc = at::zeros_like(grads.back());
            for (const auto& g : c->all_gather(grads.back())) acc = acc + scaled_sign(g);
            want.push_back(acc.div_(static_cast<double>(c->size())));
          }
          red.reduce();
          for (size_t p = 0; p < params.size(); ++p) {
            const std::string label = params[p].first + " " + c10::toString(dtype) + " s=" + std::to_string(s);
            const at::Tensor out = params[p].second.grad();
            EXPECT_TRUE(at::equal(out, want[p])) << label;
            EXPECT_GT(out.view(-1)[0].item<double>(), 0.0) << label << ": every rank's g[0] = 0 counts as +";
            if (ef) {
              const at::Tensor e = testing::ef_of(red, params[p].first, out);
              EXPECT_LT(testing::max_abs_diff(e, grads[p] - scaled_sign(grads[p])), 1e-6) << label;
            }
          }
        }
      }
  });
}

// Σ_t ĝ_t + mean_j e_j,T = Σ_t mean_j g_j,t over T = 6 steps (docs/algorithms.md §1.4), fp32 and fp64,
// for signsgd and qsgd with error feedback turned on; every ĝ bit-identical on all ranks.
TEST_P(QuantizeW2to3, ErrorFeedbackTelescopesAndAllRanksDecodeTheSame) {
  const std::vector<Case> cases = {{"signsgd", {}}, {"qsgd", {}}, {"qsgd", {{"levels", "1"}, {"bucket_size", "10"}}}};
  testing::run_ranks_shared(GetParam(), [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& kind : cases)
      for (const auto dtype : {at::kFloat, at::kDouble}) {
        Params params = quant_params(dtype);
        GradientReducer red(params, make_quantizer(kind), c, ReducerOptions().error_feedback(true));
        const std::string label = red.compressor().describe() + " " + c10::toString(dtype);
        std::vector<at::Tensor> sent, mean_g;
        for (auto& p : params) {
          sent.push_back(at::zeros(p.second.sizes(), at::kDouble));
          mean_g.push_back(at::zeros(p.second.sizes(), at::kDouble));
        }
        for (int64_t s = 0; s < 6; ++s) {
          set_grads(params, c->rank(), s, 31);
          for (size_t p = 0; p < params.size(); ++p) mean_g[p] += testing::gathered_mean(*c, params[p].second.grad());
          EXPECT_TRUE(red.reduce()) << label;
          for (size_t p = 0; p < params.size(); ++p) {
            EXPECT_TRUE(testing::same_on_all_ranks(*c, params[p].second.grad())) << label << " s=" << s;
            sent[p] += params[p].second.grad().to(at::kDouble);
          }
        }
        for (size_t p = 0; p < params.size(); ++p) {
          const at::Tensor mean_e = testing::gathered_mean(*c, testing::ef_of(red, params[p].first, params[p].second));
          EXPECT_GT(testing::sq_norm(mean_e), 1e-3) << label << " " << params[p].first << ": the buffer is in play";
          const double scale = 1.0 + mean_g[p].abs().max().item<double>();
          EXPECT_LT(testing::max_abs_diff(sent[p] + mean_e, mean_g[p]) / scale, 1e-4) << label << " " << params[p].first;
        }
      }
  });
}

// Each rank rounds with its own stream (rank_stream_id): from one gradient g shared by all ranks they
// keep different residuals e_r, and ĝ is the mean of their decodes, g − mean_r e_r.
TEST_P(QuantizeW2to3, QsgdRanksRoundWithTheirOwnStreams) {
  testing::run_ranks_shared(GetParam(), [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({600});
    GradientReducer red({{"long", w}}, Qsgd::create(Config{}), c, ReducerOptions().error_feedback(true));
    w.mutable_grad() = testing::seeded_randn({600}, 41, 0, 0);  // the same on every rank
    const at::Tensor g = w.grad().clone();
    red.reduce();
    const at::Tensor e = testing::ef_of(red, "long", w);
    EXPECT_FALSE(testing::same_on_all_ranks(*c, e));
    EXPECT_LT(testing::max_abs_diff(w.grad(), g.to(at::kDouble) - testing::gathered_mean(*c, e)), 1e-5);
  });
}

// Per reduce(): one all_gather, and the bytes handed to it = expected_bytes = the hand sum over
// N = 7, 27, 72 ([4, 18]), 600 of
//   signsgd ceil(N/8) + 4:                           5 + 8 + 13 + 79  = 105
//   qsgd s = 7 (4 bits), bucket 512: ⌈N/2⌉ + 4·⌈N/512⌉: 8 + 18 + 40 + 308 = 374
//   qsgd s = 1 (2 bits), bucket 10:  ⌈N/4⌉ + 4·⌈N/10⌉:  6 + 19 + 50 + 390 = 465
TEST_P(QuantizeW2to3, BytesHandedEqualExpectedEqualTheHandFormula) {
  const std::vector<std::pair<Case, int64_t>> cases = {
      {{"signsgd", {}}, 105}, {{"qsgd", {}}, 374}, {{"qsgd", {{"levels", "1"}, {"bucket_size", "10"}}}, 465}};
  testing::run_ranks_shared(GetParam(), [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& kb : cases) {
      Params params = quant_params(at::kFloat);
      GradientReducer red(params, make_quantizer(kb.first), c);
      for (int64_t s = 0; s < 2; ++s) {
        set_grads(params, c->rank(), s);
        const int64_t bytes = c->stats().bytes_sent, collectives = c->stats().collectives;
        red.reduce();
        const std::string label = red.compressor().describe() + " s=" + std::to_string(s);
        EXPECT_EQ(c->stats().bytes_sent - bytes, kb.second) << label;
        EXPECT_EQ(red.expected_bytes(s), kb.second) << label;
        EXPECT_EQ(c->stats().collectives - collectives, 1) << label;
      }
    }
  });
}

// signsgd warns at start (it trails at comparable traffic where measured), and more strongly
// without error feedback, where the scaled sign is biased; qsgd (unbiased) does not.
TEST(QuantizerWarnings, SignSgdWarnsQsgdDoesNot) {
  const std::vector<MatrixInfo> mats = {{"w", 10, 10}};
  const auto with_ef = SignSgd::create({})->start_warnings(mats, true);
  ASSERT_EQ(with_ef.size(), 1u);
  EXPECT_NE(with_ef[0].find("--compressor topk"), std::string::npos) << with_ef[0];
  const auto without = SignSgd::create({})->start_warnings(mats, false);
  ASSERT_EQ(without.size(), 1u);
  EXPECT_NE(without[0].find("biased"), std::string::npos) << without[0];
  EXPECT_TRUE(Qsgd::create({})->start_warnings(mats, false).empty());
}

}  // namespace
}  // namespace lowrank
