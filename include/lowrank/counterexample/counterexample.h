#pragma once
// The counterexample of Theorem 1 of the PowerSGD+ paper (Xie, Chen, Yuan, arXiv:2509.11254,
// Sec. 3 and Appendix A; docs/algorithms.md §7): a 2×2 problem on which PowerSGD stalls forever while
// PowerSGD+ converges.
//
// The objective, the oracle and the two bases are in counterexample_problem.h.
//
// The simulation (§7.5) runs `workers` threads, each with its own fp64 copy of X (a parameter with
// .grad), its own GradientReducer over comm::make_in_process_group(workers) with the library's
// registered compressor (rank r, restart_period τ for powersgd+, warm start, local EF, t0 = 0,
// min_compression_rate 0 so the 2×2 matrix is compressed) and an unmodified LibTorch optimizer
// (SGD with momentum, or Adam) stepping on the reduced gradient. No wire: the in-process group sums
// in rank order, so X stays bit-identical on all workers (checked after every run). Per step it
// records ‖∇f(X_t)‖² and ‖mean_i e_i‖.
//
// Example:
//   auto o = CounterexampleOptions::for_mode(CounterexampleMode::kConditioned).seeds(3);
//   CounterexampleResult r = run_counterexample(o);   // runs methods × optimizers × seeds
#include <torch/arg.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/counterexample/counterexample_problem.h"
#include "lowrank/util/config.h"
#include "lowrank/util/fields.h"

namespace lowrank {
namespace counterexample {

/// How the workers' first noise draws are made (§7.5).
enum class CounterexampleMode {
  kConditioned,    ///< ξ_0 = +1 on every worker
  kUnconditioned,  ///< every ξ from the seed
};
inline const Choices<CounterexampleMode> kCounterexampleModes = {{CounterexampleMode::kConditioned, "conditioned"},
                                                                 {CounterexampleMode::kUnconditioned, "unconditioned"}};
inline std::string to_string(CounterexampleMode m) { return choice_name(m, kCounterexampleModes); }

/// The unmodified LibTorch optimizer that steps on the reduced gradient.
enum class CounterexampleOptimizer {
  kMsgd,  ///< torch::optim::SGD with momentum
  kAdam,  ///< torch::optim::Adam
};
inline const Choices<CounterexampleOptimizer> kCounterexampleOptimizers = {{CounterexampleOptimizer::kMsgd, "msgd"},
                                                                           {CounterexampleOptimizer::kAdam, "adam"}};
inline std::string to_string(CounterexampleOptimizer o) { return choice_name(o, kCounterexampleOptimizers); }

struct CounterexampleOptions {
  /// conditioned (ξ_0 = +1 on every worker) or unconditioned (every ξ from the seed). Default conditioned.
  TORCH_ARG(CounterexampleMode, mode) = CounterexampleMode::kConditioned;
  /// Simulated workers N; odd N avoids the degenerate ξ̄ = 0 (§7.2). Default 3.
  TORCH_ARG(int, workers) = 3;
  /// Noise scale σ > 0. Default 1.
  TORCH_ARG(double, sigma) = 1.0;
  /// Compression rank r ("rank" key of every compressor but none). Default 1.
  TORCH_ARG(int64_t, rank) = 1;
  /// Period τ: "restart_period" of powersgd+, "refresh_period" of greedylore and galore. Default 10.
  TORCH_ARG(int64_t, restart_period) = 10;
  /// Optimizer steps T per run; X_0 … X_T are recorded. Default 5000 (unconditioned: 3000).
  TORCH_ARG(int64_t, steps) = 5000;
  /// Number of seeds per method and optimizer. Default 20 (unconditioned: 400).
  TORCH_ARG(int64_t, seeds) = 20;
  /// Seeds are first_seed … first_seed + seeds − 1. Default 0.
  TORCH_ARG(uint64_t, first_seed) = 0;
  /// aligned or paper (§7.4). Default aligned.
  TORCH_ARG(CounterexampleBasis, basis) = CounterexampleBasis::kAligned;
  /// Registered compressor names. Default {powersgd, powersgd+}.
  TORCH_ARG(std::vector<std::string>, methods) = {"powersgd", "powersgd+"};
  /// msgd and/or adam. Default {msgd, adam}.
  TORCH_ARG(std::vector<CounterexampleOptimizer>, optimizers) = {CounterexampleOptimizer::kMsgd,
                                                                 CounterexampleOptimizer::kAdam};
  /// MSGD learning rate (constant, no dampening, no Nesterov, no weight decay). Default 1e-3.
  TORCH_ARG(double, lr_msgd) = 1e-3;
  /// MSGD momentum μ. Default 0.9.
  TORCH_ARG(double, momentum) = 0.9;
  /// Adam learning rate (betas (0.9, 0.999), eps 1e-8, no weight decay). Default 3e-3.
  TORCH_ARG(double, lr_adam) = 3e-3;
  /// Extra compressor options "method:key=value" (e.g. "greedylore:refresh_period=10"). Default empty.
  TORCH_ARG(std::vector<std::string>, compressor_options) = {};
  /// Runs simulated at the same time (each uses `workers` threads); 0 = hardware threads. Default 0.
  TORCH_ARG(int, parallel) = 0;
  /// Classification window: converged if the median of the last tail_window values is below
  /// converged_below (§7.5). Default 300.
  TORCH_ARG(int64_t, tail_window) = 300;
  /// Default 0.16 (1% of the initial 16).
  TORCH_ARG(double, converged_below) = 0.16;

