#pragma once
// QSGD: stochastic quantization to s levels per sign with a norm per bucket (Alistarh, Grubic, Li,
// Tomioka, Vojnovic, "QSGD: Communication-Efficient SGD via Gradient Quantization and Encoding",
// NeurIPS 2017; docs/algorithms.md §6). Elementwise (Traits::elementwise): every tensor is compressed,
// a 0- or 1-dim one viewed as [1, numel].
//
// Every member matrix Δ_i [m, n] (Δ_i = g_i when EF is off), its N = m·n elements read in row-major
// order, is cut into consecutive buckets of bucket_size elements (the last one shorter). Per bucket v:
//   ‖v‖   = ‖v‖₂, rounded to fp32 (it travels as fp32 and both sides use the rounded value)
//   ℓ_j   = min(s, floor(|v_j| / ‖v‖ · s + u_j)),  u_j ~ U[0, 1) from this rank's own stream
//           shared_generator(seed, step, rank_stream_id(kRounding, ordinal, rank)) (no saved state)
//   c_j   = sign(v_j)·ℓ_j ∈ [−s, s], sent as c_j + s ∈ [0, 2s] in `bits` bits, the smallest of
//           1, 2, 4, 8 with 2^bits ≥ 2s + 1 (s = 1: 2 bits; s ≤ 7: 4; s ≤ 127: 8)
//   dec_j = ‖v‖/s · c_j   (a zero-norm bucket sends ℓ = 0 and decodes to 0)
// E[ℓ_j] = |v_j|·s/‖v‖, so E[dec_j] = v_j: the estimate is unbiased, with Var ≤ (‖v‖/s)²/4 per element
// (rounding between adjacent levels ‖v‖/s apart). Then
//   one all_gather for all groups of one uint8 tensor per rank (layout below)
//   ĝ   = (Σ_r dec_r) / W   // every rank's part decoded and summed in rank order, in the working
//                           // dtype (fp32, or fp64 for fp64 parameters): bit-identical on all ranks
//   e_i = Δ_i − dec_i       // what this rank's own codes decode to
// QSGD is unbiased, so error feedback is off by default (Traits::default_error_feedback); the user
// may turn it on.
//
// Layout of a rank's uint8 tensor: for each group in order, for each member in order, the member's
// packed codes (compressors/bit_pack.h, padded to a byte) followed by its bucket norms as fp32 bytes
// (machine byte order), ceil(N / bucket_size) of them.
//
// Wire per matrix (docs/algorithms.md §8, §6): packed_bytes(N, bits) + 4·ceil(N / bucket_size)
// bytes, N = m·n, whatever the working dtype (defaults: ⌈N/2⌉ + 4·⌈N/512⌉, about 7.9x below fp32).
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <ostream>

#include "lowrank/compressors/compressor_base.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// Example:
///   Qsgd c(QsgdOptions().levels(15).bucket_size(256));
///   make_compressor("qsgd", Config{{"levels", "1"}});   // ternary codes, 2 bits per element
struct QsgdOptions {
  /// s: quantization levels per sign; codes sign·ℓ with ℓ ∈ [0, s], in [1, 127]. Default 7 (4 bits
  /// per element).
  TORCH_ARG(int64_t, levels) = 7;
  /// Elements per norm bucket: consecutive elements of one matrix (the last bucket shorter); one fp32
  /// norm each. Default 512.
  TORCH_ARG(int64_t, bucket_size) = 512;

 public:
  /// The Config keys and operator<< fields, in this order.
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("levels", o.levels_);
    v("bucket_size", o.bucket_size_);
  }
  void validate() const;
};
inline std::ostream& operator<<(std::ostream& os, const QsgdOptions& o) { return os << render_fields(o); }

class Qsgd : public CompressorBase<Qsgd, QsgdOptions> {
 public:
  static constexpr const char* kName = "qsgd";
  using CompressorBase::CompressorBase;

  Traits traits() const override {
    Traits t;
    t.elementwise = true;
    t.default_error_feedback = false;  // unbiased
    // Not in place: with the residual aliasing Δ_i, test runs under load crashed intermittently (a
    // segfault in WorldSizes/QuantizeW2to3, not yet explained), so this stays on the reducer's
    // separate-buffer path until that is understood.
    t.in_place_residual = false;
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override;
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;

  /// Bits per sent code c + s ∈ [0, 2s]: the smallest of 1, 2, 4, 8 with 2^bits ≥ 2s + 1.
  int code_bits() const;
  /// Bytes one member of N elements takes on the wire: its packed codes, then its fp32 norms.
  int64_t member_bytes(int64_t numel) const;
};

}  // namespace lowrank
