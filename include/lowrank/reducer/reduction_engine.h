#pragma once
// ReductionEngine: the per-bucket step of gradient reduction, for buckets whoever owns them
// (docs/algorithms.md §1): lowrank's own GradientReducer and the DDP communication hook
// (ddp/comm_hook.h) run exactly this code, so the two give the same ĝ for the same buckets.
//
// The engine owns what lives across steps: every parameter's state (error-feedback buffer,
// compressor state), the compressor, the communicator, the options, the step counter t and the
// statistics. A scheduler owns the buckets (Bucket::build through build_bucket()) and calls, per
// step and on one thread at a time, in the same bucket order on every rank:
//
//   engine.begin_step();
//   engine.reduce_bucket(bucket);          // for each bucket: its grads buffer holds this rank's
//   ...                                    // gradient before, ĝ after (bit-identical on all ranks)
//   bool applied = engine.end_step(wait);  // false: a rank had a NaN/Inf; nothing was committed
//
// Non-finite gradients (ReducerOptions::skip_nonfinite). Two ways to keep the promise that a step
// with a NaN/Inf on any rank changes no state on any rank:
//   check first   check_finite() on every bucket, then the ranks agree (one 8-byte all-gather),
//                 and only then reduce. Cheapest, but no bucket can start before the whole model's
//                 gradient exists, so backward() and communication cannot overlap.
//   guarded       (begin_step(true)) each bucket checks its own gradient (zeroing it when it is
//                 not finite, so that compressors see finite values and every rank issues the same
//                 collectives) and keeps a copy of the state it is about to change (its error
//                 buffer and its members' compressor state) before it reduces; end_step() lets the
//                 ranks agree once and, if any rank saw a non-finite value, restores the copies. Buckets can start during backward(); the
//                 price is one copy of the error buffer per step (docs/performance.md).
// On a skipped step the gradient buffers hold unspecified values (the optimizer must not step).
#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/compressor.h"
#include "lowrank/reducer/bucket.h"
#include "lowrank/reducer/error_feedback.h"
#include "lowrank/reducer/param_state.h"
#include "lowrank/reducer/reducer_options.h"
#include "lowrank/reducer/reducer_stats.h"

namespace lowrank {

class ReductionEngine {
 public:
  /// `params` in a fixed order that is the same on every rank. Collective: the ranks compare the
  /// compressor, the options and the parameters (`scheduler` adds the scheduler's own lines, e.g.
  /// the bucket plan) and all fail with a message naming the difference.
  ReductionEngine(std::vector<std::pair<std::string, at::Tensor>> params, std::unique_ptr<Compressor> compressor,
                  std::shared_ptr<comm::Communicator> comm, ReducerOptions options, const std::string& scheduler);

  std::vector<ParamState>& params() { return params_; }
  const std::vector<ParamState>& params() const { return params_; }
  const Compressor& compressor() const { return *compressor_; }
  const Compressor::Traits& traits() const { return traits_; }
  comm::Communicator& communicator() const { return *comm_; }
  const ReducerOptions& options() const { return options_; }
  const ErrorFeedback& error_feedback() const { return ef_; }
  const ReducerStats& stats() const { return stats_; }
  int64_t step() const { return step_; }
  int64_t numel() const { return numel_; }
  int64_t dense_bytes() const { return dense_bytes_; }

  /// The bucket of `members` (indices into params(), ascending): its buffers, and every member's
  /// gradient and error views into them (each parameter belongs to one bucket, built once). Shape
  /// groups are numbered from `*next_ordinal` on.
  Bucket build_bucket(const std::vector<size_t>& members, size_t index, int64_t* next_ordinal);

  /// Opens step t. `guarded`: buckets keep a copy of what they change, for end_step() (above).
  void begin_step(bool guarded);
  /// Whether this rank's gradient in `bucket` is finite (one read pass); records the first
  /// non-finite parameter for last_nonfinite_param().
  bool check_finite(const Bucket& bucket);
  /// Reduces one bucket in place: bucket.grads holds this rank's gradient before and ĝ after.
  /// Thread-compatible: one bucket at a time, on any one thread.
  void reduce_bucket(Bucket& bucket);
  /// Check first: the ranks agree on `finite_here` (one 8-byte all-gather); false on every rank when
  /// some rank was not finite (then last_nonfinite_ranks() and last_nonfinite_param() say where).
  bool agree_finite(bool finite_here);
  /// Closes the step. A guarded step lets the ranks agree on its buckets' checks first; when some
  /// rank was not finite it restores every bucket it reduced, counts the skip and returns false on
  /// every rank. Otherwise the step is committed (statistics, t ← t + 1) and true returned.
  bool end_step(double wait_seconds);

