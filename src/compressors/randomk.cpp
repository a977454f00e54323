// Random-k sparsification on shared positions: see the walk-through in
// include/lowrank/compressors/randomk.h (docs/algorithms.md §6).
#include "lowrank/compressors/randomk.h"

#include <vector>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"

namespace lowrank {

namespace {

// [b, m, n] as [b, N]: the reducer's ShapeGroup tensors are contiguous (views of its bucket buffers).
at::Tensor rows(const at::Tensor& t) { return t.view({t.size(0), t.size(1) * t.size(2)}); }

}  // namespace

double RandomK::size_test_bytes(int64_t m, int64_t n) const { return 4.0 * static_cast<double>(k_of(m, n)); }

int64_t RandomK::wire_bytes(int64_t m, int64_t n, int64_t /*step*/, at::ScalarType work) const {
  return k_of(m, n) * static_cast<int64_t>(c10::elementSize(work));
}

at::Tensor RandomK::positions(const ShapeGroup& group, int64_t step, uint64_t seed) const {
  const int64_t N = group.m * group.n, k = k_of(group.m, group.n);
  at::Generator gen = shared_generator(seed, step, stream_id(Stream::kPositions, group.ordinal));
  std::vector<at::Tensor> members;  // drawn one after another from the group's one stream
  for (int64_t j = 0; j < group.batch(); ++j) members.push_back(at::randperm(N, gen).narrow(0, 0, k));
  return at::stack(members);  // [b, k]
}

void RandomK::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  std::vector<at::Tensor> S;    // per group [b, k]
  std::vector<double> alpha;    // per group: N/k when scaled, else 1
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& g : groups) {
    S.push_back(positions(g, ctx.compressed_step, ctx.seed));
    const int64_t k = S.back().size(1);
    alpha.push_back(options_.scaled() && k > 0 ? static_cast<double>(g.m * g.n) / static_cast<double>(k) : 1.0);
    shapes.push_back({g.batch(), k});
  }
  FlatBuffer v = FlatBuffer::zeros(shapes, group_dtype(groups));
  for (size_t i = 0; i < groups.size(); ++i) {
    const ShapeGroup& g = groups[i];
    v.views[i].copy_(rows(g.delta).gather(1, S[i]));  // v_i = Δ_i[S]
    // Δ_i has been read completely: residual may alias it (in_place_residual).
    if (!g.residual.is_same(g.delta)) g.residual.copy_(g.delta);
    if (options_.scaled()) rows(g.residual).scatter_(1, S[i], v.views[i] - v.views[i] * alpha[i]);  // Δ_i − α·v_i at S
    else rows(g.residual).scatter_(1, S[i], 0);
  }
  all_reduce_average_(*ctx.comm, v.flat);  // v̄: Σ b·k values, one collective
  for (size_t i = 0; i < groups.size(); ++i) {
    const ShapeGroup& g = groups[i];
    g.out.zero_();
    rows(g.out).scatter_(1, S[i], options_.scaled() ? v.views[i] * alpha[i] : v.views[i]);  // ĝ = α·v̄ at S
  }
}

}  // namespace lowrank
