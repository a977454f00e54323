#pragma once
// GradientReducer: after backward(), replaces every parameter's gradient by the average over
// workers, compressing what is worth compressing (docs/algorithms.md §1).
//
//   loss.backward();    // with overlap on, buckets start reducing while backward still runs
//   reducer.reduce();   // returns when every p.grad() holds ĝ, bit-identical on all ranks
//   optimizer.step();
//
// When gradients are valid. Every parameter's gradient lives in a bucket's flat buffer: the
// reducer attaches its slice as p.grad() at construction (where the dtypes match; a tensor sharing
// the buffer's storage, not an autograd view, so detach_() works), and backward() accumulates into
// it. Zero gradients in place between steps (LibTorch's Optimizer::zero_grad() does detach_() and
// zero_(); so does zero_grad() here). A gradient the caller replaced or set
// undefined still works: reduce() copies it in (undefined counts as zero) and writes ĝ back into
// the caller's tensor, at the cost of two copies. Between the end of backward() and the return of
// reduce(), gradients must not be touched: the reducer's thread reads and rewrites them.
//
// Non-finite gradients (options().skip_nonfinite(), default on). If any rank's gradient holds a
// NaN or Inf, reduce() returns false everywhere and no state changes; the gradients then hold
// unspecified values. With overlap the buckets still start during backward() and the ranks agree
// at the end of the step (reducer/reduction_engine.h, "guarded"); without it reduce() checks every
// gradient before any bucket starts.
//
// Overlap (options().overlap(), default on). Autograd hooks count each bucket's gradients as
// backward() accumulates them; once a bucket is complete and every bucket before it has started,
// it is handed to the reducer's communication thread, which compresses it and runs its
// collectives while backward() goes on. Buckets therefore start in bucket order on every rank, so
// collectives are issued in the same order everywhere by construction. reduce() starts whatever
// backward() did not (unused parameters, or gradients set by hand) and waits for all buckets; the
// results are bit-identical to overlap off. One backward() per reduce(): a second backward()
// before reduce() throws (turn overlap off for gradient accumulation).
//
// What is compressed: tensors with ndim >= 2 whose names do not match uncompressed_names and that
// pass the size rule m·n > ρ·c travel through the compressor, grouped by shape inside each bucket;
// the rest travel dense in the bucket's flat buffer, all-reduced in place. The reducer owns all
// per-parameter state (error-feedback buffers, the compressor's TensorDicts) and counts the bytes
// it hands to the communicator.
//
// Construction is collective: ranks exchange a fingerprint of the compressor, the options, the
// parameter names/shapes and the bucket plan, and all fail with a message naming the difference.
#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/compressor.h"
#include "lowrank/reducer/bucket.h"
#include "lowrank/reducer/reducer_options.h"
#include "lowrank/reducer/reducer_stats.h"
#include "lowrank/reducer/reduction_engine.h"

namespace torch {
namespace autograd {
struct Node;
}
}  // namespace torch

