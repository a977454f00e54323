#pragma once
// PowerSGD (Vogels, Karimireddy, Jaggi 2019, arXiv:1905.13727; docs/algorithms.md §2.1).
//
// One step of subspace (power) iteration with warm start, on every compressed matrix M [m, n]
// (k = min(rank, m, n)), every worker i:
//   Q      = orth(Q_prev)                 // [n, k]; first step: shared random Q (§1.7); an all-zero
//                                         // column of Q_prev is redrawn (revive_zero_columns_)
//   P_i    = Δ_i Q                        // [m, k]
//   P      = AR_sum(P_i)                  // collective 1: Σ m·k floats, one flat buffer
//   P̂      = orth(P)
//   Q_i    = Δ_iᵀ P̂                        // [n, k]
//   e_i    = Δ_i − P̂ Q_iᵀ                  // local residual (error feedback), before Q_i is reduced
//   Q      = AR_sum(Q_i) / W              // collective 2: Σ n·k floats, one flat buffer
//   ĝ      = P̂ Qᵀ                          // = P̂ P̂ᵀ Δ̄
// Wire: k·(m+n) floats per matrix per step, two collectives for all matrices together.
// Same-shape matrices are batched ([b, m, n] bmm) when the reducer groups them.
//
// factor_dtype = bf16 | fp16 | int8 (factor_codec.h, docs/algorithms.md §6): both factor collectives
// carry P_i and Q_i encoded, as one all-gather each, decoded and summed in rank order in the working
// dtype. e_i is taken against Q̃_i, this rank's Q_i as decoded (Qb is rounded in place before the
// residual), so error feedback keeps what the rounding lost; ĝ = P̂ (Σ_r Q̃_r / W)ᵀ. Wire per matrix:
// factor_bytes(m, k) + factor_bytes(n, k), e.g. 2k(m+n) bytes in bf16, k(m+n) + 8k in int8.
// The alternating mode sends its one factor per half step the same way and deflates with the
// decoded own factor. fp32 (default) computes exactly what it did before the option existed.
//
// Option names differ from PyTorch's PowerSGDState: rank = matrix_approximation_rank,
// warm_start = warm_start, seed (reducer) = random_seed, start_iter (reducer) =
// start_powerSGD_iter, min_compression_rate (reducer) = min_compression_rate,
// orth_eps = orthogonalization_epsilon (but our default uses max(‖x‖, eps), see §1.9).
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <memory>
#include <ostream>

#include "lowrank/compressors/auto_rank.h"
#include "lowrank/compressors/compressor_base.h"
#include "lowrank/compressors/factor_codec.h"
#include "lowrank/linalg/orthogonalize.h"
#include "lowrank/util/fields.h"

namespace lowrank {

enum class PowerSgdMode {
  kTwoAllReduce,  ///< §2.1: two factor all-reduces per step
  kAlternating,   ///< §2.3: one factor all-reduce per half power step
};
inline const Choices<PowerSgdMode> kPowerSgdModes = {{PowerSgdMode::kTwoAllReduce, "two_allreduce"},
                                                     {PowerSgdMode::kAlternating, "alternating"}};

/// Example:
///   PowerSgd c(PowerSgdOptions().rank(4).mode(PowerSgdMode::kAlternating).iters_per_step(2));
///   make_compressor("powersgd", Config{{"rank", "4"}, {"powersgd_mode", "alternating"}});
struct PowerSgdOptions {
  /// Requested rank r; clamped per matrix to min(r, m, n); or auto (auto_rank.h: chosen per matrix
  /// from the spectrum of the corrected gradient, with the auto_rank options). Default 1.
  TORCH_ARG(RankSpec, rank) = RankSpec(1);
  /// Keep Q between steps (true) or redraw it from the shared stream every step. Default true.
  TORCH_ARG(bool, warm_start) = true;
  /// Epsilon of the column norm in orth(). Default 1e-16.
  TORCH_ARG(double, orth_eps) = 1e-16;
  /// max: nrm = max(‖x‖, eps) (zero columns stay zero); additive: ‖x‖ + eps (PyTorch). Default max.
  TORCH_ARG(linalg::OrthEpsMode, orth_eps_mode) = linalg::OrthEpsMode::kMax;
  /// Orthogonalization algorithm. Default gram_schmidt.
  TORCH_ARG(linalg::OrthMethod, orth_method) = linalg::OrthMethod::kGramSchmidt;
  /// two_allreduce (§2.1) or alternating (§2.3, one factor all-reduce per step); Config key
  /// powersgd_mode. Default two_allreduce.
  TORCH_ARG(PowerSgdMode, mode) = PowerSgdMode::kTwoAllReduce;
  /// Alternating mode: half power steps per compressed step. Default 1.
  TORCH_ARG(int64_t, iters_per_step) = 1;
  /// fp32 | bf16 | fp16 | int8: how the per-step factors travel (factor_codec.h, docs/algorithms.md
  /// §6); fp32 sends them in the working dtype, exactly as without the option. Default fp32.
  TORCH_ARG(FactorDtype, factor_dtype) = FactorDtype::kFp32;
  /// rank=auto's target, floor, ceiling and spectrum period (keys rank_energy, rank_budget, rank_min,
  /// rank_max, rank_period; auto_rank.h). Must stay at its defaults unless rank is auto.
  TORCH_ARG(AutoRankOptions, auto_rank) = AutoRankOptions();

