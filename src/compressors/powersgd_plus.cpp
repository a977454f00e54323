// PowerSGD+: see the walk-through in include/lowrank/compressors/powersgd_plus.h (docs/algorithms.md §3).
#include "lowrank/compressors/powersgd_plus.h"

#include "lowrank/compressors/factor_codec.h"
#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

void PowerSgdPlusOptions::validate() const {
  powersgd().validate();
  TORCH_CHECK(powersgd().mode() == PowerSgdMode::kTwoAllReduce, "powersgd+: powersgd_mode must be two_allreduce ",
              "(the paper's power step), got '", choice_name(powersgd().mode(), kPowerSgdModes), "'");
  TORCH_CHECK(restart_period() >= 1, "powersgd+: restart_period (tau) must be >= 1, got ", restart_period());
  TORCH_CHECK(oversampling() >= 0, "powersgd+: oversampling must be >= 0, got ", oversampling());
  TORCH_CHECK(power_iters() >= 0, "powersgd+: power_iters must be >= 0, got ", power_iters());
}

// The base validates the options before power_ is built from them.
PowerSgdPlus::PowerSgdPlus(PowerSgdPlusOptions options)
    : CompressorBase(std::move(options)), power_(options_.powersgd()) {}

int64_t PowerSgdPlus::sketch_width(int64_t m, int64_t n) const {
  return std::min({power_.k_of(m, n) + options_.oversampling(), m, n});
}

// The factor_dtype is power_'s (read once, with PowerSGD's keys): the power steps and the restart's
// Q_i (project_and_reduce) send factors in it; Δ̄ and the rsvd_dist sketches stay in `work`.
int64_t PowerSgdPlus::wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const {
  const int64_t k = power_.k_of(m, n), elem = static_cast<int64_t>(c10::elementSize(work));
  if (!is_restart(step)) return power_.wire_bytes(m, n, step, work);
  if (options_.restart() == RestartMethod::kRsvdDist)
    return (options_.power_iters() + 1) * sketch_width(m, n) * (m + n) * elem;
  return m * n * elem + factor_bytes(power_.options().factor_dtype(), n, k, work);
}

void PowerSgdPlus::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (is_restart(ctx.compressed_step)) {
    PowerSgd::form_pending_delta(groups);
    restart_step(groups, ctx);
    return;
  }
  auto Q = power_.start_q(groups, ctx);
  power_.power_step(groups, Q, ctx);
}

void PowerSgdPlus::restart_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  if (options_.restart() == RestartMethod::kRsvdDist) {
    distributed_rsvd_restart(groups, ctx);
    return;
  }
  const auto dtype = group_dtype(groups);
  FlatBuffer mean = all_reduce_average(*ctx.comm, groups, &ShapeGroup::delta);  // collective 1: Σ m·n, Δ̄
  std::vector<at::Tensor> P_tilde;  // [b, m, k] per group
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    const int64_t k = power_.k_of(g.m, g.n);
    if (options_.restart() == RestartMethod::kSvd) {
      P_tilde.push_back(linalg::top_left_singular_vectors(mean.views[i], k));
    } else {
      at::Tensor Omega = shared_randn({g.batch(), g.n, sketch_width(g.m, g.n)}, ctx.seed, ctx.compressed_step,
                                      stream_id(Stream::kSketch, g.ordinal), dtype);
      P_tilde.push_back(linalg::randomized_left_singular_vectors(mean.views[i], Omega, k, options_.power_iters()));
    }
  }
  power_.project_and_reduce(groups, P_tilde, ctx);  // collective 2: Σ n·k, in factor_dtype
}

// Every product with Δ̄ is an all-reduced local product. Y and Z are only orthogonalized, so
// their sums need no division; B must be the mean because Q = BᵀŨ is the output factor.
void PowerSgdPlus::distributed_rsvd_restart(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  const auto dtype = group_dtype(groups);
  auto orth = [](at::Tensor& X) {
    linalg::orthogonalize_(X, 0.0, linalg::OrthEpsMode::kMax, linalg::OrthMethod::kHouseholder);
  };
  std::vector<std::vector<int64_t>> y_shapes, z_shapes, b_shapes;
  std::vector<at::Tensor> Omega;
  for (auto& g : groups) {
    const int64_t l = sketch_width(g.m, g.n);
    y_shapes.push_back({g.batch(), g.m, l});
    z_shapes.push_back({g.batch(), g.n, l});
    b_shapes.push_back({g.batch(), l, g.n});
    Omega.push_back(shared_randn({g.batch(), g.n, l}, ctx.seed, ctx.compressed_step, stream_id(Stream::kSketch, g.ordinal),
                                 dtype));
  }
  FlatBuffer Y = FlatBuffer::zeros(y_shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) at::bmm_out(Y.views[i], groups[i].delta, Omega[i]);  // Δ_i Ω
  comm.all_reduce_(Y.flat);  // Σ m·ℓ
  for (auto& y : Y.views) orth(y);
  for (int64_t it = 0; it < options_.power_iters(); ++it) {
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

  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    at::Tensor U = linalg::top_left_singular_vectors(B.views[i], power_.k_of(g.m, g.n));  // Ũ [b, ℓ, k]
    at::Tensor P = at::bmm(Y.views[i], U);                                       // P̃ [b, m, k]
    at::Tensor Q = at::bmm(B.views[i].transpose(1, 2), U);                       // Q = Δ̄ᵀP̃ [b, n, k]
    at::Tensor Qi = at::bmm(g.delta.transpose(1, 2), P);                         // Q_i = Δ_iᵀP̃
    g.residual.copy_(g.delta);
    g.residual.baddbmm_(P, Qi.transpose(1, 2), /*beta=*/1, /*alpha=*/-1);
    at::bmm_out(g.out, P, Q.transpose(1, 2));  // ĝ = P̃ Qᵀ
    store_state(g, compressor_keys::kQ, Q);
  }
}

}  // namespace lowrank
