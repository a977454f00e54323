#pragma once
// PowerSGD+ (Xie, Chen, Yuan, "From PowerSGD to PowerSGD+", arXiv:2509.11254, Alg. 2;
// docs/algorithms.md §3): PowerSGD with a periodic SVD restart.
//
// At compressed step s, on every compressed matrix M [m, n] (k = min(rank, m, n)), every worker i:
//   if s % restart_period == 0:                 // restart ("SVD-COMP"); s = 0 is a restart
//     restart = svd:
//       Δ̄  = AR_sum(Δ_i) / W                    // collective 1: Σ m·n floats, one flat buffer
//       P̃  = top_left_singular_vectors(Δ̄, k)    // [m, k], thin fp32 SVD, same bits on every rank
//     restart = rsvd (§3.3; same wire, cheaper compute):
//       Ω  = shared N(0,1) [n, ℓ], ℓ = min(k + oversampling, m, n)   // Stream::kSketch
//       P̃  = randomized_left_singular_vectors(Δ̄, Ω, k, power_iters)
//     then, as PowerSGD's second half (project_and_reduce):
//       Q_i = Δ_iᵀ P̃;  e_i = Δ_i − P̃ Q_iᵀ       // EF is NOT reset at a restart
//       Q   = AR_sum(Q_i) / W                   // collective 2: Σ n·k floats
//       ĝ   = P̃ Qᵀ                              // = P̃P̃ᵀΔ̄, the rank-k truncation of Δ̄
//     restart = rsvd_dist (§3.3; Δ̄ is never formed, every product is an all-reduced local one):
//       Y = orth(AR_sum(Δ_i Ω))                 // m·ℓ floats
//       power_iters times: Z = orth(AR_sum(Δ_iᵀ Y)); Y = orth(AR_sum(Δ_i Z))   // n·ℓ + m·ℓ
//       B = AR_sum(Yᵀ Δ_i) / W                  // ℓ·n floats; B = Yᵀ Δ̄
//       Ũ = top_left_singular_vectors(B, k);  P̃ = Y Ũ;  Q = Bᵀ Ũ  (= Δ̄ᵀP̃, no all-reduce)
//       e_i = Δ_i − P̃ P̃ᵀ Δ_i;  ĝ = P̃ Qᵀ
//   else:                                        // one PowerSGD step (§2.1), warm-started
//     Q = start_q(); power_step()                // from the Q the restart left
// orth in rsvd_dist is a Householder QR, like the range finder of linalg/svd.h.
//
// Wire per matrix (floats this rank hands to the communicator, docs/algorithms.md §3.2, §8):
//   normal step k·(m+n);  restart svd/rsvd m·n + n·k;  restart rsvd_dist (q+1)·ℓ·(m+n)
//   with q = power_iters, in 2q+2 collectives. Period average (1 − 1/τ)·k(m+n) + restart/τ.
// The size rule (§1.3) uses PowerSGD's c = k(m+n): restarts are ignored there.
//
// factor_dtype (a PowerSGD key, read once into the PowerSgd this compressor holds; factor_codec.h,
// docs/algorithms.md §6): the power steps send P_i and Q_i as PowerSGD does, and a svd/rsvd restart
// sends its n·k factor Q_i in it too (e_i = Δ_i − P̃ Q̃_iᵀ against this rank's decoded Q_i, ĝ =
// P̃ (Σ_r Q̃_r / W)ᵀ); the restart's m·n mean Δ̄ and the rsvd_dist sketches Y, Z, B stay in the
// working dtype (they are not factors). Restart bytes: m·n·elem + factor_bytes(n, k).
//
// Names: restart_period is the paper's τ ("restart steps"). Every PowerSGD key (rank, warm_start,
// orth_eps, orth_eps_mode, orth_method, factor_dtype) applies to the power steps; powersgd_mode must
// stay two_allreduce (the paper's SSP step).
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <memory>
#include <ostream>
#include <string>

#include "lowrank/compressors/compressor_base.h"
#include "lowrank/compressors/powersgd.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// How a restart finds P̃ (§3.3).
enum class RestartMethod {
  kSvd,       ///< thin SVD of the all-reduced mean Δ̄
  kRsvd,      ///< randomized SVD of Δ̄ (same wire, cheaper compute)
  kRsvdDist,  ///< randomized SVD from all-reduced local products; Δ̄ is never formed
};
inline const Choices<RestartMethod> kRestartMethods = {
    {RestartMethod::kSvd, "svd"}, {RestartMethod::kRsvd, "rsvd"}, {RestartMethod::kRsvdDist, "rsvd_dist"}};

