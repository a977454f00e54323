// counterexample.png: see include/lowrank/counterexample/counterexample_plot.h.
#include "lowrank/counterexample/counterexample_plot.h"

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <sstream>

#include "lowrank/counterexample/counterexample_report.h"
#include "lowrank/report/gnuplot.h"

namespace lowrank {
namespace counterexample {
namespace {

using report::gnuplot_quote;

// $data: t, ‖∇f‖² of each curve, then ‖ē‖ of each.
std::string data_block(const std::vector<const CounterexampleRun*>& curves) {
  std::ostringstream gp;
  gp << "$data << EOD\n";
  const size_t rows = curves.empty() ? 0 : curves[0]->grad_norm_sq.size();
  char num[40];
  for (size_t t = 0; t < rows; ++t) {
    gp << t;
    for (const auto* c : curves) {
      std::snprintf(num, sizeof(num), " %.17g", c->grad_norm_sq[t]);
      gp << num;
    }
    for (const auto* c : curves) {
      // 0 (e_0, or no EF) has no logarithm: leave it out of the log-scale panel.
      if (c->ef_norm[t] > 0) std::snprintf(num, sizeof(num), " %.17g", c->ef_norm[t]);
      else std::snprintf(num, sizeof(num), " NaN");
      gp << num;
    }
    gp << "\n";
  }
  gp << "EOD\n";
  return gp.str();
}

// One panel: curve i is column first_col + i of $data. One colour per curve; solid for the first
// optimizer, dashed for the others, so that curves lying on top of each other (PowerSGD's two flat
// lines at 16) both stay visible.
std::string plot_panel(const CounterexampleOptions& o, const std::vector<const CounterexampleRun*>& curves,
                       size_t first_col) {
  static const char* kColours[] = {"#9400d3", "#e69f00", "#009e73", "#0072b2", "#d55e00", "#56b4e9", "#000000"};
  std::ostringstream gp;
  gp << "plot ";
  for (size_t i = 0; i < curves.size(); ++i) {
    const auto& opts = o.optimizers();
    const size_t oi = std::find(opts.begin(), opts.end(), curves[i]->optimizer) - opts.begin();
    gp << (i ? ", " : "") << "$data using 1:" << first_col + i << " with lines lw 1.5 lc rgb '"
       << kColours[i % std::size(kColours)] << "' dt " << (oi == 0 ? 1 : 2) << " title "
       << gnuplot_quote(curves[i]->method + ", " + to_string(curves[i]->optimizer)) << " noenhanced";
  }
  gp << "\n";
  return gp.str();
}

}  // namespace

std::vector<const CounterexampleRun*> plotted_runs(const CounterexampleResult& r) {
  const auto& o = r.options;
  std::vector<const CounterexampleRun*> curves;
  for (const auto& m : o.methods())
    for (const auto opt : o.optimizers())
      for (const auto* run : runs_of(r, m, opt))
        if (run->seed == o.first_seed()) curves.push_back(run);
  return curves;
}

std::string counterexample_plot_script(const CounterexampleResult& r, const std::string& png) {
  const auto& o = r.options;
  const auto curves = plotted_runs(r);
  std::ostringstream gp;
  gp << "set terminal pngcairo size 1100,950 enhanced font 'sans,11'\n"
     << "set output " << gnuplot_quote(png) << "\n"
     << data_block(curves)
     << "set multiplot layout 2,1 title "
     << gnuplot_quote("Theorem 1 counterexample (docs/algorithms.md §7): " + to_string(o.mode()) + ", " +
                      to_string(o.basis()) + " basis, N = " + std::to_string(o.workers()) + ", seed " +
                      std::to_string(o.first_seed()))
     << " noenhanced\n"
     << "set logscale y\nset format y '10^{%L}'\nset grid\nset key outside right top\nset xlabel 't'\n"
     << "set lmargin 12\nset rmargin 26\n"
     << "set ylabel '||{/Symbol \\321}f(X_t)||^2'\n"
     << plot_panel(o, curves, 2)
     // Exact cancellations make ‖ē‖ dip to 1e-50 and below; clip there, the story is 1e-4 … 1e5.
     << "set ylabel '||mean_{i} e_{i}||  (clipped below 10^{-4})'\nset yrange [1e-4:*]\n"
     << plot_panel(o, curves, 2 + curves.size()) << "unset multiplot\n";
  return gp.str();
}

void plot_counterexample(const CounterexampleResult& r, const std::string& png) {
  report::GnuplotFigure f;
  f.png = png;
  f.script = counterexample_plot_script(r, png);
  report::draw_figure(f);
}

}  // namespace counterexample
}  // namespace lowrank
