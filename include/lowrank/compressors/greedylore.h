#pragma once
// GreedyLore (Chen, He, Li, Jia, Yuan, "Greedy Low-Rank Gradient Compression for Distributed
// Learning with Convergence Guarantees", arXiv:2507.08784, Alg. 3 as transcribed; docs/algorithms.md §4).
//
// Every compressed matrix is oriented a×b with a = min(m, n) <= b = max(m, n) (transposed when
// m > n, §4.2); k = min(rank, a). At compressed step s, every worker i, with H_i = Δ_i (oriented):
//   if s < dense_steps:                         // dense warm-up (w = dense_steps, default 26)
//     ĝ = AR_sum(g_i) / W;  E_i = 0             // the plain mean, m·n floats; no basis yet
//   elif (s − w) % refresh_period == 0:         // refresh; s = w is always a refresh
//     H̄  = AR_sum(H_i) / W                      // Σ a·b floats, all matrices in one buffer
//     U  = left_singular_basis(H̄)               // [a, a], complete; state "U" (compressor_keys::kU)
//     E_i = 0 (residual = 0);  ĝ = H̄            // a refresh delivers the dense mean
//     (refresh_input = discard: the raw g_i is averaged instead of H_i; E_i is still zeroed)
//   else:
//     Z_i = Uᵀ H_i                              // [a, b]
//     V   = shared N(0,1) [a, b], fresh per step (Stream::kProbe); row j is the probe v_j
//     λ_i[j] = Σ_c Z_i[j,c] V[j,c]              // = u_jᵀ H_i v_j, a signed scalars
//     λ̄   = AR_sum(λ_i) / W                     // collective 1: Σ a floats, one buffer
//     J   = the k largest λ̄_j², ties to the smaller j (then sorted ascending)
//     P   = U[:, J];  R_i = Z_i[J, :]            // [a, k], [k, b]; R_i = Pᵀ H_i
//     E_i = H_i − P R_i                          // local residual, before R_i is reduced
//     R̄   = AR_sum(R_i) / W                     // collective 2: Σ k·b floats, one buffer
//     ĝ   = P R̄                                  // transposed back for m > n
//
// Variants (§4.4; each option value named as in the Config key):
//   scores = shared_probe (default: p = probes shared vectors V ~ N(0, I_b) per matrix, λ_i = Uᵀ(H_i V)
//            [a, p], energy Σ_l λ̄_jl²; no Z_i, and R_i = PᵀH_i is one thin product; a·p scores sent)
//          | probe (the paper's, above: forms Z_i = UᵀH_i, an a×a by a×b product every step)
//          | local_energy (the authors' simulation default: score_j = AR_mean(‖u_jᵀH_i‖²), not squared
//            again; forms Z_i; the most accurate, at several times the compute)
//          | uniform_probe (V uniform on [0, 1): biased, ablation only)
//          | exact (the true energy ‖u_jᵀH̄‖²: Z̄ = AR_mean(Z_i) is all-reduced, a·b floats, and R̄ is
//            read off Z̄[J, :], so this one collective replaces both; a test oracle that sends
//            a·b − (k·b + a) floats more than probe and compresses nothing)
//   select = greedy (default) | random (k distinct columns from Stream::kSelect; no scores are sent)
//   refresh_input = corrected (default, H_i) | discard (raw g_i, author code error_inherit=0)
//   dense_steps   = w (default 26; the authors' code has start_compress_iter = 10)
//
// Why contractive: U is complete, so Σ_j ‖u_jᵀH̄‖² = ‖H̄‖², and keeping the k most energetic
// directions loses at most (1 − k/a)‖H̄‖², however stale U is (exact scores; probes estimate it).
//
// Wire per matrix (docs/algorithms.md §4.5, §8): normal step k·b + a (shared_probe: k·b + a·p;
// select=random: k·b; scores=exact: a·b) in two collectives; refresh and warm-up step a·b in one.
// Size rule (§1.3): c = k·max(m, n).
//
// factor_dtype = bf16 | fp16 | int8 (factor_codec.h, docs/algorithms.md §6): collective 2's selected
// coefficients R_i [k, b] travel encoded (int8: one scale per member and selected direction), one
// all-gather decoded and summed in rank order; R_i is first rounded to R̃_i, its decoded value, and
// E_i = H_i − P R̃_i, R̄ = Σ_r R̃_r / W. Normal-step bytes: factor_bytes(b, k) + a·p·elem (p = probes for
// shared_probe, else 1; select=random: factor_bytes(b, k)); size rule c = factor_bytes(b, k) at fp32.
// The scores λ_i and the refresh's and warm-up's a·b means stay in the working dtype. scores=exact sends no separate factor (its one a·b collective is the
// scores, from which R̄ is read off), so factor_dtype changes nothing there. fp32 (default) is exact.
// State per matrix: compressor_keys::kU ("U") [a, a]; the error buffer E_i is the reducer's EF buffer.
//
// Against PowerSGD (docs/results.md, "GreedyLore's operating point"): at the same rank and about the
// same traffic it trained the CNN and the LM less well even at these defaults, because its k directions
// come from a basis fixed between refreshes; start_warnings() says so whenever it compresses a matrix.
//
// Stability (docs/results.md, "Why GreedyLore diverges"; docs/algorithms.md §4.5): on a wide matrix
// with k ≪ a and τ > a/k, the error buffer holds directions back between refreshes and releases
// them in bursts, which heavy-ball momentum can turn into divergence; the measurements there found
// no setting of this algorithm that avoids it at comparable traffic. lowrank keeps the paper's
// algorithm and says so at start instead: holds_back_in_bursts() / start_warnings(), printed by
// `lowrank train` at start (GradientReducer::warnings(), launch::start_warnings()).
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/compressors/auto_rank.h"
#include "lowrank/compressors/compressor_base.h"
#include "lowrank/compressors/factor_codec.h"
#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// How the directions of the basis are scored (see the walk-through above).
enum class GreedyScores { kProbe, kSharedProbe, kLocalEnergy, kUniformProbe, kExact };
inline const Choices<GreedyScores> kGreedyScores = {{GreedyScores::kProbe, "probe"},
                                                    {GreedyScores::kSharedProbe, "shared_probe"},
                                                    {GreedyScores::kLocalEnergy, "local_energy"},
                                                    {GreedyScores::kUniformProbe, "uniform_probe"},
                                                    {GreedyScores::kExact, "exact"}};