/// Example:
///   PowerSgdPlus c(PowerSgdPlusOptions().restart_period(50).restart(RestartMethod::kRsvd).power_iters(1));
///   make_compressor("powersgd+", Config{{"rank", "4"}, {"restart_period", "200"}});
struct PowerSgdPlusOptions {
  /// Options of the power steps between restarts (PowerSGD's keys). Default PowerSgdOptions().
  TORCH_ARG(PowerSgdOptions, powersgd) = PowerSgdOptions();
  /// τ: a restart happens at every compressed step s with s % τ == 0. The paper tunes τ in
  /// 50–200 (GLUE 50/80/100/200, LLaMA 200; §9.1); 100 sits in the middle of that range (the
  /// geometric mean of its ends) and is the paper's value for QNLI. Default 100.
  TORCH_ARG(int64_t, restart_period) = 100;
  /// svd | rsvd | rsvd_dist: how the restart finds P̃ (§3.3). Default svd.
  TORCH_ARG(RestartMethod, restart) = RestartMethod::kSvd;
  /// p of the randomized restarts: sketch width ℓ = min(k + p, m, n). Default 8.
  TORCH_ARG(int64_t, oversampling) = 8;
  /// q of the randomized restarts: power iterations of the range finder. Default 2.
  TORCH_ARG(int64_t, power_iters) = 2;

 public:
  /// PowerSGD's fields, then these, in this order (Config keys and operator<<).
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    PowerSgdOptions::fields(o.powersgd_, v, /*own_period=*/false);
    v("restart_period", o.restart_period_);
    v("restart", o.restart_, kRestartMethods);
    v("oversampling", o.oversampling_);
    v("power_iters", o.power_iters_);
  }
  void validate() const;
};
inline std::ostream& operator<<(std::ostream& os, const PowerSgdPlusOptions& o) { return os << render_fields(o); }

/// PowerSGD's steps (a PowerSgd it holds) between restarts; its traits and size rule are PowerSGD's.
class PowerSgdPlus : public CompressorBase<PowerSgdPlus, PowerSgdPlusOptions> {
 public:
  static constexpr const char* kName = "powersgd+";
  explicit PowerSgdPlus(PowerSgdPlusOptions options);

  Traits traits() const override { return power_.traits(); }
  double size_test_bytes(int64_t m, int64_t n) const override { return power_.size_test_bytes(m, n); }
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;

  bool is_restart(int64_t step) const { return step % options_.restart_period() == 0; }

  // rank=auto (auto_rank.h): every restart records the spectrum it computed (svd: every singular value
  // of Δ̄ and ‖Δ̄‖² exactly; rsvd: the sketch's ℓ values and ‖Δ̄‖² exactly; rsvd_dist: the sketch's
  // values and the estimate of distributed_rsvd.h), at rank hi; the power steps run at the planned rank.
  bool plans_ranks() const override { return power_.automatic(); }
  bool measures_spectrum(int64_t step) const override { return power_.automatic() && is_restart(step); }
  void plan_ranks(std::vector<PlannedMatrix>& matrices, int64_t step, int64_t fixed_bytes,
                  at::ScalarType work) const override {
    power_.plan_ranks(matrices, step, fixed_bytes, work);
  }
  void check_rank_plan(const std::vector<PlannedMatrix>& matrices, int64_t fixed_bytes,
                       at::ScalarType work) const override {
    if (power_.automatic())
      check_rank_budget(power_.options().auto_rank(), name(), matrices, fixed_bytes, power_.rank_cost(work));
  }
  int64_t rank_at(const TensorDict& state, int64_t m, int64_t n) const override { return power_.rank_at(state, m, n); }
  std::pair<int64_t, int64_t> rank_bounds(int64_t m, int64_t n) const override { return power_.rank_bounds(m, n); }
  std::string rank_plan_text() const override {
    return power_.automatic() ? power_.options().auto_rank().target_text(false) + ", spectrum at every restart"
                              : std::string();
  }
  int64_t wire_bytes_at(const TensorDict& state, int64_t m, int64_t n, int64_t step,
                        at::ScalarType work) const override;
  /// Sketch width ℓ = min(k + oversampling, m, n) of the randomized restarts.
  int64_t sketch_width(int64_t m, int64_t n) const;

 private:
  void restart_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const;
  PowerSgd power_;
};

}  // namespace lowrank
