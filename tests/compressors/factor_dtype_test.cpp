// Quantized low-rank factors, factor_dtype = bf16 | fp16 | int8 (factor_codec.h, docs/algorithms.md §6),
// for every low-rank compressor: the codec itself (int8 steps, 16-bit rounding and clamp, the
// rank-order sum of one all-gather), the bytes on the wire, and, through the GradientReducer over
// gloo ranks, bit-identical outputs, exact error feedback, closeness to fp32 factors and an fp32
// setting that changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compressors/family_support.h"
#include "lowrank/compressors/factor_codec.h"
#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/compressor_cases.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

using Case = testing::CompressorCase;
using testing::low_rank_cases;  // every low-rank compressor; the refreshing ones refresh at s = 0, 2, 4

Config with_dtype(Config c, const std::string& dtype) {
  c.set("factor_dtype", dtype);
  return c;
}

std::string label(const Case& cs, const std::string& dtype) {
  std::string out = cs.compressor;
  for (const auto& kv : cs.config.values()) out += " " + kv.first + "=" + kv.second;
  return out + " factor_dtype=" + (dtype.empty() ? "default" : dtype);
}

bool alternating(const Case& cs) { return cs.config.values().count("powersgd_mode") > 0; }
// Whether step s is a restart (powersgd+) or refresh (greedylore, galore) of the cases above.
bool refreshes(const Case& cs, int64_t s) { return cs.compressor != "powersgd" && s % 2 == 0; }

// ---------------------------------------------------------------------------------------------
// The codec on its own.

// int8 steps are max|factor|/127 per member and factor: an all-zero factor decodes to exactly 0,
// every element lands within half a step, max/254 (up to fp32 rounding of the scale and the
// quotient, far below 1e-4 of it). The factors differ in magnitude by 1e5, so a scale shared across
// factors or taken along the wrong axis breaks the bound of the small ones.
TEST(FactorCodec, Int8DecodesEveryFactorWithinHalfAStepAndZeroToZero) {
  for (const auto axis : {FactorAxis::kColumns, FactorAxis::kRows})
    for (const auto dtype : {at::kFloat, at::kDouble}) {
      const int64_t fdim = axis == FactorAxis::kColumns ? 2 : 1, along = 3 - fdim;  // factor index, scale span
      std::vector<at::Tensor> xs;
      for (int64_t v = 0; v < 2; ++v) {
        at::Tensor x = testing::seeded_randn({2 - v, 7 - v, 3}, 3, 0, v).to(dtype);  // [b, rows, k]
        x.select(2, 0).mul_(1000);
        x.select(2, 1).mul_(0.01);
        x[0].select(1, 2).zero_();  // member 0, factor 2: all zero
        xs.push_back(axis == FactorAxis::kColumns ? x : x.transpose(1, 2).contiguous());
      }
      FlatBuffer buf = FlatBuffer::zeros({xs[0].sizes().vec(), xs[1].sizes().vec()}, dtype);
      for (size_t v = 0; v < xs.size(); ++v) buf.views[v].copy_(xs[v]);
      const FactorCodec codec(FactorDtype::kInt8, axis);
      const at::Tensor payload = codec.encode_(buf);
      const int64_t want_bytes =
          2 * factor_bytes(FactorDtype::kInt8, 7, 3, dtype) + factor_bytes(FactorDtype::kInt8, 6, 3, dtype);
      EXPECT_EQ(payload.numel(), want_bytes);
      EXPECT_EQ(payload.scalar_type(), at::kByte);
      for (size_t v = 0; v < xs.size(); ++v) {
        const at::Tensor bound = xs[v].abs().amax(along, /*keepdim=*/true) / 254.0 * (1 + 1e-4);
        EXPECT_TRUE((buf.views[v] - xs[v]).abs().le(bound).all().item<bool>()) << "view " << v;
        EXPECT_FALSE(at::equal(buf.views[v], xs[v])) << "nothing was rounded";
      }
      EXPECT_TRUE(buf.views[0][0].select(fdim - 1, 2).eq(0).all().item<bool>());
      FlatBuffer again = FlatBuffer::zeros({xs[0].sizes().vec(), xs[1].sizes().vec()}, dtype);
      codec.decode_into(payload, again);
      EXPECT_TRUE(at::equal(again.flat, buf.flat)) << "the own factor must be rounded to what others decode";
    }
}

