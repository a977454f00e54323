#pragma once
// Summaries of counterexample runs (docs/algorithms.md §7.5, §7.6): the classification of each run as
// stalled / converged / other, the binomial interval of the stall fraction, the printed table and
// the CSV files. See counterexample.h for the runs themselves.
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/counterexample/counterexample.h"

namespace lowrank {
namespace counterexample {

enum class RunOutcome {
  kStalled,    ///< ‖∇f(X_t)‖² equals its initial value exactly at every recorded t
  kConverged,  ///< median of the last tail_window values below converged_below
  kOther,
};
std::string to_string(RunOutcome o);

struct RunSummary {
  double initial = 0;      ///< ‖∇f(X_0)‖² (16 at the §7.5 start)
  double final = 0;        ///< ‖∇f(X_T)‖²
  double tail_min = 0;     ///< min of ‖∇f(X_t)‖² over the last 10% of the recorded steps
  double tail_median = 0;  ///< median over the last tail_window recorded steps
  int64_t left_at = -1;    ///< first t with ‖∇f(X_t)‖² ≠ initial; −1 if it never changed
  double final_ef = 0;     ///< ‖mean_i e_i‖ at T
  RunOutcome outcome = RunOutcome::kOther;
};

/// Median of the last min(window, size) values of `v`.
double tail_median(const std::vector<double>& v, int64_t window);

/// Classifies one run with the §7.5 rule.
RunSummary summarize_run(const CounterexampleRun& run, int64_t tail_window, double converged_below);

/// k successes of n with the Wilson score 95% interval.
struct BinomialInterval {
  int64_t k = 0, n = 0;
  double p = 0, lo = 0, hi = 0;
};
BinomialInterval binomial_interval_95(int64_t k, int64_t n);

/// The §7.6 acceptance band of the stall fraction: 2^{−N} ± 3√(2^{−N}(1 − 2^{−N})/S), clipped to [0, 1].
std::pair<double, double> stall_fraction_band(int workers, int64_t seeds);

/// Runs of `r` for one method and optimizer, in seed order.
std::vector<const CounterexampleRun*> runs_of(const CounterexampleResult& r, const std::string& method,
                                              CounterexampleOptimizer optimizer);

/// The table: one row per method and optimizer (medians over seeds, outcome counts, and in
/// unconditioned mode the stall fraction with its 95% interval next to 2^{−N}).
void print_counterexample_table(const CounterexampleResult& r, std::ostream& os);

/// Trajectories: header "step,method,optimizer,seed,grad_norm_sq,ef_norm", one row per run and
/// t = 0 … T, values with 17 significant digits (so an exact 16 reads back exactly). Only the
/// first `max_seeds` seeds of each method and optimizer when max_seeds >= 0.
void write_counterexample_csv(const CounterexampleResult& r, std::ostream& os, int64_t max_seeds = -1);

/// One row per run: "method,optimizer,seed,outcome,initial,final,tail_min,tail_median,left_at,final_ef_norm".
void write_counterexample_summary_csv(const CounterexampleResult& r, std::ostream& os);

}  // namespace counterexample
}  // namespace lowrank
