#pragma once
// Compressor: the interface every gradient-compression method implements.
//
// The GradientReducer (reducer/) owns everything shared by all methods: dense warm-up, the
// size/name rule that decides which tensors are compressed, error-feedback buffers, per-parameter
// state, buckets, shape grouping and the dense buffers. A compressor sees only the compressed
// matrices of one bucket at a time, grouped by shape.
//
// Per-bucket contract: compress() is called once per bucket and step, for the buckets in bucket
// order (the same on every rank), possibly on the reducer's communication thread while backward()
// still runs on another; it must not touch anything but its arguments and the states they point to.
// ShapeGroup::ordinal is global across buckets (a group's position in the whole model's bucket
// order), so it can seed shared random streams that differ between groups of different buckets.
// Buckets are planned by bucket_cap_mb; only when the whole model fits one bucket are a call's
// groups the model's shape groups in parameter order. A compressor must
//   * write ĝ (the estimate of the mean over ranks of delta) into `out`, bit-identical on every
//     rank;
//   * write the local residual e_i = Δ_i − C_i(Δ_i) into `residual` (docs/algorithms.md §1.4); the
//     reducer keeps it as the error-feedback buffer when EF is on and reports its norm either way;
//   * issue its collectives in an order that depends only on shapes, options and `step`, never on
//     data local to one rank, so that all ranks issue the same sequence;
//   * hand exactly wire_bytes(m, n, step, dtype) bytes per matrix to the communicator (a test checks).
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"

namespace lowrank {

/// Per-parameter persistent state of a compressor (warm-start Q, bases, ...), owned by the reducer
/// and keyed there by parameter name, so it can be saved and restored.
using TensorDict = std::map<std::string, at::Tensor>;

/// Keys of the TensorDict entries the compressors keep (saved as "state/<param>/<key>", so renaming
/// one breaks checkpoints).
namespace compressor_keys {
constexpr const char* kQ = "Q";  ///< PowerSGD's warm-start Q [n, k]
constexpr const char* kP = "P";  ///< alternating PowerSGD's P [m, k]; GaLore's projector [rows, k]
constexpr const char* kU = "U";  ///< GreedyLore's complete basis [a, a]
}  // namespace compressor_keys

/// A compressed matrix as the reducer plans it: a parameter viewed as [m, n].
struct MatrixInfo {
  std::string name;
  int64_t m = 0, n = 0;
};

/// The compressed matrices of one shape, stacked (docs/algorithms.md §1.8). With batching off, every
/// group has one member.
struct ShapeGroup {
  int64_t ordinal = 0;              ///< position in first-seen order; fixes buffers and RNG streams
  int64_t m = 0, n = 0;             ///< every member is viewed as an [m, n] matrix (§1.2)
  std::vector<std::string> names;   ///< member parameter names, in parameter order
  std::vector<TensorDict*> states;  ///< member state, owned by the reducer
  at::Tensor delta;                 ///< [b, m, n] fp32 (fp64 for fp64 params) Δ_i = g_i + e_i; read-only for
                                    ///< compressors, except that residual may alias it (in_place_residual())
  at::Tensor out;                   ///< [b, m, n], delta's dtype; the compressor writes ĝ
  at::Tensor residual;              ///< [b, m, n], delta's dtype; the compressor writes e_i = Δ_i − C_i(Δ_i)
  /// [b, m, n], delta's dtype: the raw local gradient g_i, without the error-feedback buffer. Set only
  /// when the compressor's wants_raw_gradient() is true (then it is delta itself when EF is off);
  /// read-only. GreedyLore's refresh_input=discard all-reduces it.
  at::Tensor grad;
  /// [b, m, n] or undefined. Only for compressors whose fuses_delta() is true, and only on the
  /// in-place path: delta does not include it yet, and the compressor must add it (delta += pending)
  /// before anything reads delta, ideally in its first pass over delta. Read-only.
  at::Tensor pending;
  int64_t batch() const { return static_cast<int64_t>(names.size()); }
};

/// A compressed matrix as Compressor::plan_ranks() sees it (rank=auto, auto_rank.h).
struct PlannedMatrix {
  std::string name;
  int64_t m = 0, n = 0;
  int64_t group = 0;            ///< equal for the members of one shape group (they share a rank)
  TensorDict* state = nullptr;  ///< the member's compressor state
};

struct StepContext {
  int64_t compressed_step = 0;  ///< s = t − start_iter: the reducer's step t counted from the end of the dense warm-up
  uint64_t seed = 0;      ///< base seed of the shared random streams (§1.7)
  comm::Communicator* comm = nullptr;
};

class Compressor {
 public:
  virtual ~Compressor() = default;

  /// Registered name, e.g. "powersgd".
  virtual std::string name() const = 0;
  /// The resolved options on one line (printed at start, compared across ranks at set-up).
  virtual std::string describe() const = 0;

