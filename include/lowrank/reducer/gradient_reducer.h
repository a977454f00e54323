#pragma once
// GradientReducer: after backward(), replaces every parameter's gradient by the average over
// workers, compressing what is worth compressing (ALGORITHMS.md §1).
//
//   reducer.reduce();   // call on every rank after backward(), before optimizer.step()
//
// When reduce() returns, every p.grad() holds ĝ, bit-identical on all ranks. Tensors with
// ndim <= 1, names matching uncompressed_names, or failing the size rule m·n > ρ·c travel dense in
// one flat mean all-reduce; the rest go through the compressor, grouped by shape. The reducer owns
// all per-parameter state (fp32 error-feedback buffers and the compressor's TensorDicts), keyed by
// parameter name, and counts what it hands to the communicator.
//
// Construction is collective: ranks exchange a fingerprint of the compressor, the options and the
// parameter names/shapes, and all fail with a message naming the difference if they disagree.
#include <ATen/ATen.h>
#include <torch/arg.h>

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/compressor.h"

namespace lowrank {

struct ReducerOptions {
  /// Dense warm-up steps t0: steps t < start_iter are a plain mean all-reduce (§1.6). Default 0.
  TORCH_ARG(int64_t, start_iter) = 0;
  /// ρ of the size rule: compress an m×n matrix only if m·n > ρ·c (§1.3). Default 2.
  TORCH_ARG(double, min_compression_rate) = 2.0;
  /// Error feedback: 1 on, 0 off, -1 the compressor's default (on except for GaLore-style). Default -1.
  TORCH_ARG(int, error_feedback) = -1;
  /// "local" (e_i = Δ_i − C_i(Δ_i)) or "global" (e_i = Δ_i − ĝ, dense tensors included, as
  /// PyTorch's hook). Default "local".
  TORCH_ARG(std::string, ef_residual) = "local";
  /// β of the EMA error feedback of yiran529/GreedyLore (§1.4): e ← e + (1−β)(Δ − C(Δ) − e), i.e.
  /// β·e_old + (1−β)·(the residual above). 0 (the default) is plain EF14; 0 ≤ β < 1. Steps where
  /// the compressor's algorithm sets e = 0 (Compressor::resets_error_feedback) still set it to 0.
  TORCH_ARG(double, ef_beta) = 0.0;
  /// Parameters whose name contains one of these substrings (or matches it as a regex) stay dense.
  /// Default empty.
  TORCH_ARG(std::vector<std::string>, uncompressed_names) = {};
  /// Stack same-shape matrices into one batched computation (§1.8). Default true.
  TORCH_ARG(bool, batch_same_shape) = true;
  /// Base seed of the shared random streams (§1.7). Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Compute stats().relative_error and stats().ef_norm every step (three .item() syncs per step);
  /// false leaves them 0, for simulations where that overhead dominates. Default true.
  TORCH_ARG(bool, norm_stats) = true;

 public:
  void validate() const;
};
std::ostream& operator<<(std::ostream& os, const ReducerOptions& o);

/// Counters since construction. "floats" = bytes / 4 (§8).
struct ReducerStats {
  int64_t steps = 0;                    ///< reduce() calls
  int64_t compressed_steps = 0;         ///< steps with t >= start_iter
  int64_t floats_sent = 0;              ///< handed to the communicator, all steps
  int64_t dense_floats = 0;             ///< Σ numel of every gradient, all steps
  int64_t compressed_floats_sent = 0;   ///< as floats_sent, compressed steps only
  int64_t compressed_dense_floats = 0;  ///< as dense_floats, compressed steps only
  int64_t last_floats_sent = 0;         ///< the last step's floats_sent
  double relative_error = 0;            ///< last step: ‖Δ_i − C_i(Δ_i)‖ / ‖Δ_i‖ over compressed matrices
  double ef_norm = 0;                   ///< last step: ‖e_i‖ over all error-feedback buffers
  double compress_seconds = 0;          ///< time in reduce() outside collectives
  double comm_seconds = 0;              ///< time waiting for collectives
  /// Headline ratio Σ dense / Σ sent over compressed steps (whole run when none were compressed).
  double compression_ratio() const;
  /// Σ dense / Σ sent over all steps, warm-up included.
  double whole_run_compression_ratio() const;
};

class GradientReducer {
 public:
  /// `params` in a fixed order that is the same on every rank (e.g. module.named_parameters()).
  GradientReducer(std::vector<std::pair<std::string, at::Tensor>> params, std::unique_ptr<Compressor> compressor,
                  std::shared_ptr<comm::Communicator> comm, ReducerOptions options = {});

  /// Replaces every gradient by the average over ranks (missing gradients count as zero).
  void reduce();

  const ReducerStats& stats() const { return stats_; }
  const ReducerOptions& options() const { return options_; }
  const Compressor& compressor() const { return *compressor_; }
  comm::Communicator& communicator() const { return *comm_; }
  bool error_feedback() const { return ef_; }
  int64_t step() const { return step_; }
  /// Names of the parameters the compressor handles (in parameter order).
  std::vector<std::string> compressed_names() const;
  /// Floats per step the compressor's formula predicts at compressed step s (dense tensors included).
  int64_t expected_floats(int64_t s) const;
  /// Σ numel over all parameters.
  int64_t numel() const { return numel_; }
  /// One line: compressor, options and what is compressed.
  std::string describe() const;

  /// Everything needed to resume: step, EF buffers, compressor state ("ef/<name>", "state/<name>/<key>").
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;
  void load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state);

 private:
  struct Param {
    std::string name;
    at::Tensor tensor;
    int64_t m = 0, n = 0;
    bool compressed = false;
    at::Tensor ef;      // error-feedback buffer (fp32; fp64 for fp64 parameters), shape of the parameter (lazily created)
    TensorDict state;   // compressor state
  };
  struct Group {
    int64_t m, n;
    std::vector<size_t> members;  // indices into params_
  };

  void check_agreement(const std::string& fingerprint);

  std::vector<Param> params_;
  std::vector<Group> groups_;
  std::vector<size_t> dense_;
  std::unique_ptr<Compressor> compressor_;
  std::shared_ptr<comm::Communicator> comm_;
  ReducerOptions options_;
  bool ef_ = true;
  bool global_residual_ = false;
  int64_t step_ = 0;
  int64_t numel_ = 0;
  ReducerStats stats_;
};

}  // namespace lowrank