 public:
  /// The Config keys and operator<< fields, in this order; iters_per_step is shown in alternating
  /// mode only, factor_dtype when it is not fp32 (so describe() and checkpoints of fp32 runs are
  /// those of before the option), the rank_* keys with rank=auto only. `own_period`: whether
  /// rank_period is a key (PowerSGD+ measures at its restarts instead).
  template <typename Self, typename V>
  static void fields(Self& o, V&& v, bool own_period = true) {
    v("rank", o.rank_);
    v("warm_start", o.warm_start_);
    v("orth_eps", o.orth_eps_);
    v("orth_eps_mode", o.orth_eps_mode_, linalg::kOrthEpsModes);
    v("orth_method", o.orth_method_, linalg::kOrthMethods);
    v("powersgd_mode", o.mode_, kPowerSgdModes);
    v("iters_per_step", o.iters_per_step_, o.mode_ == PowerSgdMode::kAlternating);
    v("factor_dtype", o.factor_dtype_, kFactorDtypes, o.factor_dtype_ != FactorDtype::kFp32);
    AutoRankOptions::fields(o.auto_rank_, v, o.rank_.automatic, own_period);
  }
  void validate() const;
};
inline std::ostream& operator<<(std::ostream& os, const PowerSgdOptions& o) { return os << render_fields(o); }

class PowerSgd : public CompressorBase<PowerSgd, PowerSgdOptions> {
 public:
  static constexpr const char* kName = "powersgd";
  using CompressorBase::CompressorBase;