  /// The ranks whose gradients were non-finite in the last skipped step.
  const std::vector<int>& last_nonfinite_ranks() const { return nonfinite_ranks_; }
  /// This rank's first parameter with a non-finite gradient in the last skipped step ("" if none).
  const std::string& last_nonfinite_param() const { return nonfinite_param_; }

  std::vector<std::string> unmatched_uncompressed_names() const;
  std::vector<std::string> compressed_names() const;
  /// Bytes this rank hands over at compressed step s (s < 0: a dense warm-up step), at the ranks
  /// planned now.
  int64_t expected_bytes(int64_t s) const;
  /// Every compressed matrix's rank now and (rank=auto) its history of changes, in parameter order.
  std::vector<RankedMatrix> ranks() const;
  /// The mean rank over the compressed matrices (0 when none is, or the method has no rank).
  double mean_rank() const;
  /// Compressor, options and what is compressed; `groups` and `buckets` come from the scheduler.
  std::string describe(size_t groups, size_t buckets) const;
  std::vector<std::string> warnings() const;

  /// Keys: reducer/param_state.h.
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;
  void load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state);
  /// Counts a step skipped before any bucket ran (check-first path).
  void count_skipped_step();
  /// Adds to stats().buckets_from_backward (the scheduler knows which buckets overlapped).
  void count_buckets_from_backward(int64_t n) { stats_.buckets_from_backward += n; }

 private:
  bool measuring_norms() const;
  /// The compressed matrices as Compressor::plan_ranks() sees them (group: bucket and shape when
  /// same-shape matrices are batched, else the parameter).
  std::vector<PlannedMatrix> planned_matrices();
  /// The working dtype a rank plan counts bytes in: the first compressed parameter's.
  at::ScalarType planning_dtype() const;
  std::string state_settings() const;  // state_keys::kSettings
  void backup(Bucket& bucket);
  void restore(Bucket& bucket);
  // The steps of reduce_bucket(), in order.
  void guard(Bucket& bucket);                             // guarded: zero a non-finite bucket, back up
  void reduce_dense_warmup(Bucket& bucket);               // t < start_iter: one mean all-reduce
  comm::HandlePtr start_dense_members(Bucket& bucket);    // dense members (EF, mean), async
  std::vector<ShapeGroup> shape_groups(Bucket& bucket, bool in_place, bool measure, double* delta_sq);
  void finish_compressed(Bucket& bucket, std::vector<ShapeGroup>& shapes, bool in_place, bool measure, int64_t s,
                         double* res_sq);                 // EF update, ĝ into the gradients
  void finish_dense_members(Bucket& bucket, const comm::HandlePtr& handle);

  std::vector<ParamState> params_;
  std::unique_ptr<Compressor> compressor_;
  Compressor::Traits traits_;
  std::shared_ptr<comm::Communicator> comm_;
  ReducerOptions options_;
  ErrorFeedback ef_;
  int64_t step_ = 0;
  int64_t numel_ = 0;
  int64_t dense_bytes_ = 0;
  int64_t uncompressed_bytes_ = 0;  ///< bytes per step of the tensors the compressor does not handle (sent dense)
  ReducerStats stats_;
  std::vector<int> nonfinite_ranks_;
  std::string nonfinite_param_;

  // The open step (written by the thread that reduces buckets; read after it finished).
  bool guarded_ = false;
  bool step_finite_ = true;
  size_t first_nonfinite_ = SIZE_MAX;
  std::vector<Bucket*> touched_;  // buckets reduced this step (guarded: restored on a skip)
  double step_res_sq_ = 0, step_delta_sq_ = 0;
  double step_busy_seconds_ = 0, step_comm_seconds_ = 0;
  comm::CommStats step_comm_before_;  // the communicator's counters when the step began
};

}  // namespace lowrank
