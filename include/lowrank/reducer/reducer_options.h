#pragma once
// ReducerOptions: what a GradientReducer or a DDP hook (ddp/comm_hook.h) does beyond the
// compressor's own options (docs/algorithms.md §1).
#include <torch/arg.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/util/fields.h"

namespace lowrank {

/// Which residual the error-feedback buffer keeps (docs/algorithms.md §1.4).
enum class EfResidual {
  kLocal,   ///< e_i = Δ_i − C_i(Δ_i)
  kGlobal,  ///< e_i = Δ_i − ĝ, dense tensors included (PyTorch's PowerSGD hook)
};
/// local, global.
const Choices<EfResidual>& ef_residual_choices();

struct ReducerOptions {
  /// Dense warm-up steps t0: steps t < start_iter are a plain mean all-reduce (§1.6). Default 0.
  TORCH_ARG(int64_t, start_iter) = 0;
  /// ρ of the size rule: compress an m×n matrix only if m·n > ρ·c (§1.3). Default 2.
  TORCH_ARG(double, min_compression_rate) = 2.0;
  /// Error feedback on (true) or off (false); nullopt = the compressor's default (on except for
  /// GaLore-style). Default nullopt.
  TORCH_ARG(std::optional<bool>, error_feedback) = std::nullopt;
  /// local (e_i = Δ_i − C_i(Δ_i)) or global (e_i = Δ_i − ĝ, dense tensors included, as PyTorch's
  /// hook). Default local.
  TORCH_ARG(EfResidual, ef_residual) = EfResidual::kLocal;
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

  /// Every field once, with its key (the keys of `lowrank bench`, the Python module's keyword
  /// arguments and summary.json's config), in the order operator<< prints them. Fields at a value
  /// that changes nothing printable (ef_beta 0, norm_stats on, stats_every 1) are not shown.
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("start_iter", o.start_iter_);
    v("min_compression_rate", o.min_compression_rate_);
    v("error_feedback", o.error_feedback_);
    v("ef_residual", o.ef_residual_, ef_residual_choices());
    v("ef_beta", o.ef_beta_, o.ef_beta_ > 0);
    v("batch_same_shape", o.batch_same_shape_);
    v("seed", o.seed_);
    v("norm_stats", o.norm_stats_, !o.norm_stats_);
    v("stats_every", o.stats_every_, o.stats_every_ != 1);
    v("bucket_cap_mb", o.bucket_cap_mb_);
    v("overlap", o.overlap_);
    v("skip_nonfinite", o.skip_nonfinite_);
    v("uncompressed_names", o.uncompressed_names_);
  }
};
/// "start_iter=0 min_compression_rate=2 error_feedback=default ef_residual=local ..." (fields()).
std::ostream& operator<<(std::ostream& os, const ReducerOptions& o);

}  // namespace lowrank
