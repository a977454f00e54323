#pragma once
// rank=auto: the rank of every compressed matrix chosen from the spectrum of the error-corrected
// global gradient Δ̄ (docs/algorithms.md §10). Shared by the low-rank compressors that take it
// (powersgd in both modes, powersgd+, greedylore); each says where its spectrum comes from.
//
//   measure   At a spectrum step (powersgd: every rank_period compressed steps, from s = 0; powersgd+:
//             its restarts; greedylore: its refreshes, of the raw gradient with refresh_input=discard) the compressor records, per matrix, the squared
//             singular values σ_1² ≥ σ_2² ≥ … of Δ̄ it found (state "spectrum") and an estimate of
//             ‖Δ̄‖_F² (state "energy"). Every input is all-reduced, so every rank records the same bits.
//   plan      When that step is committed, the reducer hands every compressed matrix's state to
//             plan_ranks() (same order on every rank), which sets state "rank":
//               energy target e: the smallest k in [lo, hi] with Σ_{j≤k} σ_j² ≥ e·‖Δ̄‖²;
//               byte budget B: every matrix starts at lo; then, greedily, the increment k → k+1 that
//                 captures the most σ_{k+1}² per byte it adds to a normal step is taken while the
//                 whole model's normal-step bytes (dense tensors included) stay within B.
//             Same-shape matrices batched in one shape group share a rank: the largest its members
//             need (energy), or one increment for all of them (budget).
//   use       Until the first plan a matrix runs at hi. A spectrum step itself sends at hi and leaves
//             warm-start factors of hi columns, sorted by singular value; the next step keeps the
//             first `rank` of them. Error feedback is never touched by a rank change.
//   record    Every change appends (compressed step, new rank) to state "rank_history". All of it is
//             compressor state, so checkpoints carry it and a resumed run continues bit-exactly.
//
// lo = min(rank_min, m, n), hi = min(rank_max, m, n, ⌊(mn − 1)/(m + n)⌋) but at least lo (no rank whose
// factors hold as many numbers as the matrix). The size rule (§1.3) tests a matrix at lo: a matrix
// is compressed when compressing it at the floor pays. Config keys (documented in
// docs/compressors.md): rank=auto, rank_energy (default 0.9), rank_budget (bytes per step for the
// whole model; replaces rank_energy), rank_min (1), rank_max (16), and for powersgd rank_period (100).
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/compressors/compressor.h"
#include "lowrank/util/config.h"

namespace lowrank {

/// A compressor's rank: a number, or "auto".
struct RankSpec {
  int64_t value = 1;       ///< the fixed rank (meaningless when automatic)
  bool automatic = false;  ///< rank=auto
  RankSpec(int64_t v = 1) : value(v) {}  // NOLINT: implicit, so that options.rank(4) reads naturally
  static RankSpec auto_rank() {
    RankSpec r;
    r.automatic = true;
    return r;
  }
};
inline bool operator==(const RankSpec& a, int64_t b) { return !a.automatic && a.value == b; }
inline std::ostream& operator<<(std::ostream& os, const RankSpec& r) {
  return r.automatic ? os << "auto" : os << r.value;
}
/// Config read of "rank": "auto" or an integer (found by fields.h's ConfigReader through ADL).
void read(const Config& c, const char* key, RankSpec& field);

/// rank_budget: bytes per step, or none. Its read refuses a value that is not > 0, and a Config that
/// also gives rank_energy (two targets).
struct RankBudget {
  std::optional<double> bytes;
};
inline std::ostream& operator<<(std::ostream& os, const RankBudget& b) {
  return b.bytes ? os << static_cast<int64_t>(*b.bytes) : os << "none";
}
void read(const Config& c, const char* key, RankBudget& field);

namespace compressor_keys {
constexpr const char* kRank = "rank";                 ///< rank=auto: the planned rank, int64 [1]
constexpr const char* kSpectrum = "spectrum";         ///< rank=auto: σ_j² of the last spectrum step, [ℓ]
constexpr const char* kEnergy = "energy";             ///< rank=auto: ‖Δ̄‖_F² estimate of that step, [1]
constexpr const char* kRankHistory = "rank_history";  ///< rank=auto: (compressed step, rank) rows, int64 [h, 2]
}  // namespace compressor_keys

/// The rank=auto options, part of the options of every compressor that takes them.
struct AutoRankOptions {
  static constexpr double kDefaultEnergy = 0.9;
  double energy = kDefaultEnergy;  ///< rank_energy: share of ‖Δ̄‖² to keep, in (0, 1]
  RankBudget budget;               ///< rank_budget: bytes per step for the whole model (replaces energy)
  int64_t min = 1;                 ///< rank_min: floor
  int64_t max = 16;                ///< rank_max: ceiling
  int64_t period = 100;            ///< rank_period: powersgd's spectrum steps (others use their own)

