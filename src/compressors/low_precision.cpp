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

// One flat buffer of `dtype` with a [b, m, n] view per group (uninitialized: every view is written).
FlatBuffer group_buffer(const std::vector<ShapeGroup>& groups, at::ScalarType dtype) {
  FlatBuffer buf;
  int64_t total = 0;
  for (const auto& g : groups) total += g.batch() * g.m * g.n;
  buf.flat = at::empty({total}, at::TensorOptions().dtype(dtype));
  int64_t off = 0;
  for (const auto& g : groups) {
    buf.views.push_back(buf.flat.narrow(0, off, g.batch() * g.m * g.n).view({g.batch(), g.m, g.n}));
    off += g.batch() * g.m * g.n;
  }
  return buf;
}

// The packets p_i = cast(clamp(Δ_i / divisor, ±limit)) of every group, in one flat buffer of the
// 16-bit `dtype`, and the local residuals e_i = Δ_i − divisor·p_i (p_i as decoded in the working
// dtype). ShapeGroup::out, written only after the collective, is the scratch of Δ_i / divisor, so
// no gradient-sized temporary is allocated. Each group's delta is read completely before its
// residual is written, so the two may alias.
FlatBuffer encode(std::vector<ShapeGroup>& groups, at::ScalarType dtype, int64_t divisor, double limit) {
  FlatBuffer packets = group_buffer(groups, dtype);
  for (size_t i = 0; i < groups.size(); ++i) {
    ShapeGroup& g = groups[i];
    if (divisor == 1) at::clamp_out(g.out, g.delta, -limit, limit);
    else at::div_out(g.out, g.delta, divisor).clamp_(-limit, limit);
    packets.views[i].copy_(g.out);
    g.out.copy_(packets.views[i]);                 // p_i as decoded
    if (divisor != 1) g.out.mul_(divisor);         // exact for W < 2^13 (11-bit significands)
    at::sub_out(g.residual, g.delta, g.out);       // e_i = Δ_i − divisor·p_i
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
  // ĝ = (p_0 + p_1 + ... ) / W, in rank order in the working dtype, straight into each group's out
  // (adding a bf16 tensor to an fp32 one converts exactly).
  int64_t off = 0;
  for (auto& g : groups) {
    const int64_t count = g.batch() * g.m * g.n;
    for (size_t r = 0; r < all.size(); ++r) {
      const at::Tensor p = all[r].view(at::kBFloat16).narrow(0, off, count).view({g.batch(), g.m, g.n});
      if (r == 0) g.out.copy_(p);
      else g.out.add_(p);
    }
    if (W > 1) g.out.div_(W);
    off += count;
  }
}

}  // namespace lowrank