namespace lowrank {

class GradientReducer {
 public:
  /// `params` in a fixed order that is the same on every rank (e.g. module.named_parameters()).
  GradientReducer(std::vector<std::pair<std::string, at::Tensor>> params, std::unique_ptr<Compressor> compressor,
                  std::shared_ptr<comm::Communicator> comm, ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Replaces every gradient by the average over ranks (missing gradients count as zero). With
  /// overlap on, waits for the buckets backward() started and runs the rest. Returns false, on
  /// every rank, when skip_nonfinite found a non-finite gradient on some rank: then nothing was
  /// reduced or changed (skip the optimizer step; last_nonfinite_ranks() names the ranks).
  bool reduce();
  /// Zeroes every gradient buffer in place (and re-attaches the views where a gradient was replaced).
  void zero_grad();

  const ReducerStats& stats() const { return engine_.stats(); }
  const ReducerOptions& options() const { return engine_.options(); }
  const Compressor& compressor() const { return engine_.compressor(); }
  comm::Communicator& communicator() const { return engine_.communicator(); }
  bool error_feedback() const { return engine_.error_feedback().on(); }
  int64_t step() const { return engine_.step(); }
  /// The ranks whose gradients were non-finite in the last skipped step.
  const std::vector<int>& last_nonfinite_ranks() const { return engine_.last_nonfinite_ranks(); }
  /// This rank's first parameter with a non-finite gradient in the last skipped step ("" if none).
  const std::string& last_nonfinite_param() const { return engine_.last_nonfinite_param(); }
  /// Whether buckets start during backward() (overlap on and autograd hooks registered).
  bool overlapping() const { return !hooks_.empty(); }
  size_t bucket_count() const { return buckets_.size(); }
  /// The uncompressed_names patterns that match no parameter (a typo keeps nothing dense).
  std::vector<std::string> unmatched_uncompressed_names() const;
  /// Names of the parameters the compressor handles (in parameter order).
  std::vector<std::string> compressed_names() const;
  /// The buckets' parameter names, in launch order.
  std::vector<std::vector<std::string>> bucket_names() const;
  /// Bytes per step the compressor's formula predicts at compressed step s (dense tensors included;
  /// s < 0: a dense warm-up step).
  int64_t expected_bytes(int64_t s) const;
  /// Every compressed matrix's rank now and, with rank=auto, its history (reducer/reduction_engine.h).
  std::vector<RankedMatrix> ranks() const;
  /// The mean rank over the compressed matrices now (0 for methods without a rank).
  double mean_rank() const;
  /// Σ numel over all parameters.
  int64_t numel() const { return engine_.numel(); }
  /// One line: compressor, options and what is compressed.
  std::string describe() const;
  /// Start-of-run warnings about the set-up (one line each, without a "warning: " prefix; `lowrank
  /// train` prints them at start). Today:
  /// the compressor's own (Compressor::start_warnings), e.g. GreedyLore's with error feedback on
  /// matrices where held-back directions come back in bursts (docs/results.md "Why GreedyLore diverges").
  std::vector<std::string> warnings() const;

  /// Everything needed to resume bit for bit: format version, step, EF buffers, compressor state,
  /// traffic counters (keys: reducer/param_state.h). EF buffers are copies; compressor state
  /// tensors are the live ones: clone what must outlive the next reduce().
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;
  /// Restores state_dict()'s output. Throws naming the key on another format version, an unknown
  /// parameter or key, or a shape mismatch; on a throw the reducer's state is unchanged.
  void load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state);

 private:
  void register_hooks();
  void on_gradient_ready(size_t param);  // autograd hook
  void open_step_locked();               // the first bucket of a step: the engine's step opens here
  void launch_ready_locked();            // hands ready buckets, in order, to the worker
  void worker_loop(bool inference_mode);
  void reduce_bucket(size_t b);          // gather, engine, scatter
  void gather_gradients(Bucket& bucket);
  void scatter_results(Bucket& bucket);

  ReductionEngine engine_;
  std::vector<ParamState>& params_;      // engine_.params()
  std::vector<uint8_t> foreign_;  // per param, this step: 0 our view, 1 caller's tensor, 2 undefined
  std::vector<Bucket> buckets_;

  // Overlap machinery.
  struct Hook {
    std::shared_ptr<torch::autograd::Node> accumulator;
    uintptr_t key = 0;
  };
  std::vector<Hook> hooks_;
  std::vector<int64_t> hooked_count_;   // per bucket: members with a gradient accumulator
  std::vector<int64_t> ready_count_;    // per bucket: hooks fired this step
  std::vector<bool> launched_;          // per bucket: handed to the worker this step
  size_t next_launch_ = 0;
  int64_t from_backward_ = 0;           // buckets launched by hooks this step
  size_t done_ = 0;
  bool step_open_ = false;              // some bucket of this step was launched
  std::deque<size_t> queue_;
  std::exception_ptr error_;
  bool broken_ = false;
  bool stop_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
};

}  // namespace lowrank