// bf16 rounds to 8 significant bits (relative error ≤ 2^-8), fp16 to 11 (≤ 2^-11) after clamping to
// ±65504; both send 2 bytes per element and decode to the rounded own factor.
TEST(FactorCodec, SixteenBitSchemesRoundAndClamp) {
  for (const auto dtype : {FactorDtype::kBf16, FactorDtype::kFp16}) {
    const at::Tensor x = testing::seeded_randn({2, 6, 2}, 4, 0, 0) * 10;
    x[1][2][1] = 1e6;
    FlatBuffer buf = FlatBuffer::zeros({{2, 6, 2}}, at::kFloat);
    buf.flat.copy_(x.reshape({-1}));
    const at::Tensor payload = FactorCodec(dtype).encode_(buf);
    EXPECT_EQ(payload.numel(), factor_bytes(dtype, 6, 2, at::kFloat) * 2);
    const at::Tensor got = buf.views[0];
    const double u = dtype == FactorDtype::kBf16 ? std::pow(2.0, -8) : std::pow(2.0, -11);
    const at::Tensor want = dtype == FactorDtype::kFp16 ? x.clamp(-65504, 65504) : x;
    EXPECT_TRUE((got - want).abs().le(want.abs() * u + 1e-7).all().item<bool>());
    EXPECT_FALSE(at::equal(got, x));
    if (dtype == FactorDtype::kFp16) {
      EXPECT_EQ(got[1][2][1].item<float>(), 65504.0f);
    }
  }
  FlatBuffer buf = FlatBuffer::zeros({{1, 3, 2}}, at::kFloat);
  buf.flat.copy_(at::arange(6, at::kFloat) / 3);
  const at::Tensor before = buf.flat.clone();
  EXPECT_FALSE(FactorCodec(FactorDtype::kFp32).encode_(buf).defined());
  EXPECT_TRUE(at::equal(buf.flat, before));
  EXPECT_EQ(factor_bytes(FactorDtype::kFp32, 3, 2, at::kDouble), 48);
}

class FactorDtypeW2to3 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, FactorDtypeW2to3, ::testing::Values(2, 3));

