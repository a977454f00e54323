// The 16-bit casts "fp16" and "bf16": see the walk-through in include/lowrank/compressors/low_precision.h
// (docs/algorithms.md §6).
#include "lowrank/compressors/low_precision.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cmath>
#include <limits>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"

namespace lowrank {

namespace {

// One flat buffer of `dtype` with a [b, m, n] view per group.
FlatBuffer group_buffer(const std::vector<ShapeGroup>& groups, at::ScalarType dtype) {
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& g : groups) shapes.push_back({g.batch(), g.m, g.n});
  return FlatBuffer::zeros(shapes, dtype);
}

// The packets p_i = cast(clamp(Δ_i / divisor, ±limit)) of every group, in one flat buffer of the
// 16-bit `dtype`, and the local residuals e_i = Δ_i − divisor·p_i (p_i as decoded in the working
// dtype). Each group's delta is read completely before its residual is written, and the residual is
// then written elementwise from the same positions, so the two may alias.
FlatBuffer encode(std::vector<ShapeGroup>& groups, at::ScalarType dtype, int64_t divisor, double limit) {
  FlatBuffer packets = group_buffer(groups, dtype);
  for (size_t i = 0; i < groups.size(); ++i) {
    ShapeGroup& g = groups[i];
    packets.views[i].copy_(divisor == 1 ? at::clamp(g.delta, -limit, limit)
                                        : (g.delta / divisor).clamp_(-limit, limit));
    at::Tensor decoded = packets.views[i].to(g.delta.scalar_type());
    if (divisor != 1) decoded.mul_(divisor);  // exact for W < 2^13 (11-bit significands)
    at::sub_out(g.residual, g.delta, decoded);
  }
  return packets;
}

}  // namespace

double Fp16Cast::fp16_limit(int world_size) {
  TORCH_CHECK(world_size >= 1, "fp16: world size must be >= 1, got ", world_size);
  const double half_max = static_cast<double>(std::numeric_limits<c10::Half>::max());  // 65504
  const double u = std::ldexp(1.0, -11);  // fp16's unit roundoff
  // |half(x)| <= (1 + u)|x|, and each of the W − 1 additions grows a partial sum by at most (1 + u):
  // every partial sum is at most W·c_W·(1 + u)^W = 65504 in magnitude, so none rounds to inf.
  return half_max / (world_size * std::pow(1.0 + u, world_size));
}

void Fp16Cast::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  comm::Communicator& comm = *ctx.comm;
  const int W = comm.size();
  FlatBuffer packets = encode(groups, at::kHalf, W, fp16_limit(W));  // Σ b·m·n halves
  comm.all_reduce_(packets.flat);                                    // AR_sum in fp16 (gloo)
  for (size_t i = 0; i < groups.size(); ++i) groups[i].out.copy_(packets.views[i]);  // exact
}

void Bf16Cast::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  comm::Communicator& comm = *ctx.comm;
  const int W = comm.size();
  const double bf16_max = static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
  FlatBuffer packets = encode(groups, at::kBFloat16, 1, bf16_max);
  // Gloo has no bfloat16: 2 bytes per element as uint8, one all-gather (counts this rank's own).
  const std::vector<at::Tensor> all = comm.all_gather(packets.flat.view(at::kByte));
  FlatBuffer sum = group_buffer(groups, group_dtype(groups));
  for (const at::Tensor& bytes : all) sum.flat.add_(bytes.view(at::kBFloat16).to(sum.flat.scalar_type()));
  if (W > 1) sum.flat.div_(W);
  for (size_t i = 0; i < groups.size(); ++i) groups[i].out.copy_(sum.views[i]);
}

}  // namespace lowrank