  /// What the reducer needs to know about a method. Read once, when a reducer or DDP hook is built
  /// (it must not change afterwards); the defaults fit a low-rank method without special needs.
  struct Traits {
    /// False for methods that send every tensor dense ("none"): the reducer then compresses nothing.
    bool compresses = true;
    /// Whether error feedback is on when the user does not say (GaLore-style: off).
    bool default_error_feedback = true;
    /// Whether compress() needs ShapeGroup::grad (the raw gradient).
    bool wants_raw_gradient = false;
    /// False for methods that send nothing at all ("noop"): the reducer issues no collective and
    /// every gradient stays this rank's own.
    bool communicates = true;
    /// Whether compress() is correct when ShapeGroup::residual is the same memory as
    /// ShapeGroup::delta: it must read delta only before it writes residual (and write residual
    /// completely). The reducer then forms Δ_i = g_i + e_i inside the error buffer and lets the
    /// compressor overwrite it with the new e_i, which saves two gradient-sized passes per step
    /// (docs/performance.md). ShapeGroup::out never aliases delta.
    bool in_place_residual = false;
    /// Whether compress() handles ShapeGroup::pending (forms Δ_i = e_i + g_i itself, fused into its
    /// first pass over Δ_i). Requires in_place_residual.
    bool fuses_delta = false;
    /// True for methods whose cost is per element, not per shape (16-bit casts, sparsifiers,
    /// quantizers): every tensor is compressed, whatever its ndim (a 0- or 1-dim one is viewed as
    /// [1, numel]), the size rule does not apply, and uncompressed_names still does.
    bool elementwise = false;
  };
  virtual Traits traits() const { return {}; }

  /// Whether the method's algorithm sets the error buffer to 0 at compressed step `step` (GreedyLore's
  /// refresh): the reducer then stores 0 for the compressed matrices, also where it would otherwise
  /// keep β·e_old (ef_beta > 0) or Δ_i − ĝ (global residual; same mean, hence same trajectory).
  /// Default false.
  virtual bool resets_error_feedback(int64_t /*step*/) const { return false; }

  /// c of the size rule (docs/algorithms.md §1.3) in bytes: what one compressed step of an m×n fp32
  /// matrix hands to the communicator, restarts and refreshes ignored. A matrix is compressed only if
  /// its dense bytes 4·m·n > min_compression_rate · c. Fractional where the cost is (alternating
  /// PowerSGD: ½(m+n)k·iters floats). Not consulted for elementwise methods (Traits::elementwise).
  virtual double size_test_bytes(int64_t m, int64_t n) const = 0;
  /// Bytes this rank hands to the communicator for one m×n matrix at compressed step `step`
  /// (restart and refresh steps included, docs/algorithms.md §8), when the reducer works in `work`
  /// (kFloat, or kDouble for fp64 parameters): values, positions, norms, scales and sign bits
  /// counted. Summed over the compressed matrices it must equal what compress() hands over (a test
  /// checks every registered compressor), so a method that packs bits pads per matrix.
  virtual int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const = 0;

  /// wire_bytes() of a matrix whose compressor state is `state`: differs from it only for methods whose
  /// rank is planned per matrix (rank=auto), whose bytes follow the planned rank held there.
  virtual int64_t wire_bytes_at(const TensorDict& /*state*/, int64_t m, int64_t n, int64_t step,
                                at::ScalarType work) const {
    return wire_bytes(m, n, step, work);
  }

  // rank=auto (compressors/auto_rank.h). The reducer calls plan_ranks() after every committed step
  // at which measures_spectrum() is true, with every compressed matrix (parameter order, the same on
  // every rank); the method sets each one's rank for the following steps in its state.

  /// Whether the ranks are planned per matrix (rank=auto). Default false.
  virtual bool plans_ranks() const { return false; }
  /// Whether compressed step `step` records a spectrum to plan from. Default false.
  virtual bool measures_spectrum(int64_t /*step*/) const { return false; }
  /// Sets the ranks of `matrices` from their recorded spectra. `fixed_bytes`: the bytes per step of
  /// the tensors sent dense. Default: nothing.
  virtual void plan_ranks(std::vector<PlannedMatrix>& /*matrices*/, int64_t /*step*/, int64_t /*fixed_bytes*/,
                          at::ScalarType /*work*/) const {}
  /// Refuses, at set-up, a plan that cannot work for these matrices (a budget below the floor).
  virtual void check_rank_plan(const std::vector<PlannedMatrix>& /*matrices*/, int64_t /*fixed_bytes*/,
                               at::ScalarType /*work*/) const {}
  /// The rank a matrix runs at now (0 for methods without a rank).
  virtual int64_t rank_at(const TensorDict& /*state*/, int64_t /*m*/, int64_t /*n*/) const { return 0; }
  /// The floor and ceiling a plan keeps an m×n matrix's rank in ({0, 0} without a plan).
  virtual std::pair<int64_t, int64_t> rank_bounds(int64_t /*m*/, int64_t /*n*/) const { return {0, 0}; }
  /// The plan's target in words for the start line and `lowrank inspect` ("" without a plan).
  virtual std::string rank_plan_text() const { return ""; }

  /// One compressed step over the compressed matrices of one bucket. `groups` is in first-seen order.
  virtual void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) = 0;

  /// Warnings to print at start for a run that compresses `compressed` (every compressed matrix of
  /// the model) with error feedback on or off: settings the method is known to handle badly. One
  /// line each; default none.
  virtual std::vector<std::string> start_warnings(const std::vector<MatrixInfo>& /*compressed*/,
                                                  bool /*error_feedback*/) const {
    return {};
  }
};

}  // namespace lowrank
