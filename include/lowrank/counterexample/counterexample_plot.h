#pragma once
// counterexample.png (docs/algorithms.md §7): ‖∇f(X_t)‖² (top) and ‖mean_i e_i‖ (bottom, clipped
// below 1e-4) against t on log scales, one curve per method and optimizer, each the run of the
// first seed. Drawn by gnuplot through report/gnuplot.h from a script that carries its data inline
// and is not kept (the CSV files of counterexample_report.h hold the numbers).
//
//   plot_counterexample(run_counterexample(o), "out/counterexample.png");
#include <string>
#include <vector>

#include "lowrank/counterexample/counterexample.h"

namespace lowrank {
namespace counterexample {

/// The runs drawn: for each method and optimizer, in the options' order, the run of first_seed.
std::vector<const CounterexampleRun*> plotted_runs(const CounterexampleResult& r);

/// The gnuplot script that draws `png`. Its inline block $data has one row per t = 0 … T: t, then
/// ‖∇f(X_t)‖² of each plotted run, then ‖mean_i e_i‖ of each (NaN where it is 0, which has no
/// logarithm); values with 17 significant digits.
std::string counterexample_plot_script(const CounterexampleResult& r, const std::string& png);

/// Draws `png` with gnuplot. Throws as report::draw_figure when gnuplot is missing or fails.
void plot_counterexample(const CounterexampleResult& r, const std::string& png);

}  // namespace counterexample
}  // namespace lowrank