  Traits traits() const override {
    Traits t;
    // Both modes read Δ_i only before they write e_i (the alternating mode deflates e_i in place).
    t.in_place_residual = true;
    // The normal two-all-reduce step forms Δ_i inside ΔQ's pass; other steps add it first.
    t.fuses_delta = true;
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override;
  /// factor_bytes(m, k) + factor_bytes(n, k), or in alternating mode factor_bytes(n, k) on even and
  /// factor_bytes(m, k) on odd half steps (for fp32 factors: k(m+n), k·n, k·m elements of `work`).
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;

  // rank=auto (auto_rank.h): a spectrum step every rank_period compressed steps from s = 0 is one
  // distributed randomized SVD (distributed_rsvd.h) at rank hi, sketch width ℓ = min(hi + 8, m, n)
  // and one power iteration, in place of the power step: 2·ℓ·(m+n) + 8·m elements on the wire (the 8·m:
  // probes of the energy the sketch leaves out, distributed_rsvd.h).
  static constexpr int64_t kSketchOversampling = 8;
  static constexpr int64_t kSketchPowerIters = 1;
  bool automatic() const { return options_.rank().automatic; }
  bool plans_ranks() const override { return automatic(); }
  bool measures_spectrum(int64_t step) const override {
    return automatic() && step % options_.auto_rank().period == 0;
  }
  void plan_ranks(std::vector<PlannedMatrix>& matrices, int64_t step, int64_t fixed_bytes,
                  at::ScalarType work) const override;
  void check_rank_plan(const std::vector<PlannedMatrix>& matrices, int64_t fixed_bytes,
                       at::ScalarType work) const override;
  int64_t rank_at(const TensorDict& state, int64_t m, int64_t n) const override;
  std::pair<int64_t, int64_t> rank_bounds(int64_t m, int64_t n) const override {
    if (!automatic()) return {0, 0};
    return {options_.auto_rank().lo(m, n), options_.auto_rank().hi(m, n)};
  }
  std::string rank_plan_text() const override {
    return automatic() ? options_.auto_rank().target_text(/*own_period=*/true) : std::string();
  }
  /// Planned-rank bytes (rank=auto); wire_bytes() otherwise.
  int64_t wire_bytes_at(const TensorDict& state, int64_t m, int64_t n, int64_t step,
                        at::ScalarType work) const override;
  /// What a rank=auto budget counts per matrix and rank: the mean bytes of two consecutive power steps.
  RankCost rank_cost(at::ScalarType work) const;
  /// Bytes of one power step (no spectrum step) of an m×n matrix at rank k.
  int64_t step_bytes(int64_t m, int64_t n, int64_t k, int64_t step, at::ScalarType work) const;
  /// Sketch width ℓ of a rank=auto spectrum step.
  int64_t sketch_width(int64_t m, int64_t n) const {
    return std::min({options_.auto_rank().hi(m, n) + kSketchOversampling, m, n});
  }

  // The steps of §2.1, which PowerSGD+ composes with its restarts (two_allreduce mode only).

  /// k = min(rank, m, n); with rank=auto, the ceiling hi (size rule, shape-only wire_bytes()).
  int64_t k_of(int64_t m, int64_t n) const {
    return automatic() ? options_.auto_rank().hi(m, n) : std::min({options_.rank().value, m, n});
  }
  /// The rank a group runs at now: k_of(m, n), or with rank=auto its planned rank.
  int64_t k_of(const ShapeGroup& g) const {
    return automatic() ? planned_rank(options_.auto_rank(), g) : k_of(g.m, g.n);
  }
  /// delta += pending for every group that has one (steps that do not fuse it into ΔQ).
  static void form_pending_delta(std::vector<ShapeGroup>& groups);
  /// The warm-start Q of every group, stacked [b, n, k] and orthogonalized (drawn if absent).
  std::vector<at::Tensor> start_q(std::vector<ShapeGroup>& groups, const StepContext& ctx) const;
  /// Steps 2–8 of §2.1 given Q per group: writes out/residual and stores Q as state "Q".
  void power_step(std::vector<ShapeGroup>& groups, std::vector<at::Tensor>& Q, const StepContext& ctx) const;
  /// Steps 5–8 of §2.1 given an orthonormal P̂ [b, m, k] per group: Q_i = Δ_iᵀP̂, e_i = Δ_i − P̂Q̃_iᵀ,
  /// Q = AR_sum(Q̃_i)/W (one flat buffer, Σ n·k factor elements in factor_dtype; Q̃_i = Q_i as decoded,
  /// Q_i itself for fp32), ĝ = P̂Qᵀ; stores Q as state "Q". PowerSGD+ calls it with the restart's P̃.
  void project_and_reduce(std::vector<ShapeGroup>& groups, const std::vector<at::Tensor>& P_hat,
                          const StepContext& ctx) const;

 private:
  FactorCodec codec() const { return FactorCodec(options_.factor_dtype()); }
  void orth_(at::Tensor& X) const;
  /// X [b, rows, k] orthogonalized warm-start factor: redraws its all-zero columns from shared stream
  /// `stream` at ctx.compressed_step and re-orthogonalizes (max eps mode only; see powersgd.cpp).
  void revive_zero_columns_(at::Tensor& X, const StepContext& ctx, uint64_t stream) const;
  void two_allreduce_step(std::vector<ShapeGroup>& groups, const StepContext& ctx);
  /// rank=auto's spectrum step (above); records the spectrum of every group.
  void spectrum_step(std::vector<ShapeGroup>& groups, const StepContext& ctx);
  /// State `key` of every member of g stacked, its first k columns ([b, rows, k]).
  static at::Tensor leading_columns(const ShapeGroup& g, const char* key, int64_t k);
  void alternating_step(std::vector<ShapeGroup>& groups, const StepContext& ctx);
  /// Half power step ℓ of the alternating mode: sends Q_i (even ℓ) or P_i (odd ℓ), deflates D_i and
  /// adds the step's share to every group's out.
  void alternating_half_step(std::vector<ShapeGroup>& groups, const StepContext& ctx, int64_t l,
                             std::vector<at::Tensor>& P, std::vector<at::Tensor>& Q, std::vector<at::Tensor>& D) const;
  /// Alternating mode: the stored P and Q of every group, or shared random ones when absent.
  void start_alternating_factors(std::vector<ShapeGroup>& groups, const StepContext& ctx,
                                 std::vector<at::Tensor>& P, std::vector<at::Tensor>& Q) const;
};

}  // namespace lowrank
