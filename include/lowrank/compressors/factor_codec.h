#pragma once
// Quantized low-rank factors (docs/algorithms.md §6): the wire format of the factors a low-rank
// compressor sends every step (PowerSGD's P and Q, PowerSGD+'s restart Q, GreedyLore's selected
// coefficients R, GaLore's projected gradient R), option factor_dtype = fp32 | bf16 | fp16 | int8.
// Restart and refresh payloads (dense means, sketches, scores) stay in the working dtype.
//
// Schemes, per [rows, k] factor of one member matrix (k factors of `rows` elements each):
//   fp32 (default): the factor as it is, in the working dtype (fp32; fp64 for fp64 parameters),
//         summed by one all-reduce: the exact arithmetic of before, rows·k·elementSize(work) bytes.
//   bf16: every value cast to bfloat16 (round to nearest even): 2·rows·k bytes.
//   fp16: every value clamped to ±65504 (the largest half), then cast to half: 2·rows·k bytes.
//   int8: per factor (member and column), scale = max|x| / 127 as fp32 (0 for an all-zero factor),
//         code = round(x / scale) in [−127, 127]: rows·k code bytes + 4·k scale bytes.
// Decoding gives code·scale (int8) or the 16-bit value, in the working dtype.
//
// Why an all-gather, not an all-reduce, for the low types: gloo (LibTorch 1.13) cannot reduce
// bfloat16 at all, a sum of int8 codes overflows (and codes of different scales cannot be added),
// and a sum of halves would round (or overflow) in half on the way. Every rank instead sends its
// encoded bytes in ONE all-gather of one uint8 tensor per call and decodes every rank's factors and
// sums them in the working dtype, in rank order: exact apart from the rounding of that sum, and
// bit-identical on all ranks. A rank's own contribution to the sum is exactly its factor as decoded,
// so a compressor rounds its own factor first (encode_), takes its local residual against the
// rounded factor, and only then sums (sum_/average_): error feedback then telescopes exactly
// (docs/algorithms.md §1.4). An all-gather hands the communicator this rank's own bytes only
// (docs/algorithms.md §8), so the wire counts above hold for any W.
//
//   FactorCodec codec(FactorDtype::kInt8);          // factors [b, rows, k] in one FlatBuffer F
//   at::Tensor payload = codec.encode_(F);          // F now holds what the others will decode
//   ... e_i = Δ_i − (product with the rounded factor) ...
//   codec.average_(comm, F, payload);               // F = Σ_r decode(payload_r) / W
#include <ATen/ATen.h>

#include <cstdint>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// The wire type of a low-rank compressor's per-step factors (see above).
enum class FactorDtype { kFp32, kBf16, kFp16, kInt8 };
inline const Choices<FactorDtype> kFactorDtypes = {{FactorDtype::kFp32, "fp32"},
                                                   {FactorDtype::kBf16, "bf16"},
                                                   {FactorDtype::kFp16, "fp16"},
                                                   {FactorDtype::kInt8, "int8"}};

/// Bytes of one [rows, k] factor on the wire, the working dtype being `work`: fp32
/// rows·k·elementSize(work); bf16 and fp16 2·rows·k; int8 rows·k + 4·k.
int64_t factor_bytes(FactorDtype dtype, int64_t rows, int64_t k, at::ScalarType work);

/// Where the k factors lie in a [b, x, y] view of the buffer, i.e. which elements share an int8 scale.
enum class FactorAxis {
  kColumns,  ///< [b, rows, k]: factor j is column j (PowerSGD's P and Q); one scale per member and column
  kRows,     ///< [b, k, cols]: factor j is row j (GaLore's and GreedyLore's R); one scale per member and row
};

/// Encodes, sums and decodes the factors of one flat buffer (FlatBuffer, views [b, x, y] in the
/// working dtype, fp32 or fp64). Stateless; every rank must call it with the same shapes.
class FactorCodec {
 public:
  explicit FactorCodec(FactorDtype dtype, FactorAxis axis = FactorAxis::kColumns) : dtype_(dtype), axis_(axis) {}

  FactorDtype dtype() const { return dtype_; }
  /// Whether the factors travel as they are (fp32): encode_ is then a no-op and sum_ an all-reduce.
  bool exact() const { return dtype_ == FactorDtype::kFp32; }

  /// Rounds buf in place to what every rank decodes from this rank's payload, and returns that
  /// payload (uint8, 1-D; undefined for fp32, where nothing is rounded).
  at::Tensor encode_(const FlatBuffer& buf) const;
  /// buf.flat = Σ_r decode(payload of rank r), in rank order, in the working dtype: one all-gather
  /// of `payload` (encode_'s). fp32: comm.all_reduce_(buf.flat), `payload` unused.
  void sum_(comm::Communicator& comm, const FlatBuffer& buf, const at::Tensor& payload) const;
  /// sum_, then divided by W (no division on one rank). fp32: all_reduce_average_(comm, buf.flat).
  void average_(comm::Communicator& comm, const FlatBuffer& buf, const at::Tensor& payload) const;
  /// Overwrites buf with the factors `payload` (one rank's encode_ of a buffer of buf's shapes) decodes to.
  void decode_into(const at::Tensor& payload, const FlatBuffer& buf) const;

 private:
  int64_t scale_dim() const { return axis_ == FactorAxis::kColumns ? 1 : 2; }  // the dim one scale spans
  at::Tensor encode_int8(const FlatBuffer& buf) const;
  void decode_int8(const at::Tensor& payload, const FlatBuffer& buf) const;

  FactorDtype dtype_;
  FactorAxis axis_;
};

}  // namespace lowrank
