// PowerSGD+: see the walk-through in include/lowrank/compressors/powersgd_plus.h (docs/algorithms.md §3).
#include "lowrank/compressors/powersgd_plus.h"

#include "lowrank/compressors/distributed_rsvd.h"
#include "lowrank/compressors/factor_codec.h"
#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

void PowerSgdPlusOptions::validate() const {
  powersgd().auto_rank().validate("powersgd+", powersgd().rank().automatic);
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
  if (!is_restart(step)) return power_.step_bytes(m, n, k, step, work);
  if (options_.restart() == RestartMethod::kRsvdDist)
    return distributed_rsvd_elements(m, n, sketch_width(m, n), options_.power_iters(), power_.automatic()) * elem;
  return m * n * elem + factor_bytes(power_.options().factor_dtype(), n, k, work);
}

int64_t PowerSgdPlus::wire_bytes_at(const TensorDict& state, int64_t m, int64_t n, int64_t step,
                                    at::ScalarType work) const {
  if (!power_.automatic() || is_restart(step)) return wire_bytes(m, n, step, work);
  return power_.step_bytes(m, n, power_.rank_at(state, m, n), step, work);
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
  const bool record = power_.automatic();
  if (options_.restart() == RestartMethod::kRsvdDist) {
    std::vector<int64_t> k, width;
    for (const auto& g : groups) {
      k.push_back(power_.k_of(g.m, g.n));
      width.push_back(sketch_width(g.m, g.n));
    }
    std::vector<SketchSpectrum> spectrum;
    distributed_rsvd_step(groups, ctx, k, width, options_.power_iters(), record ? &spectrum : nullptr);
    for (size_t i = 0; record && i < groups.size(); ++i)
      record_spectrum(groups[i], spectrum[i].sq_singular, spectrum[i].energy);
    return;
  }
  const auto dtype = group_dtype(groups);
  FlatBuffer mean = all_reduce_average(*ctx.comm, groups, &ShapeGroup::delta);  // collective 1: Σ m·n, Δ̄
  std::vector<at::Tensor> P_tilde;  // [b, m, k] per group
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& g = groups[i];
    const int64_t k = power_.k_of(g.m, g.n);
    linalg::SingularPairs usv;
    if (options_.restart() == RestartMethod::kSvd) {
      usv = linalg::top_left_singular_pairs(mean.views[i], k);
    } else {
      at::Tensor Omega = shared_randn({g.batch(), g.n, sketch_width(g.m, g.n)}, ctx.seed, ctx.compressed_step,
                                      stream_id(Stream::kSketch, g.ordinal), dtype);
      usv = linalg::randomized_left_singular_pairs(mean.views[i], Omega, k, options_.power_iters());
    }
    P_tilde.push_back(usv.U);
    if (record) record_spectrum(g, usv.S.to(at::kDouble).pow(2), mean.views[i].to(at::kDouble).pow(2).sum({1, 2}));
  }
  power_.project_and_reduce(groups, P_tilde, ctx);  // collective 2: Σ n·k, in factor_dtype
}

}  // namespace lowrank
