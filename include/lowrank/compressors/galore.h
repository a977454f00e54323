#pragma once
// GaLore-style lazy-SVD compressor (the comparator of the PowerSGD+ paper, arXiv:2509.11254
// Table 2; projector after GaLore, Zhao et al., arXiv:2403.03507; docs/algorithms.md §5).
//
// A fixed top-k projector refreshed every τ steps, used as a communication compressor, with no
// error feedback by default and full-size optimizer states. Every compressed matrix [m, n]
// (k = min(rank, m, n)) is oriented so that its rows are the side the basis lives on:
//   side = larger (default): rows = max(m, n) (wide matrices are transposed); sends k·min(m, n)
//   side = smaller (GaLore's `std` rule): rows = min(m, n) (tall ones transposed); sends k·max(m, n)
// At compressed step s, every worker i, with Δ_i oriented [rows, cols] (Δ_i = g_i when EF is off):
//   if s % refresh_period == 0:                 // refresh; s = 0 is always a refresh
//     Ḡ = AR_sum(Δ_i) / W                       // Σ m·n floats, all matrices in one buffer
//     P = top_left_singular_vectors(Ḡ, k)       // [rows, k], stored as state "P" (compressor_keys::kP)
//     refresh_output = projected (default): ĝ = α·P PᵀḠ,  e_i = Δ_i − α·P PᵀΔ_i
//     refresh_output = dense:               ĝ = Ḡ,         e_i = 0
//   else:
//     R_i = Pᵀ Δ_i                              // [k, cols]
//     e_i = Δ_i − α·P R_i                        // kept only when EF is on (an ablation, §5)
//     R̄   = AR_sum(R_i) / W                     // one collective, Σ k·cols floats
//     ĝ   = α·P R̄                                // transposed back to [m, n]
// α = galore_scale (GaLore's `scale`). The residual counts α as part of C_i, so EF, when on,
// telescopes exactly (Σ ĝ + mean e = Σ mean Δ).
//
// Wire per matrix (docs/algorithms.md §5, §8): normal step k·min(m, n) (side=smaller: k·max(m, n));
// refresh m·n. Period average (1 − 1/τ)·k·min(m, n) + m·n/τ. Size rule (§1.3): c = the normal-step
// cost above. State per matrix: compressor_keys::kP ("P") [rows, k].
//
// factor_dtype = bf16 | fp16 | int8 (factor_codec.h, docs/algorithms.md §6): the normal step's R_i
// [k, cols] travels encoded (int8: one scale per member and row of R_i), one all-gather decoded and
// summed in rank order; R_i is first rounded to R̃_i, its decoded value, and e_i = Δ_i − α·P R̃_i,
// R̄ = Σ_r R̃_r / W. Normal-step bytes: factor_bytes(cols, k) (bf16: 2k·cols; int8: k·cols + 4k).
// The refresh's m·n mean stays in the working dtype. fp32 (default) is the exact step above.
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <algorithm>
#include <ostream>

#include "lowrank/compressors/compressor_base.h"
#include "lowrank/compressors/factor_codec.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// Which dimension of a matrix carries GaLore's basis.
enum class GaLoreSide {
  kLarger,   ///< rows = max(m, n)
  kSmaller,  ///< rows = min(m, n) (GaLore's `std` rule)
};
inline const Choices<GaLoreSide> kGaLoreSides = {{GaLoreSide::kLarger, "larger"}, {GaLoreSide::kSmaller, "smaller"}};

/// What a GaLore refresh step outputs.
enum class RefreshOutput {
  kProjected,  ///< α·PPᵀḠ
  kDense,      ///< Ḡ
};
inline const Choices<RefreshOutput> kRefreshOutputs = {{RefreshOutput::kProjected, "projected"},
                                                       {RefreshOutput::kDense, "dense"}};

/// Example:
///   GaLore c(GaLoreOptions().rank(4).refresh_period(200).galore_scale(0.25));
///   make_compressor("galore", Config{{"rank", "4"}, {"side", "smaller"}});
struct GaLoreOptions {
  /// Requested rank r; clamped per matrix to min(r, m, n). Default 1.
  TORCH_ARG(int64_t, rank) = 1;
  /// τ: the projector is recomputed at every compressed step s with s % τ == 0. Default 200
  /// (GaLore's update_proj_gap).
  TORCH_ARG(int64_t, refresh_period) = 200;
  /// larger | smaller: which dimension carries the basis. Default larger.
  TORCH_ARG(GaLoreSide, side) = GaLoreSide::kLarger;
  /// projected | dense: what a refresh step outputs (α·PPᵀḠ or Ḡ). Default projected.
  TORCH_ARG(RefreshOutput, refresh_output) = RefreshOutput::kProjected;
  /// α, GaLore's `scale`: multiplies every output. Default 1.
  TORCH_ARG(double, galore_scale) = 1.0;
  /// fp32 | bf16 | fp16 | int8: how the projected gradient R_i travels on normal steps
  /// (factor_codec.h, docs/algorithms.md §6); fp32 sends it in the working dtype. Default fp32.
  TORCH_ARG(FactorDtype, factor_dtype) = FactorDtype::kFp32;

 public:
  /// The Config keys and operator<< fields, in this order; factor_dtype is shown when it is not fp32.
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("rank", o.rank_);
    v("refresh_period", o.refresh_period_);
    v("side", o.side_, kGaLoreSides);
    v("refresh_output", o.refresh_output_, kRefreshOutputs);
    v("galore_scale", o.galore_scale_);
    v("factor_dtype", o.factor_dtype_, kFactorDtypes, o.factor_dtype_ != FactorDtype::kFp32);
  }
  void validate() const;
};
inline std::ostream& operator<<(std::ostream& os, const GaLoreOptions& o) { return os << render_fields(o); }

class GaLore : public CompressorBase<GaLore, GaLoreOptions> {
 public:
  static constexpr const char* kName = "galore";
  using CompressorBase::CompressorBase;

  Traits traits() const override {
    Traits t;
    t.default_error_feedback = false;
    t.in_place_residual = true;  // delta is read before residual is written
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override;
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;

  bool is_refresh(int64_t step) const { return step % options_.refresh_period() == 0; }
  /// Whether an m×n matrix is transposed so that its rows carry the basis.
  bool transposes(int64_t m, int64_t n) const { return options_.side() == GaLoreSide::kLarger ? m < n : m > n; }

 private:
  int64_t k_of(int64_t m, int64_t n) const { return std::min({options_.rank(), m, n}); }
  /// Bytes of one m×n matrix's R_i [k, cols] on a normal step, in factor_dtype.
  int64_t projected_bytes(int64_t m, int64_t n, at::ScalarType work) const;
  at::Tensor oriented(const at::Tensor& t) const;  // [batch, m, n] -> [batch, rows, cols] view
  void refresh_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const;
  void projected_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const;
};

}  // namespace lowrank
