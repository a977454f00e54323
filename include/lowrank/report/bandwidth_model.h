#pragma once
// The bandwidth model (docs/reports.md, "Predicted step time by link"): from what one run measured per
// step (compute, the reducer's own work, the optimizer, and the bytes and collectives it handed to
// the communicator), the step time it would take on a link of bandwidth B and latency L, and the
// break-even bandwidth against the dense all-reduce: above it, dense is faster.
//
// Ring collectives over W workers (the standard cost model of gloo's and NCCL's ring algorithms):
//   all-reduce of n bytes:           2(W−1)/W · 8n/B  +  2(W−1)·L
//   all-gather of n bytes per rank:  (W−1) · 8n/B     +  (W−1)·L
// (a shared link: B/W in place of B, every worker's bytes cross it)
// Step time, without overlap:  other + compute + compress + communication + optimizer
//            with overlap:     other + max(compute, compress + communication) + optimizer
// (overlap hides communication behind the backward pass at best entirely; the real step lies
// between the two, closer to the first when one bucket carries most of the bytes). `other` is the
// part of a step that no link changes and none of the named parts holds: assembling the batch,
// zeroing the gradients, the trainer's bookkeeping.
//
//   StepProfile p = step_profile_of(read_run_summary("runs/psgd"));
//   double ms = predicted_step_ms(p, Link{100e6, 1e-4}, /*overlap=*/false);
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/report/plot.h"

namespace lowrank {
namespace report {

/// One configuration's measured costs per training step.
struct StepProfile {
  std::string label;
  int64_t world_size = 1;
  double compute_ms = 0;         ///< forward + backward (what bucket communication can overlap with)
  double compress_ms = 0;        ///< the reducer's own compute outside collectives
  double optimizer_ms = 0;
  double other_ms = 0;           ///< the rest of a step, independent of the link (batch, zero_grad, bookkeeping)
  double all_reduce_bytes = 0;   ///< bytes this worker hands to all-reduces per step
  double all_gather_bytes = 0;   ///< this worker's own contribution to all-gathers per step
  double all_reduces = 0;        ///< all-reduce calls per step
  double all_gathers = 0;        ///< all-gather calls per step
};

/// A link: bandwidth in bits per second (> 0) and latency per message hop in seconds (>= 0). `shared`:
/// all W workers' traffic crosses one medium of this bandwidth (workers behind one uplink, or the
/// shaped loopback of scripts/with_slow_link.sh), so each byte term is W times larger; otherwise
/// each worker has a link of its own (a switched network).
struct Link {
  double bits_per_second = 1e9;
  double latency_s = 0;
  bool shared = false;
};

/// Milliseconds one worker spends in collectives per step on `link` (formulas above; 0 for W = 1).
double communication_ms(const StepProfile& p, const Link& link);
/// Predicted step time in milliseconds (formulas above).
double predicted_step_ms(const StepProfile& p, const Link& link, bool overlap);

/// The dense all-reduce a run stands for: its compute and optimizer, no compression work, and
/// `dense_bytes_per_step` all-reduced in `buckets_per_step` collectives.
StepProfile dense_profile_of(const StepProfile& run, double dense_bytes_per_step, double buckets_per_step);

/// Bandwidth range searched for a break-even point, bits per second.
constexpr double kMinBitsPerSecond = 1e3, kMaxBitsPerSecond = 1e13;

/// The bandwidth (bits/s) at which `compressed` and `dense` take equal predicted time at latency
/// `latency_s`: below it `compressed` is faster, above it `dense` is. 0 when `compressed` is not faster
/// anywhere in [kMinBitsPerSecond, kMaxBitsPerSecond]; +inf when it is faster everywhere there. The
/// difference dense − compressed falls as bandwidth rises (both move toward their compute), so a
/// bisection on log B finds the crossing.
double break_even_bits_per_second(const StepProfile& compressed, const StepProfile& dense, double latency_s,
                                  bool overlap, bool shared = false);

/// The profile of a run from its summary.json fields (RunSummary): throws naming the run directory
/// when the per-step fields are missing (a summary written before they existed). other_ms is the
/// median step less the medians of forward+backward, the wait for the reducer and the optimizer
/// (0 when those add up to more).
StepProfile step_profile_of(const RunSummary& s);

/// "20mbit", "100mbit", "1gbit", "2.5gbit", "500kbit", "1e9bit" (tc's decimal units, as
/// scripts/with_slow_link.sh takes them) in bits per second; throws naming the text when it is not a
/// positive finite number followed by bit, kbit, mbit, gbit or tbit.
double parse_bandwidth(const std::string& text);

/// Bandwidth written for people: "100 Mbit/s", "2.5 Gbit/s", "∞" for +inf, "—" for 0.
std::string bandwidth_text(double bits_per_second);

}  // namespace report
}  // namespace lowrank
