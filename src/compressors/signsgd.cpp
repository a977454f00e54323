// Scaled signSGD with error feedback: see the walk-through and the wire layout in
// include/lowrank/compressors/signsgd.h (Karimireddy et al. 2019; docs/algorithms.md §6).
#include "lowrank/compressors/signsgd.h"

#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "lowrank/compressors/bit_pack.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/packed_decode.h"

namespace lowrank {

namespace {

// Writes the sign bits of x[0, N) (1 = non-negative) and the fp32 scale ‖x‖₁/N into `wire`; `bits`
// is scratch of N bytes.
template <typename T>
void encode_member(const T* x, int64_t numel, uint8_t* bits, uint8_t* wire) {
  double l1 = 0;
  for (int64_t k = 0; k < numel; ++k) {
    l1 += std::abs(static_cast<double>(x[k]));
    bits[k] = x[k] >= 0 ? 1 : 0;  // sign(0) := +1
  }
  // ‖x‖₁/N, at most FLT_MAX (an fp64 tensor beyond fp32's range still decodes to finite values).
  const float scale =
      numel > 0 ? static_cast<float>(std::min(l1 / static_cast<double>(numel), double(std::numeric_limits<float>::max())))
                : 0.0f;
  pack_bits(bits, numel, 1, wire);
  std::memcpy(wire + packed_bytes(numel, 1), &scale, sizeof(float));
}

// Calls f(k, ±scale) for every element k of one member's wire bytes; `bits` is scratch of N bytes.
template <typename T, typename F>
void decode_member(const uint8_t* wire, int64_t numel, uint8_t* bits, F&& f) {
  unpack_bits(wire, numel, 1, bits);
  float scale = 0;
  std::memcpy(&scale, wire + packed_bytes(numel, 1), sizeof(float));
  const T plus = static_cast<T>(scale), minus = -plus;
  for (int64_t k = 0; k < numel; ++k) f(k, bits[k] ? plus : minus);
}

// ĝ = (Σ_r scale_r·sign_r) / W in rank order into g.out; e_i = Δ_i − scale_i·sign(Δ_i) (this rank's
// `own` bytes) into g.residual. `offset`: the group's first byte in every rank's part.
template <typename T>
void decode_group(ShapeGroup& g, const std::vector<at::Tensor>& parts, const uint8_t* own, int64_t offset,
                  std::vector<uint8_t>& bits) {
  const int64_t N = g.m * g.n;
  decode_packed_group<T>(g, parts, own, offset, SignSgd::member_bytes(N), [&](const uint8_t* wire, auto&& f) {
    decode_member<T>(wire, N, bits.data(), f);
  });
}

template <typename T>
void run(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  std::vector<int64_t> offset(groups.size());
  int64_t total = 0, most = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    offset[i] = total;
    total += groups[i].batch() * SignSgd::member_bytes(groups[i].m * groups[i].n);
    most = std::max(most, groups[i].m * groups[i].n);
  }
  std::vector<uint8_t> bits(static_cast<size_t>(most));
  at::Tensor wire = at::empty({total}, at::kByte);
  uint8_t* w = wire.data_ptr<uint8_t>();
  for (size_t i = 0; i < groups.size(); ++i) {
    const at::Tensor x = groups[i].delta.contiguous();
    const int64_t N = groups[i].m * groups[i].n, stride = SignSgd::member_bytes(N);
    for (int64_t j = 0; j < groups[i].batch(); ++j)
      encode_member<T>(x.data_ptr<T>() + j * N, N, bits.data(), w + offset[i] + j * stride);
  }
  std::vector<at::Tensor> parts = ctx.comm->all_gather(wire);  // the one collective
  for (auto& p : parts) p = p.contiguous();
  for (size_t i = 0; i < groups.size(); ++i) decode_group<T>(groups[i], parts, w + offset[i], offset[i], bits);
}

}  // namespace

std::vector<std::string> SignSgd::start_warnings(const std::vector<MatrixInfo>& compressed,
                                                 bool error_feedback) const {
  if (compressed.empty()) return {};
  if (!error_feedback)
    return {"signsgd without error feedback is the biased scaled sign, which need not converge (Karimireddy et al. "
            "2019); error feedback (the default) fixes that"};
  return {"signsgd: one bit per element and one scale per tensor lose the magnitudes within a tensor; where "
          "measured (docs/results.md, \"signsgd\") it trained a few points behind topk and powersgd at "
          "comparable traffic after one epoch. What works better at this traffic: --compressor topk or "
          "powersgd"};
}

void SignSgd::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (groups.empty()) return;
  AT_DISPATCH_FLOATING_TYPES(group_dtype(groups), "signsgd", [&] { run<scalar_t>(groups, ctx); });
}

}  // namespace lowrank
