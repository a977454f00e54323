// GaLore-style lazy SVD: see the walk-through in include/lowrank/compressors/galore.h (docs/algorithms.md §5).
#include "lowrank/compressors/galore.h"

#include <cmath>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

void GaLoreOptions::validate() const {
  TORCH_CHECK(rank() >= 1, "galore: rank must be >= 1, got ", rank());
  TORCH_CHECK(refresh_period() >= 1, "galore: refresh_period (tau) must be >= 1, got ", refresh_period());
  TORCH_CHECK(std::isfinite(galore_scale()) && galore_scale() > 0, "galore: galore_scale must be a finite number > 0, got ",
              galore_scale());
}

int64_t GaLore::projected_bytes(int64_t m, int64_t n, at::ScalarType work) const {
  const int64_t cols = options_.side() == GaLoreSide::kLarger ? std::min(m, n) : std::max(m, n);
  return factor_bytes(options_.factor_dtype(), cols, k_of(m, n), work);  // fp32: k·cols elements
}

double GaLore::size_test_bytes(int64_t m, int64_t n) const {
  return static_cast<double>(projected_bytes(m, n, at::kFloat));
}

int64_t GaLore::wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const {
  return is_refresh(step) ? m * n * static_cast<int64_t>(c10::elementSize(work)) : projected_bytes(m, n, work);
}

at::Tensor GaLore::oriented(const at::Tensor& t) const {
  return transposes(t.size(1), t.size(2)) ? t.transpose(1, 2) : t;
}

void GaLore::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (is_refresh(ctx.compressed_step)) refresh_step(groups, ctx);
  else projected_step(groups, ctx);
}

void GaLore::refresh_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  const double alpha = options_.galore_scale();
  FlatBuffer mean = all_reduce_average(*ctx.comm, groups, &ShapeGroup::delta);  // Ḡ; Σ m·n, one buffer
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    const at::Tensor G = oriented(mean.views[i]);                                 // [batch, rows, cols]
    const at::Tensor P = linalg::top_left_singular_vectors(G, k_of(g.m, g.n));   // [batch, rows, k]
    store_state(g, compressor_keys::kP, P);
    switch (options_.refresh_output()) {
      case RefreshOutput::kDense:
        g.out.copy_(mean.views[i]);
        g.residual.zero_();
        break;
      case RefreshOutput::kProjected: {
        const at::Tensor D = oriented(g.delta);
        const at::Tensor Pt = P.transpose(1, 2);
        oriented(g.out).copy_(at::bmm(P, at::bmm(Pt, G)).mul_(alpha));                               // α·PPᵀḠ
        oriented(g.residual).copy_(at::baddbmm(D, P, at::bmm(Pt, D), /*beta=*/1, /*alpha=*/-alpha));  // Δ_i − α·PPᵀΔ_i
        break;
      }
    }
  }
}

void GaLore::projected_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  const double alpha = options_.galore_scale();
  std::vector<at::Tensor> P;
  std::vector<std::vector<int64_t>> r_shapes;
  for (auto& g : groups) {
    P.push_back(refreshed_state(g, compressor_keys::kP, "galore: no projector P", ctx.compressed_step));  // [batch, rows, k]
    r_shapes.push_back({g.batch(), P.back().size(2), oriented(g.delta).size(2)});
  }
  FlatBuffer R = FlatBuffer::zeros(r_shapes, group_dtype(groups));
  for (size_t i = 0; i < groups.size(); ++i)
    at::bmm_out(R.views[i], P[i].transpose(1, 2), oriented(groups[i].delta));  // R_i = PᵀΔ_i
  const FactorCodec codec(options_.factor_dtype(), FactorAxis::kRows);
  const at::Tensor payload = codec.encode_(R);  // R̃_i: R_i as every rank decodes it (fp32: R_i itself)
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    const at::Tensor D = oriented(g.delta);
    oriented(g.residual).copy_(at::baddbmm(D, P[i], R.views[i], /*beta=*/1, /*alpha=*/-alpha));  // Δ_i − α·P R̃_i
  }
  codec.average_(*ctx.comm, R, payload);  // Σ k·cols factor elements; R̄ = Σ_r R̃_r / W
  for (size_t i = 0; i < groups.size(); ++i)
    oriented(groups[i].out).copy_(at::bmm(P[i], R.views[i]).mul_(alpha));  // ĝ = α·P R̄
}

}  // namespace lowrank