/// Which k directions are sent: the k best scored, or k random ones (no scores are sent).
enum class GreedySelect { kGreedy, kRandom };
inline const Choices<GreedySelect> kGreedySelects = {{GreedySelect::kGreedy, "greedy"},
                                                     {GreedySelect::kRandom, "random"}};

/// What a refresh averages: H_i = Δ_i (with the error buffer) or the raw gradient g_i.
enum class RefreshInput { kCorrected, kDiscard };
inline const Choices<RefreshInput> kRefreshInputs = {{RefreshInput::kCorrected, "corrected"},
                                                     {RefreshInput::kDiscard, "discard"}};

/// Example:
///   GreedyLore c(GreedyLoreOptions().rank(4).refresh_period(100));
///   make_compressor("greedylore", Config{{"rank", "8"}, {"scores", "shared_probe"}});
struct GreedyLoreOptions {
  /// Requested rank r; clamped per matrix to min(r, m, n); or auto (auto_rank.h: chosen at every
  /// refresh from H̄'s singular values). Default 1.
  TORCH_ARG(RankSpec, rank) = RankSpec(1);
  /// τ: the basis U is recomputed at every compressed step s >= dense_steps with
  /// (s − dense_steps) % τ == 0. Default 200 (yiran529/GreedyLore's update_proj_gap).
  TORCH_ARG(int64_t, refresh_period) = 200;
  /// w: compressed steps s < w send the plain dense mean of the raw gradients and keep no error
  /// (like the reducer's start_iter, which comes before it); the first refresh is at s = w.
  /// Default 26: of 10 (yiran529/GreedyLore's start_compress_iter) and 26, the better on both workloads
  /// of docs/results.md ("GreedyLore's operating point"); 0 refreshes at s = 0.
  TORCH_ARG(int64_t, dense_steps) = 26;
  /// shared_probe | probe | local_energy | uniform_probe | exact. Default shared_probe: no a×a by a×b
  /// product per step (the others but uniform_probe form Z_i = UᵀH_i), so a step costs about 1.5×
  /// PowerSGD's on ResNet-18 instead of 7–10× (docs/performance.md); with `probes` 4 it selects nearly
  /// as well as local_energy, the most accurate (docs/results.md, "GreedyLore's operating point").
  TORCH_ARG(GreedyScores, scores) = GreedyScores::kSharedProbe;
  /// p: shared_probe's probe vectors per matrix and step (1..256); the scores are Uᵀ(H_i V), V [b, p],
  /// a·p numbers per matrix on the wire, and direction j's energy estimate is Σ_l λ̄_jl². Default 4
  /// (1 is the single shared probe of earlier versions: measured clearly worse).
  TORCH_ARG(int64_t, probes) = 4;
  /// greedy | random. Default greedy.
  TORCH_ARG(GreedySelect, select) = GreedySelect::kGreedy;
  /// corrected | discard: what a refresh averages (H_i, or the raw g_i as the authors' code does, which
  /// drops E_i unsent). Default corrected: nothing is lost, and at the other defaults discard measured
  /// no better (docs/results.md, "GreedyLore's operating point").
  TORCH_ARG(RefreshInput, refresh_input) = RefreshInput::kCorrected;
  /// fp32 | bf16 | fp16 | int8: how the selected coefficients R_i travel (factor_codec.h,
  /// docs/algorithms.md §6); fp32 sends them in the working dtype. Default fp32.
  TORCH_ARG(FactorDtype, factor_dtype) = FactorDtype::kFp32;
  /// rank=auto's target, floor and ceiling (keys rank_energy, rank_budget, rank_min, rank_max;
  /// auto_rank.h); the spectrum comes from every refresh.
  TORCH_ARG(AutoRankOptions, auto_rank) = AutoRankOptions();

