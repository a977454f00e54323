#pragma once
// The 16-bit casts "fp16" and "bf16" (docs/algorithms.md §6): the baseline every low-rank method is
// weighed against, as PyTorch's fp16_compress_hook and bf16_compress_hook. Both are elementwise
// (Compressor::Traits::elementwise): every tensor is compressed, a 0- or 1-dim one viewed as
// [1, numel]. Error feedback is off by default; with ReducerOptions::error_feedback on, the local
// residual below feeds it (§1.4).
//
// fp16, every worker i, all groups of the bucket in one flat buffer of Σ b·m·n halves:
//   p_i = half(clamp(Δ_i / W, ±c_W))        // c_W = 65504 / (W·(1 + 2^-11)^W), see fp16_limit()
//   e_i = Δ_i − W·p_i                        // what this rank's own contribution lost
//   ĝ   = AR_sum(p_i)                        // ONE all-reduce of the halves, cast back to the working dtype
// PyTorch's fp16 hook: pre-division by W, then gloo sums the halves in fp16 (rounding every partial
// sum, in gloo's order; the result is the same on every rank). The clamp keeps every packet and,
// with the (1 + 2^-11)^W margin for the rounding of the cast and of the W − 1 additions, every
// partial sum finite: |ĝ| <= 65504 whatever Δ_i is.
//
// bf16: gloo (LibTorch 1.13) has no bfloat16 collectives ("Invalid scalar type"), so the packets
// travel as raw bytes in an all-gather and every rank sums them itself:
//   p_i = bf16(clamp(Δ_i, ±bf16_max))        // no pre-division: bf16 has fp32's range; the clamp only
//                                            // keeps an fp64 Δ_i beyond it from becoming inf
//   e_i = Δ_i − p_i
//   ĝ   = (p_0 + p_1 + … + p_{W−1}) / W      // ONE all-gather of the bytes, decoded and summed in rank
//                                            // order in the working dtype, then divided
// so bf16's sum is exact-order fp32 (fp64 for fp64 parameters) and bit-identical on every rank,
// whereas fp16's is rounded in fp16 by gloo.
//
// Both residuals are taken against what this rank's packet decodes to, so error feedback (when on)
// absorbs the rounding and the clamping: Σ_t ĝ_t + mean_i e_i = Σ_t mean_i g_i up to the rounding of
// the sums. delta is read before residual is written (Traits::in_place_residual).
//
// Wire per matrix: 2·m·n bytes for both, in the fp32 and the fp64 working dtype (half of fp32's
// dense all-reduce); for bf16 an all-gather counts this rank's own 2·m·n bytes (§8).
#include <cstdint>
#include <vector>

#include "lowrank/compressors/compressor_base.h"

namespace lowrank {

/// What "fp16" and "bf16" share: no options, the traits and the wire cost of a 16-bit element.
template <typename Self>
class SixteenBitCast : public CompressorBase<Self, NoOptions> {
 public:
  explicit SixteenBitCast(NoOptions options) : CompressorBase<Self, NoOptions>(options) {}

  Compressor::Traits traits() const override {
    Compressor::Traits t;
    t.elementwise = true;
    t.default_error_feedback = false;
    t.in_place_residual = true;
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override { return 2.0 * static_cast<double>(m * n); }
  int64_t wire_bytes(int64_t m, int64_t n, int64_t, at::ScalarType) const override { return 2 * m * n; }
};

/// Example: make_compressor("fp16").
class Fp16Cast : public SixteenBitCast<Fp16Cast> {
 public:
  static constexpr const char* kName = "fp16";
  explicit Fp16Cast(NoOptions options = {}) : SixteenBitCast(options) {}

  /// c_W = 65504 / (W·(1 + 2^-11)^W): the clamp of Δ_i / W on W ranks, small enough that the fp16
  /// sum of W packets stays finite in any order.
  static double fp16_limit(int world_size);
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;
};

/// Example: make_compressor("bf16").
class Bf16Cast : public SixteenBitCast<Bf16Cast> {
 public:
  static constexpr const char* kName = "bf16";
  explicit Bf16Cast(NoOptions options = {}) : SixteenBitCast(options) {}

  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;
};

}  // namespace lowrank
