// PowerSGD+: see the walk-through in include/lowrank/compressors/powersgd_plus.h (docs/algorithms.md §3).
#include "lowrank/compressors/powersgd_plus.h"

#include <sstream>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

PowerSgdPlusOptions PowerSgdPlusOptions::from_config(const Config& c) {
  PowerSgdPlusOptions o;
  o.powersgd(PowerSgdOptions::from_config(c));
  o.restart_period(c.get("restart_period", o.restart_period()));
  o.restart(c.get("restart", o.restart()));
  o.oversampling(c.get("oversampling", o.oversampling()));
  o.power_iters(c.get("power_iters", o.power_iters()));
  return o;
}

void PowerSgdPlusOptions::validate() const {
  powersgd().validate();
  TORCH_CHECK(powersgd().mode() == "two_allreduce", "powersgd+: powersgd_mode must be two_allreduce (the paper's ",
              "power step), got '", powersgd().mode(), "'");
  TORCH_CHECK(restart_period() >= 1, "powersgd+: restart_period (tau) must be >= 1, got ", restart_period());
  TORCH_CHECK(restart() == "svd" || restart() == "rsvd" || restart() == "rsvd_dist", "powersgd+: restart '",
              restart(), "' is not one of svd, rsvd, rsvd_dist");
  TORCH_CHECK(oversampling() >= 0, "powersgd+: oversampling must be >= 0, got ", oversampling());
  TORCH_CHECK(power_iters() >= 0, "powersgd+: power_iters must be >= 0, got ", power_iters());
}

std::ostream& operator<<(std::ostream& os, const PowerSgdPlusOptions& o) {
  return os << o.powersgd() << " restart_period=" << o.restart_period() << " restart=" << o.restart()
            << " oversampling=" << o.oversampling() << " power_iters=" << o.power_iters();
}

namespace {
const PowerSgdPlusOptions& validated(const PowerSgdPlusOptions& o) {
  o.validate();
  return o;
}
}  // namespace

PowerSgdPlus::PowerSgdPlus(PowerSgdPlusOptions options)
    : PowerSgd(validated(options).powersgd()), plus_(std::move(options)) {}

std::unique_ptr<Compressor> PowerSgdPlus::create(const Config& config) {
  return std::make_unique<PowerSgdPlus>(PowerSgdPlusOptions::from_config(config));
}

std::string PowerSgdPlus::describe() const {
  std::ostringstream os;
  os << name() << "(" << plus_ << ")";
  return os.str();
}

int64_t PowerSgdPlus::sketch_width(int64_t m, int64_t n) const {
  return std::min({k_of(m, n) + plus_.oversampling(), m, n});
}

int64_t PowerSgdPlus::wire_floats(int64_t m, int64_t n, int64_t step) const {
  const int64_t k = k_of(m, n);
  if (!is_restart(step)) return k * (m + n);
  if (plus_.restart() == "rsvd_dist") return (plus_.power_iters() + 1) * sketch_width(m, n) * (m + n);
  return m * n + n * k;
}

void PowerSgdPlus::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (is_restart(ctx.step)) {
    form_pending_delta(groups);
    restart_step(groups, ctx);
    return;
  }
  auto Q = start_q(groups, ctx);
  power_step(groups, Q, ctx);
}

void PowerSgdPlus::restart_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  if (plus_.restart() == "rsvd_dist") {
    distributed_rsvd_restart(groups, ctx);
    return;
  }
  comm::Communicator& comm = *ctx.comm;
  const auto dtype = groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
  std::vector<std::vector<int64_t>> shapes;
  for (auto& g : groups) shapes.push_back({g.batch(), g.m, g.n});
  FlatBuffer mean = FlatBuffer::zeros(shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) mean.views[i].copy_(groups[i].delta);
  comm.all_reduce_(mean.flat);  // collective 1: Σ m·n, all matrices in one buffer
  if (comm.size() > 1) mean.flat.div_(comm.size());  // Δ̄

  std::vector<at::Tensor> P_tilde;  // [b, m, k] per group
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    const int64_t k = k_of(g.m, g.n);
    if (plus_.restart() == "svd") {
      P_tilde.push_back(linalg::top_left_singular_vectors(mean.views[i], k));
    } else {
      at::Tensor Omega = shared_randn({g.batch(), g.n, sketch_width(g.m, g.n)}, ctx.seed, ctx.step,
                                      stream_id(Stream::kSketch, g.ordinal), dtype);
      P_tilde.push_back(linalg::randomized_left_singular_vectors(mean.views[i], Omega, k, plus_.power_iters()));
    }
  }
  project_and_reduce(groups, P_tilde, ctx);  // collective 2: Σ n·k
}

// Every product with Δ̄ is an all-reduced local product. Y and Z are only orthogonalized, so
// their sums need no division; B must be the mean because Q = BᵀŨ is the output factor.
void PowerSgdPlus::distributed_rsvd_restart(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  const auto dtype = groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
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
    Omega.push_back(shared_randn({g.batch(), g.n, l}, ctx.seed, ctx.step, stream_id(Stream::kSketch, g.ordinal),
                                 dtype));
  }
  FlatBuffer Y = FlatBuffer::zeros(y_shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) at::bmm_out(Y.views[i], groups[i].delta, Omega[i]);  // Δ_i Ω
  comm.all_reduce_(Y.flat);  // Σ m·ℓ
  for (auto& y : Y.views) orth(y);
  for (int64_t it = 0; it < plus_.power_iters(); ++it) {
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
  comm.all_reduce_(B.flat);  // Σ ℓ·n
  if (comm.size() > 1) B.flat.div_(comm.size());  // B = Yᵀ Δ̄

  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    at::Tensor U = linalg::top_left_singular_vectors(B.views[i], k_of(g.m, g.n));  // Ũ [b, ℓ, k]
    at::Tensor P = at::bmm(Y.views[i], U);                                       // P̃ [b, m, k]
    at::Tensor Q = at::bmm(B.views[i].transpose(1, 2), U);                       // Q = Δ̄ᵀP̃ [b, n, k]
    at::Tensor Qi = at::bmm(g.delta.transpose(1, 2), P);                         // Q_i = Δ_iᵀP̃
    g.residual.copy_(g.delta);
    g.residual.baddbmm_(P, Qi.transpose(1, 2), /*beta=*/1, /*alpha=*/-1);
    at::bmm_out(g.out, P, Q.transpose(1, 2));  // ĝ = P̃ Qᵀ
    for (int64_t j = 0; j < g.batch(); ++j) (*g.states[j])["Q"] = Q[j].clone();
  }
}

}  // namespace lowrank
