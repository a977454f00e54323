#pragma once
// ReducerStats: what GradientReducer counts. Traffic is counted in bytes, as handed to the
// communicator; "floats" are bytes / 4, kept for display (an fp64 gradient of n elements is
// 8n bytes dense, i.e. 2n "floats", on both sides of the ratio).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lowrank {

/// A compressed matrix's rank now and its changes (rank=auto), for reports.
struct RankedMatrix {
  std::string name;
  int64_t m = 0, n = 0;
  int64_t rank = 0;                                  ///< 0 for compressors without a rank
  std::vector<std::pair<int64_t, int64_t>> history;  ///< (compressed step, new rank), rank=auto only
};

struct ReducerStats {
  int64_t steps = 0;                    ///< reduce() calls
  int64_t compressed_steps = 0;         ///< steps with t >= start_iter
  int64_t bytes_sent = 0;               ///< handed to the communicator, all steps
  int64_t dense_bytes = 0;              ///< what a dense mean all-reduce would hand over, all steps
  int64_t compressed_bytes_sent = 0;    ///< as bytes_sent, compressed steps only
  int64_t compressed_dense_bytes = 0;   ///< as dense_bytes, compressed steps only
  int64_t last_bytes_sent = 0;          ///< the last step's bytes_sent
  // The same counters / 4 (for display, metrics.csv and summary.json).
  int64_t floats_sent = 0;
  int64_t dense_floats = 0;
  int64_t compressed_floats_sent = 0;
  int64_t compressed_dense_floats = 0;
  int64_t last_floats_sent = 0;
  int64_t skipped_steps = 0;            ///< reduce() calls that found a non-finite gradient (not in steps)
  int64_t buckets_from_backward = 0;    ///< buckets started by autograd hooks (overlap), all steps
  // Traffic by kind over the steps this process reduced (traffic_steps; not in checkpoints, so a
  // resumed run counts from its resume): what the bandwidth model needs (report/bandwidth_model.h).
  int64_t traffic_steps = 0;            ///< applied steps counted below
  int64_t collectives = 0;              ///< collectives issued in those steps
  int64_t all_gathers = 0;              ///< of which all-gathers
  int64_t all_gather_bytes = 0;         ///< of the bytes sent in those steps, all-gather contributions
  int64_t traffic_bytes = 0;            ///< bytes sent in those steps
  double relative_error = 0;            ///< last measured step: ‖Δ_i − C_i(Δ_i)‖ / ‖Δ_i‖ over compressed matrices
  double ef_norm = 0;                   ///< last measured step: ‖e_i‖ over all error-feedback buffers
  // Time, summed over steps; last_* is the last step's.
  double compress_seconds = 0;          ///< reducing outside collectives (on the communication thread)
  double comm_seconds = 0;              ///< blocked in collectives (on the communication thread)
  double wait_seconds = 0;              ///< the caller blocked in reduce(): what overlap did not hide
  double last_compress_seconds = 0;
  double last_comm_seconds = 0;
  double last_wait_seconds = 0;
  /// Headline ratio Σ dense / Σ sent over compressed steps (whole run when none were compressed).
  double compression_ratio() const;
  /// Σ dense / Σ sent over all steps, warm-up included.
  double whole_run_compression_ratio() const;
};

/// The counters and last norms (not the timings) as one int64 tensor, for checkpoints.
at::Tensor stats_to_tensor(const ReducerStats& s);
/// The inverse; throws when `t` is not such a tensor. Timings come back as 0.
ReducerStats stats_from_tensor(const at::Tensor& t);

}  // namespace lowrank