 public:
  /// The Config keys and operator<< fields, in this order; factor_dtype is shown when it is not fp32.
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("rank", o.rank_);
    v("refresh_period", o.refresh_period_);
    v("dense_steps", o.dense_steps_);
    v("scores", o.scores_, kGreedyScores);
    v("probes", o.probes_, o.scores_ == GreedyScores::kSharedProbe);
    v("select", o.select_, kGreedySelects);
    v("refresh_input", o.refresh_input_, kRefreshInputs);
    v("factor_dtype", o.factor_dtype_, kFactorDtypes, o.factor_dtype_ != FactorDtype::kFp32);
    AutoRankOptions::fields(o.auto_rank_, v, o.rank_.automatic, /*own_period=*/false);
  }
  void validate() const;
};
inline std::ostream& operator<<(std::ostream& os, const GreedyLoreOptions& o) { return os << render_fields(o); }

class GreedyLore : public CompressorBase<GreedyLore, GreedyLoreOptions> {
 public:
  static constexpr const char* kName = "greedylore";
  using CompressorBase::CompressorBase;

  Traits traits() const override {
    Traits t;
    t.wants_raw_gradient = options_.refresh_input() == RefreshInput::kDiscard;
    t.in_place_residual = true;  // delta is read before residual is written
    return t;
  }
  bool resets_error_feedback(int64_t step) const override { return is_warmup(step) || is_refresh(step); }
  double size_test_bytes(int64_t m, int64_t n) const override;
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;