// sum_ is one all-gather of this rank's payload, then Σ_r decode(payload_r) in rank order: every
// rank can rebuild every other rank's factors here, so the sum is checked bit for bit.
TEST_P(FactorDtypeW2to3, SumIsOneAllGatherAndTheRankOrderSumOfDecodes) {
  const int W = GetParam();
  testing::run_ranks(W, [&](comm::Communicator& c) {
    for (const auto dtype : {FactorDtype::kBf16, FactorDtype::kFp16, FactorDtype::kInt8}) {
      const FactorCodec codec(dtype);
      auto factors_of = [&](int64_t rank) {
        FlatBuffer b = FlatBuffer::zeros({{2, 5, 2}, {1, 4, 2}}, at::kFloat);
        b.flat.copy_(testing::seeded_randn({b.flat.numel()}, 6, rank, 0));
        return b;
      };
      FlatBuffer mine = factors_of(c.rank());
      const at::Tensor payload = codec.encode_(mine);
      const comm::CommStats before = c.stats();
      codec.sum_(c, mine, payload);
      EXPECT_EQ(c.stats().collectives - before.collectives, 1);
      EXPECT_EQ(c.stats().bytes_sent - before.bytes_sent, payload.numel());
      at::Tensor want;
      for (int64_t r = 0; r < W; ++r) {
        FlatBuffer other = factors_of(r);
        codec.encode_(other);
        want = r == 0 ? other.flat : want + other.flat;
      }
      EXPECT_TRUE(at::equal(mine.flat, want)) << choice_name(dtype, kFactorDtypes);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Bytes: the factors' share of wire_bytes and size_test_bytes.

// Rows of the factors sent on a normal step s of an m×n matrix (k = 2 = min(rank, m, n) here), and
// the elements sent beside them in the working dtype (GreedyLore's a scores).
std::vector<int64_t> factor_rows(const Case& cs, int64_t m, int64_t n, int64_t s) {
  if (cs.compressor == "greedylore") return {std::max(m, n)};
  if (cs.compressor == "galore") return {std::min(m, n)};  // side=larger
  if (alternating(cs)) return {s % 2 == 0 ? n : m};
  return {m, n};
}
int64_t other_elements(const Case& cs, int64_t m, int64_t n) {
  return cs.compressor == "greedylore" ? std::min(m, n) * cs.config.get("probes", int64_t{1}) : 0;  // a·p scores
}

TEST(FactorDtype, FactorsTravelInHalfOrAQuarterOfTheBytes) {
  constexpr int64_t k = 2;
  for (const auto& cs : low_rank_cases()) {
    const auto fp32 = make_compressor(cs.compressor, cs.config);
    const auto bf16 = make_compressor(cs.compressor, with_dtype(cs.config, "bf16"));
    const auto fp16 = make_compressor(cs.compressor, with_dtype(cs.config, "fp16"));
    const auto int8 = make_compressor(cs.compressor, with_dtype(cs.config, "int8"));
    for (const auto& mn : std::vector<std::pair<int64_t, int64_t>>{{12, 10}, {10, 12}, {8, 8}}) {
      const int64_t m = mn.first, n = mn.second;
      const std::string what = label(cs, "") + " " + std::to_string(m) + "x" + std::to_string(n);
      EXPECT_EQ(bf16->size_test_bytes(m, n), fp32->size_test_bytes(m, n) / 2) << what;
      for (int64_t s = 0; s < 5; ++s) {
        const int64_t full = fp32->wire_bytes(m, n, s, at::kFloat);
        if (refreshes(cs, s)) {  // the m·n mean stays in fp32; powersgd+ also sends its n·k factor
          const int64_t factor = cs.compressor == "powersgd+" ? 4 * n * k : 0;
          EXPECT_EQ(bf16->wire_bytes(m, n, s, at::kFloat), full - factor / 2) << what << " s=" << s;
          EXPECT_EQ(int8->wire_bytes(m, n, s, at::kFloat), full - (factor ? factor - n * k - 4 * k : 0)) << what;
          continue;
        }
        int64_t elems = 0, quantized = 0;
        for (int64_t rows : factor_rows(cs, m, n, s)) {
          elems += rows * k;
          quantized += rows * k + 4 * k;  // codes and one fp32 scale per factor
        }
        const int64_t extra = 4 * other_elements(cs, m, n);
        EXPECT_EQ(full, 4 * elems + extra) << what << " s=" << s;
        EXPECT_EQ(bf16->wire_bytes(m, n, s, at::kFloat), 2 * elems + extra) << what << " s=" << s;
        EXPECT_EQ(fp16->wire_bytes(m, n, s, at::kFloat), 2 * elems + extra) << what << " s=" << s;
        EXPECT_EQ(int8->wire_bytes(m, n, s, at::kFloat), quantized + extra) << what << " s=" << s;
        // fp64 parameters: the factors' bytes do not depend on the working dtype, the rest doubles
        EXPECT_EQ(int8->wire_bytes(m, n, s, at::kDouble), quantized + 2 * extra) << what << " s=" << s;
      }
    }
  }
}

TEST(FactorDtype, BadValueNamesTheChoicesAndFp32IsTheDefault) {
  for (const std::string name : {"powersgd", "powersgd+", "greedylore", "galore"}) {
    const std::string msg = testing::error_of([&] { make_compressor(name, Config{{"factor_dtype", "int4"}}); });
    EXPECT_TRUE(testing::contains(msg, name + ": factor_dtype 'int4' is not one of fp32, bf16, fp16, int8")) << msg;
    EXPECT_EQ(make_compressor(name, Config{{"factor_dtype", "fp32"}})->describe(), make_compressor(name)->describe());
    EXPECT_TRUE(testing::contains(make_compressor(name, Config{{"factor_dtype", "bf16"}})->describe(),
                                  "factor_dtype=bf16"));
  }
}

// ---------------------------------------------------------------------------------------------
// Through the reducer.

constexpr int64_t kSteps = 6;  // s = 0 … 5: refreshes at 0, 2, 4; the last step leaves e ≠ 0
// fp32 rounding over 6 steps of O(1)–O(10) entries, relative to 1 + max |Σ_t mean g| (~30). A
// residual taken against the factor before rounding would miss, every step, by P̂ times the mean
// rounding error of the factors: ~2^-9 of O(1) entries in bf16 (int8 more, fp16 8x less), well
// above this bound.
constexpr double kTelescopeTol = 1e-5;

struct Run {
  std::string dtype;  // "" = the option not given
  Named params;
  std::unique_ptr<GradientReducer> red;
  std::vector<at::Tensor> sent;  // Σ_t ĝ_t per parameter, fp64
};

Named model() {
  return {{"tall", at::zeros({12, 10})}, {"wide", at::zeros({10, 12})}, {"sq1", at::zeros({8, 8})},
          {"sq2", at::zeros({8, 8})}, {"bias", at::zeros({5})}};
}

// runs[0]: factor_dtype not given; [1]: fp32 given; [2..4]: bf16, fp16, int8. EF on (GaLore's is
// off by default), norm_stats off so that PowerSGD takes its fused in-place path.
std::vector<Run> make_runs(const Case& cs, const std::shared_ptr<comm::Communicator>& c) {
  std::vector<Run> runs;
  for (const std::string dtype : {"", "fp32", "bf16", "fp16", "int8"}) {
    Run run;
    run.dtype = dtype;
    run.params = model();
    const Config cfg = dtype.empty() ? cs.config : with_dtype(cs.config, dtype);
    run.red = std::make_unique<GradientReducer>(
        run.params, make_compressor(cs.compressor, cfg), c,
        ReducerOptions().min_compression_rate(0).error_feedback(true).norm_stats(false).seed(5));
    for (const auto& p : run.params) run.sent.push_back(at::zeros(p.second.sizes(), at::kDouble));
    runs.push_back(std::move(run));
  }
  return runs;
}

// ‖ĝ − ĝ_ref‖ / ‖ĝ_ref‖ over the compressed matrices.
double relative_difference(const Run& run, const Run& ref) {
  double num = 0, den = 0;
  for (size_t p = 0; p < run.params.size(); ++p) {
    if (run.params[p].second.dim() != 2) continue;
    num += testing::sq_norm(run.params[p].second.grad().to(at::kDouble) - ref.params[p].second.grad().to(at::kDouble));
    den += testing::sq_norm(ref.params[p].second.grad());
  }
  return std::sqrt(num / den);
}

at::Tensor all_outputs(const Run& run) {
  std::vector<at::Tensor> outs;
  for (const auto& p : run.params) outs.push_back(p.second.grad().reshape({-1}));
  return at::cat(outs);
}

// Per step: fp32 given = not given, bit for bit; low types bit-identical across ranks and finite;
// at the first step that sends factors (s = 0, or 1 after GreedyLore's and GaLore's refresh, whose
// payload stays in fp32 and so matches bit for bit) close to fp32 factors: bf16 rounds each factor
// element by ≤ 2^-8 relative (fp16 ≤ 2^-11), which moves ĝ (through P̂ and Q̃) by a few 1e-3 at
// most, hence 1e-2; int8's step is max|factor|/127 per factor, an error ≤ max/254 per element, about
// 5e-3 of a factor's norm at these sizes on each of the two factors, hence 3e-2.
void check_step(const Case& cs, const std::vector<Run>& runs, int64_t s, comm::Communicator& c) {
  const int64_t first = (cs.compressor == "greedylore" || cs.compressor == "galore") ? 1 : 0;
  EXPECT_TRUE(at::equal(all_outputs(runs[1]), all_outputs(runs[0]))) << label(cs, "fp32") << " s=" << s;
  for (size_t r = 2; r < runs.size(); ++r) {
    const std::string what = label(cs, runs[r].dtype) + " s=" + std::to_string(s);
    const at::Tensor out = all_outputs(runs[r]);
    EXPECT_TRUE(testing::same_on_all_ranks(c, out)) << what;
    EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << what;
    if (s < first) {
      EXPECT_TRUE(at::equal(out, all_outputs(runs[0]))) << what << ": the refresh stays in fp32";
    }
    if (s != first) continue;
    const double rel = relative_difference(runs[r], runs[0]);
    EXPECT_LT(rel, runs[r].dtype == "int8" ? 3e-2 : 1e-2) << what;
    EXPECT_GT(rel, 0.0) << what << ": the factors were not rounded";
  }
}

// Σ_t ĝ_t + mean_j e_j,T = Σ_t mean_j g_j,t (§1.4): holds only if every rank's residual is taken
// against its factor as decoded, which is what the sum of the decodes delivered.
void check_telescoping(const Case& cs, const Run& run, const std::vector<at::Tensor>& truth, comm::Communicator& c) {
  double residual_sq = 0;
  for (size_t p = 0; p < run.params.size(); ++p) {
    const at::Tensor& t = run.params[p].second;
    const at::Tensor mean_e = testing::gathered_mean(c, testing::ef_of(*run.red, run.params[p].first, t));
    residual_sq += testing::sq_norm(mean_e);
    const double scale = 1 + truth[p].abs().max().item<double>();
    EXPECT_LE((run.sent[p] + mean_e - truth[p]).abs().max().item<double>(), kTelescopeTol * scale)
        << label(cs, run.dtype) << " param=" << run.params[p].first;
  }
  EXPECT_GT(std::sqrt(residual_sq), 0.1) << label(cs, run.dtype) << ": e is ~0, the check is vacuous";
}

void check_case(const Case& cs, const std::shared_ptr<comm::Communicator>& c) {
  std::vector<Run> runs = make_runs(cs, c);
  EXPECT_EQ(runs[1].red->compressor().describe(), runs[0].red->compressor().describe());
  std::vector<at::Tensor> truth;
  for (const auto& p : runs[0].params) truth.push_back(at::zeros(p.second.sizes(), at::kDouble));
  for (int64_t s = 0; s < kSteps; ++s) {
    std::vector<at::Tensor> grads;
    for (size_t p = 0; p < truth.size(); ++p) {
      const at::Tensor& t = runs[0].params[p].second;
      at::Tensor g = 0.3 * testing::seeded_randn(t.sizes(), 9, c->rank(), s, p);
      if (t.dim() == 2) g += testing::planted(t.size(0), t.size(1), p);
      truth[p] += testing::gathered_mean(*c, g);
      grads.push_back(g);
    }
    for (auto& run : runs) {
      for (size_t p = 0; p < grads.size(); ++p) run.params[p].second.mutable_grad() = grads[p].clone();
      const int64_t before = c->stats().bytes_sent;
      ASSERT_TRUE(run.red->reduce()) << label(cs, run.dtype);
      EXPECT_EQ(c->stats().bytes_sent - before, run.red->expected_bytes(s)) << label(cs, run.dtype) << " s=" << s;
      for (size_t p = 0; p < grads.size(); ++p) run.sent[p] += run.params[p].second.grad().to(at::kDouble);
    }
    check_step(cs, runs, s, *c);
  }
  for (size_t r = 1; r < runs.size(); ++r) check_telescoping(cs, runs[r], truth, *c);
}

TEST_P(FactorDtypeW2to3, EveryLowRankCompressorSendsExactlyDecodesIdenticallyAndTelescopes) {
  testing::run_ranks_shared(GetParam(), [&](std::shared_ptr<comm::Communicator> c) {
    for (const auto& cs : low_rank_cases()) check_case(cs, c);
  });
}

}  // namespace
}  // namespace lowrank