  /// The Config keys and shown fields (shown only when `automatic`; rank_period only with `own_period`).
  template <typename Self, typename V>
  static void fields(Self& o, V&& v, bool automatic, bool own_period) {
    v("rank_energy", o.energy, automatic && !o.budget.bytes);
    v("rank_budget", o.budget, automatic && o.budget.bytes.has_value());
    v("rank_min", o.min, automatic);
    v("rank_max", o.max, automatic);
    if (own_period) v("rank_period", o.period, automatic);
  }
  /// Refuses bad values naming them ("<who>: rank_energy must lie in (0, 1], got 0"), and any key set
  /// away from its default when the rank is not auto.
  void validate(const std::string& who, bool automatic) const;
  /// lo and hi of an m×n matrix.
  int64_t lo(int64_t m, int64_t n) const;
  int64_t hi(int64_t m, int64_t n) const;
  /// "rank=auto: keep 90% of each matrix's gradient energy, rank 1..16, spectrum every 100 steps".
  std::string target_text(bool own_period) const;
};

/// Bytes one normal step sends for an m×n matrix at rank k.
using RankCost = std::function<int64_t(int64_t m, int64_t n, int64_t k)>;

/// The planned rank of a matrix: state "rank" when present, else hi.
int64_t planned_rank(const AutoRankOptions& o, const TensorDict& state, int64_t m, int64_t n);
/// The rank a shape group runs at: its first member's planned rank (all members share it).
int64_t planned_rank(const AutoRankOptions& o, const ShapeGroup& group);

/// Stores member j's row of `sq_singular` [b, ℓ] (σ_j², descending) and of `energy` [b] (‖Δ̄‖² estimate).
void record_spectrum(const ShapeGroup& group, const at::Tensor& sq_singular, const at::Tensor& energy);

/// The smallest k in [lo, hi] whose leading σ_j² hold at least `target` of `energy`; hi when none does.
int64_t rank_for_energy(const at::Tensor& sq_singular, double energy, double target, int64_t lo, int64_t hi);

/// The ranks plan_ranks() would set for `matrices` (in their order), from their recorded spectra.
/// `fixed_bytes`: the bytes of the dense tensors per step (counted against a budget). Matrices without
/// a recorded spectrum keep their planned rank.
std::vector<int64_t> plan_auto_ranks(const AutoRankOptions& o, const std::vector<PlannedMatrix>& matrices,
                                     int64_t fixed_bytes, const RankCost& cost);
/// Applies plan_auto_ranks(): sets state "rank" and appends (step, rank) to "rank_history" where it changed.
void apply_auto_ranks(const AutoRankOptions& o, std::vector<PlannedMatrix>& matrices, int64_t step,
                      int64_t fixed_bytes, const RankCost& cost);
/// Refuses a budget that cannot hold every matrix at lo plus the dense tensors, naming both numbers.
void check_rank_budget(const AutoRankOptions& o, const std::string& who, const std::vector<PlannedMatrix>& matrices,
                       int64_t fixed_bytes, const RankCost& cost);

}  // namespace lowrank