 public:
  /// The fields, once (util/fields.h), in the order operator<< prints them. Not shown: parallel
  /// (the result does not depend on it) and first_seed (operator<< prints seeds as the range
  /// first_seed..first_seed + seeds − 1). Lists print comma-separated.
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("mode", o.mode_, kCounterexampleModes);
    v("workers", o.workers_);
    v("sigma", o.sigma_);
    v("rank", o.rank_);
    v("restart_period", o.restart_period_);
    v("steps", o.steps_);
    v("seeds", o.seeds_);
    v("first_seed", o.first_seed_, false);
    v("basis", o.basis_, kCounterexampleBases);
    v("methods", o.methods_);
    v("optimizers", o.optimizers_, kCounterexampleOptimizers);
    v("lr_msgd", o.lr_msgd_);
    v("momentum", o.momentum_);
    v("lr_adam", o.lr_adam_);
    v("compressor_options", o.compressor_options_, !o.compressor_options_.empty());
    v("parallel", o.parallel_, false);
    v("tail_window", o.tail_window_);
    v("converged_below", o.converged_below_);
  }

  /// The §7.5 settings of `mode`: conditioned (T 5000, 20 seeds) or unconditioned (T 3000, 400 seeds).
  static CounterexampleOptions for_mode(CounterexampleMode mode);
  bool conditioned() const { return mode() == CounterexampleMode::kConditioned; }
  /// The Config handed to make_compressor for `method`: rank (all but none), τ (see
  /// restart_period), then the matching compressor_options (which may override both).
  Config compressor_config(const std::string& method) const;
  void validate() const;
};
/// "mode=conditioned workers=3 ... seeds=0..19 ...": the shown fields, as a log line that reproduces the run.
std::ostream& operator<<(std::ostream& os, const CounterexampleOptions& o);

/// One simulated run (method × optimizer × seed). Row t is the state entering step t, t = 0 … T.
struct CounterexampleRun {
  std::string method;             ///< registered compressor name
  CounterexampleOptimizer optimizer = CounterexampleOptimizer::kMsgd;
  uint64_t seed = 0;
  std::vector<double> grad_norm_sq;  ///< ‖∇f(X_t)‖²
  std::vector<double> ef_norm;       ///< ‖mean_i e_i‖ of the EF buffers entering step t (e_0 = 0)
  double seconds = 0;                ///< wall time of this run
};

struct CounterexampleResult {
  CounterexampleOptions options;
  std::vector<CounterexampleRun> runs;  ///< methods × optimizers × seeds, in that nesting order
  double seconds = 0;                   ///< wall time of all runs
};

/// Simulates one run on `options.workers()` threads. Throws if the workers' X ever differ.
CounterexampleRun simulate_counterexample(const CounterexampleOptions& options, const std::string& method,
                                          CounterexampleOptimizer optimizer, uint64_t seed);

/// All runs, `parallel` at a time; the result does not depend on `parallel`.
CounterexampleResult run_counterexample(const CounterexampleOptions& options);

}  // namespace counterexample
}  // namespace lowrank