  // rank=auto (auto_rank.h): every refresh records H̄'s singular values; the steps after it select
  // the planned number of directions.
  bool automatic() const { return options_.rank().automatic; }
  bool plans_ranks() const override { return automatic(); }
  bool measures_spectrum(int64_t step) const override { return automatic() && is_refresh(step); }
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
    return automatic() ? options_.auto_rank().target_text(/*own_period=*/false) + ", spectrum at every refresh"
                       : std::string();
  }
  int64_t wire_bytes_at(const TensorDict& state, int64_t m, int64_t n, int64_t step,
                        at::ScalarType work) const override;

  /// trails_warning() whenever a matrix is compressed, then stability_warning(compressed) when error
  /// feedback is on and it flags a matrix.
  std::vector<std::string> start_warnings(const std::vector<MatrixInfo>& compressed,
                                          bool error_feedback) const override;

  /// Whether compressed step s is one of the dense warm-up steps (s < dense_steps).
  bool is_warmup(int64_t step) const { return step < options_.dense_steps(); }
  /// Whether compressed step s recomputes the basis: s >= w and (s − w) % τ == 0.
  bool is_refresh(int64_t step) const {
    return !is_warmup(step) && (step - options_.dense_steps()) % options_.refresh_period() == 0;
  }

  /// Whether an m×n matrix is in the regime where, with error feedback, the directions held back
  /// between refreshes come back in bursts: a ≥ kBurstRatio·k and τ > a/k (a = min(m, n), k its
  /// rank). The rule is read off the runs of docs/results.md ("Why GreedyLore diverges"), not a
  /// proven bound: it gives a warning, nothing more.
  bool holds_back_in_bursts(int64_t m, int64_t n) const;
  /// The start-of-run warning for the compressed matrices that holds_back_in_bursts() flags, or ""
  /// when none is.
  std::string stability_warning(const std::vector<MatrixInfo>& matrices) const;
  /// The start-of-run note that GreedyLore trails PowerSGD where it was measured, and why.
  static std::string trails_warning();
  static constexpr int64_t kBurstRatio = 16;
  static constexpr int64_t kMaxProbes = 256;

 private:
  struct Factors;  // one shape group's U, H_i, Z_i, J, P, R_i in a greedy step (greedylore.cpp)

  /// k = min(rank, m, n); with rank=auto the ceiling hi (size rule, warnings, shape-only wire_bytes()).
  int64_t k_of(int64_t m, int64_t n) const {
    return automatic() ? options_.auto_rank().hi(m, n) : std::min({options_.rank().value, m, n});
  }
  /// The number of directions a group selects now (rank=auto: its planned rank).
  int64_t k_of(const ShapeGroup& g) const {
    return automatic() ? planned_rank(options_.auto_rank(), g) : k_of(g.m, g.n);
  }
  /// wire_bytes() at rank k.
  int64_t bytes_at_rank(int64_t m, int64_t n, int64_t k, int64_t step, at::ScalarType work) const;
  /// The bytes of a step that is neither warm-up nor refresh, at rank k.
  int64_t normal_step_bytes(int64_t m, int64_t n, int64_t k, at::ScalarType work) const;
  /// What a rank=auto budget counts per matrix and rank: a normal step's bytes.
  RankCost rank_cost(at::ScalarType work) const;
  /// Score numbers per direction on the wire: probes for shared_probe, else 1 (exact: see wire_bytes).
  int64_t score_columns() const {
    return options_.scores() == GreedyScores::kSharedProbe ? options_.probes() : 1;
  }
  /// Whether the scores are the exact energies (Z̄ is all-reduced and R̄ read off it).
  bool exact_scores() const;
  /// Whether the step forms Z_i = UᵀH_i ([a, b]); shared_probe and random selection do not.
  bool forms_z() const;
  /// A dense step: ĝ = the mean of H_i (refresh_input=discard or a warm-up step: of the raw g_i),
  /// E_i = 0, and on a refresh (with_basis) U from that mean.
  void dense_step(std::vector<ShapeGroup>& groups, const StepContext& ctx, bool with_basis) const;
  void greedy_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const;
  std::vector<Factors> load_factors(const std::vector<ShapeGroup>& groups, const StepContext& ctx) const;
  /// This rank's scores of the directions of one group ([b, a]; exact: Z_i [b, a, b]).
  at::Tensor local_scores(const ShapeGroup& g, const Factors& f, const StepContext& ctx,
                          at::ScalarType dtype) const;
  at::Tensor energy_of(const at::Tensor& mean_scores) const;
  /// Collective 1 and J of every group; returns the all-reduced scores.
  FlatBuffer select_greedy(const std::vector<ShapeGroup>& groups, std::vector<Factors>& f,
                           const StepContext& ctx) const;
  /// P = U[:, J] and R_i = PᵀH_i of one group.
  void project_local(ShapeGroup& g, Factors& f) const;
  /// Collective 2's buffer: every group's R_i, encoded into `payload` and rounded in place to R̃_i
  /// (f[i].R then points at it; fp32: f[i].R stays R_i and nothing is rounded).
  FlatBuffer pack_selected(const std::vector<ShapeGroup>& groups, std::vector<Factors>& f, at::Tensor& payload) const;
  /// E_i = H_i − P R of one group (R = R̃_i: what this rank's R_i decodes to).
  void take_residual(ShapeGroup& g, const Factors& f) const;
  /// Collective 2 (R̄ = Σ_r R̃_r / W from pack_selected's Rb and payload; none for exact scores) and ĝ = P R̄.
  void reduce_selected(std::vector<ShapeGroup>& groups, std::vector<Factors>& f, const FlatBuffer& Rb,
                       const at::Tensor& payload, const StepContext& ctx) const;
};

}  // namespace lowrank
