#pragma once
// ReducerOptions: what a GradientReducer or a DDP hook (ddp/comm_hook.h) does beyond the
// compressor's own options (docs/algorithms.md §1).
#include <torch/arg.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

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
  /// Stack same-shape matrices of a bucket into one batched computation (§1.8). Default true.
  TORCH_ARG(bool, batch_same_shape) = true;
  /// Base seed of the shared random streams (§1.7). Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Compute stats().relative_error and stats().ef_norm (two extra passes over the compressed
  /// gradients and a sync); false leaves them 0. Default true.
  TORCH_ARG(bool, norm_stats) = true;
  /// With norm_stats, measure them on every stats_every-th step only (steps t with
  /// (t+1) % stats_every == 0); the stats keep the last measured values. Default 1.
  TORCH_ARG(int64_t, stats_every) = 1;
  /// Bucket size in MiB (reverse parameter order, as PyTorch DDP's bucket_cap_mb); 0 = one bucket
  /// per dtype. GradientReducer only (under DDP, DDP's bucket_cap_mb decides). Default 25.
  TORCH_ARG(double, bucket_cap_mb) = 25.0;
  /// Start each bucket's reduction from autograd hooks while backward() runs
  /// (GradientReducer only; a DDP hook always runs on DDP's buckets as they become ready). Default true.
  TORCH_ARG(bool, overlap) = true;
  /// A step where any rank's gradient holds a NaN or Inf is skipped on every rank and changes no
  /// state (error buffers, factors, bases, step): reduce() returns false everywhere. With overlap
  /// the buckets still start during backward(): each keeps a copy of the state it changes until
  /// the ranks agree at the end of the step (reducer/reduction_engine.h, "guarded"); without
  /// overlap the gradients are checked before any bucket starts. Costs one read pass over the
  /// gradients, one 8-byte all-gather per step and, with overlap, one copy of the error buffers.
  /// false: no check (NaN spreads through the collectives to every rank). Default true.
  TORCH_ARG(bool, skip_nonfinite) = true;

 public:
  void validate() const;
};
std::ostream& operator<<(std::ostream& os, const ReducerOptions& o);

}  // namespace lowrank
