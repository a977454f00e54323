// The distributed randomized SVD step: see include/lowrank/compressors/distributed_rsvd.h.
#include "lowrank/compressors/distributed_rsvd.h"

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/orthogonalize.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

// Y and Z are only orthogonalized, so their sums need no division; B must be the mean because
// Q = BᵀŨ is the output factor.
std::vector<at::Tensor> distributed_rsvd_step(std::vector<ShapeGroup>& groups, const StepContext& ctx,
                                              const std::vector<int64_t>& k, const std::vector<int64_t>& width,
                                              int64_t power_iters, std::vector<SketchSpectrum>* spectrum) {
  comm::Communicator& comm = *ctx.comm;
  const auto dtype = group_dtype(groups);
  auto orth = [](at::Tensor& X) {
    linalg::orthogonalize_(X, 0.0, linalg::OrthEpsMode::kMax, linalg::OrthMethod::kHouseholder);
  };
  const bool measuring = spectrum != nullptr;
  const int64_t p = measuring ? kEnergyProbes : 0;
  std::vector<std::vector<int64_t>> y_shapes, first_shapes, z_shapes, b_shapes;
  std::vector<at::Tensor> Omega;
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    const int64_t l = width[i];
    y_shapes.push_back({g.batch(), g.m, l});
    first_shapes.push_back({g.batch(), g.m, l + p});
    z_shapes.push_back({g.batch(), g.n, l});
    b_shapes.push_back({g.batch(), l, g.n});
    at::Tensor omega = shared_randn({g.batch(), g.n, l}, ctx.seed, ctx.compressed_step,
                                    stream_id(Stream::kSketch, g.ordinal), dtype);
    if (measuring)
      omega = at::cat({omega, shared_randn({g.batch(), g.n, p}, ctx.seed, ctx.compressed_step,
                                           stream_id(Stream::kEnergyProbe, g.ordinal), dtype)},
                      2);
    Omega.push_back(omega);
  }
  FlatBuffer first = FlatBuffer::zeros(first_shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) at::bmm_out(first.views[i], groups[i].delta, Omega[i]);  // Δ_i [Ω | Ω']
  comm.all_reduce_(first.flat);  // Σ m·(ℓ + p)
  FlatBuffer Y;
  std::vector<at::Tensor> probes;  // W·Δ̄Ω' [b, m, p]
  if (measuring) {
    Y = FlatBuffer::zeros(y_shapes, dtype);
    for (size_t i = 0; i < groups.size(); ++i) {
      Y.views[i].copy_(first.views[i].narrow(2, 0, width[i]));
      probes.push_back(first.views[i].narrow(2, width[i], p));
    }
  } else {
    Y = std::move(first);
  }
  for (auto& y : Y.views) orth(y);
  for (int64_t it = 0; it < power_iters; ++it) {
    FlatBuffer Z = FlatBuffer::zeros(z_shapes, dtype);
    for (size_t i = 0; i < groups.size(); ++i) at::bmm_out(Z.views[i], groups[i].delta.transpose(1, 2), Y.views[i]);
    comm.all_reduce_(Z.flat);  // Σ n·ℓ
    for (auto& z : Z.views) orth(z);
    Y = FlatBuffer::zeros(y_shapes, dtype);
    for (size_t i = 0; i < groups.size(); ++i) at::bmm_out(Y.views[i], groups[i].delta, Z.views[i]);
    comm.all_reduce_(Y.flat);  // Σ m·ℓ
    for (auto& y : Y.views) orth(y);
  }
  FlatBuffer B = FlatBuffer::zeros(b_shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) at::bmm_out(B.views[i], Y.views[i].transpose(1, 2), groups[i].delta);
  all_reduce_average_(comm, B.flat);  // Σ ℓ·n; B = Yᵀ Δ̄

  std::vector<at::Tensor> P_tilde;
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    const linalg::SingularPairs usv = linalg::top_left_singular_pairs(B.views[i], k[i]);  // Ũ [b, ℓ, k]
    at::Tensor P = at::bmm(Y.views[i], usv.U);                                 // P̃ [b, m, k]
    at::Tensor Q = at::bmm(B.views[i].transpose(1, 2), usv.U);                 // Q = Δ̄ᵀP̃ [b, n, k]
    at::Tensor Qi = at::bmm(g.delta.transpose(1, 2), P);                       // Q_i = Δ_iᵀP̃
    g.residual.copy_(g.delta);
    g.residual.baddbmm_(P, Qi.transpose(1, 2), /*beta=*/1, /*alpha=*/-1);
    at::bmm_out(g.out, P, Q.transpose(1, 2));  // ĝ = P̃ Qᵀ
    store_state(g, compressor_keys::kQ, Q);
    P_tilde.push_back(P);
    if (measuring) {
      const at::Tensor sq = usv.S.to(at::kDouble).pow(2);  // [b, ℓ]
      const double W = comm.size();
      const at::Tensor X = probes[i].to(at::kDouble) / W;  // Δ̄Ω'
      const at::Tensor Yd = Y.views[i].to(at::kDouble);
      const at::Tensor outside = X - at::bmm(Yd, at::bmm(Yd.transpose(1, 2), X));  // (I − YYᵀ) Δ̄Ω'
      spectrum->push_back({sq, sq.sum(1) + outside.pow(2).sum({1, 2}) / static_cast<double>(p)});
    }
  }
  return P_tilde;
}

}  // namespace lowrank
