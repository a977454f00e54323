// Top-k sparsification with error feedback: see the walk-through in include/lowrank/compressors/topk.h
// (docs/algorithms.md §6). SparseBudget, shared with randomk, is defined here too.
#include "lowrank/compressors/topk.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "lowrank/compressors/group_ops.h"

namespace lowrank {

void SparseBudget::validate(const char* compressor) const {
  TORCH_CHECK(density() > 0 && density() <= 1, compressor, ": density must be in (0, 1], got ", density());
  TORCH_CHECK(k() >= 0, compressor, ": k must be >= 0 (0 = use density), got ", k());
}

int64_t SparseBudget::kept(int64_t numel) const {
  if (k() > 0) return std::min(k(), numel);
  const double x = density() * static_cast<double>(numel);
  const auto up = static_cast<int64_t>(std::ceil(x - 1e-9 * x));
  return std::min(numel, std::max<int64_t>(1, up));
}

namespace {

// [b, m, n] as [b, N]: the reducer's ShapeGroup tensors are contiguous (views of its bucket buffers).
at::Tensor rows(const at::Tensor& t) { return t.view({t.size(0), t.size(1) * t.size(2)}); }

// One rank's wire buffer [values | positions] (topk.h) as typed views of `count` entries each.
struct SparseParts {
  at::Tensor values;     // [count], working dtype
  at::Tensor positions;  // [count], int32
};

SparseParts parts_of(const at::Tensor& wire, at::ScalarType work, int64_t count) {
  const at::Tensor w = wire.storage_offset() % 8 == 0 ? wire : wire.clone();  // view(dtype) needs an aligned offset
  const int64_t value_bytes = count * static_cast<int64_t>(c10::elementSize(work));
  return {w.narrow(0, 0, value_bytes).view(work), w.narrow(0, value_bytes, 4 * count).view(at::kInt)};
}

// Members' k values and positions at entries [off, off + b·k) of `mine`; e_i = Δ_i with them zeroed.
void encode(const ShapeGroup& g, int64_t k, const SparseParts& mine, int64_t off) {
  if (k == 0) return;  // an empty matrix: nothing to keep, nothing left over
  const int64_t b = g.batch(), N = g.m * g.n;
  TORCH_CHECK(N <= std::numeric_limits<int32_t>::max(), "topk: '", g.names[0], "' has ", N,
              " elements, more than int32 positions address");
  const at::Tensor D = rows(g.delta);
  const at::Tensor S = std::get<1>(at::topk(D.abs(), k, /*dim=*/1, /*largest=*/true, /*sorted=*/false));  // [b, k]
  mine.values.narrow(0, off, b * k).view({b, k}).copy_(D.gather(1, S));
  mine.positions.narrow(0, off, b * k).view({b, k}).copy_(S);
  // Δ_i has been read completely: residual may alias it (in_place_residual).
  if (!g.residual.is_same(g.delta)) g.residual.copy_(g.delta);
  rows(g.residual).scatter_(1, S, 0);
}

// ĝ = (Σ_r scatter(v_r at S_r)) / W, every rank's part added in rank order.
void decode(const ShapeGroup& g, int64_t k, const std::vector<SparseParts>& ranks, int64_t off) {
  g.out.zero_();
  if (k == 0) return;
  const int64_t b = g.batch();
  at::Tensor O = rows(g.out);
  for (const auto& r : ranks) {
    const at::Tensor S = r.positions.narrow(0, off, b * k).view({b, k}).to(at::kLong);
    O.scatter_add_(1, S, r.values.narrow(0, off, b * k).view({b, k}));  // positions of one rank are distinct
  }
  if (ranks.size() > 1) O.div_(static_cast<int64_t>(ranks.size()));
}

}  // namespace

double TopK::size_test_bytes(int64_t m, int64_t n) const { return 8.0 * static_cast<double>(k_of(m, n)); }

int64_t TopK::wire_bytes(int64_t m, int64_t n, int64_t /*step*/, at::ScalarType work) const {
  return k_of(m, n) * (static_cast<int64_t>(c10::elementSize(work)) + 4);
}

void TopK::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  const at::ScalarType work = group_dtype(groups);
  std::vector<int64_t> ks, offsets;  // per group: k, and its first entry in each region
  int64_t count = 0;
  for (const auto& g : groups) {
    ks.push_back(k_of(g.m, g.n));
    offsets.push_back(count);
    count += g.batch() * ks.back();
  }
  const at::Tensor wire = at::empty({count * (static_cast<int64_t>(c10::elementSize(work)) + 4)}, at::kByte);
  const SparseParts mine = parts_of(wire, work, count);
  for (size_t i = 0; i < groups.size(); ++i) encode(groups[i], ks[i], mine, offsets[i]);
  std::vector<SparseParts> ranks;
  for (const auto& theirs : ctx.comm->all_gather(wire)) ranks.push_back(parts_of(theirs, work, count));  // one collective
  for (size_t i = 0; i < groups.size(); ++i) decode(groups[i], ks[i], ranks, offsets[i]);
}

}  // namespace lowrank
