// Summaries, table and CSV files of counterexample runs (docs/algorithms.md §7.5, §7.6).
#include "lowrank/counterexample/counterexample_report.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "lowrank/util/stats.h"

namespace lowrank {
namespace counterexample {

std::string to_string(RunOutcome o) {
  switch (o) {
    case RunOutcome::kStalled: return "stalled";
    case RunOutcome::kConverged: return "converged";
    case RunOutcome::kOther: return "other";
  }
  return "?";
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double tail_median(const std::vector<double>& v, int64_t window) {
  const size_t w = std::min<size_t>(v.size(), static_cast<size_t>(std::max<int64_t>(window, 1)));
  return median(std::vector<double>(v.end() - w, v.end()), kNaN);
}

RunSummary summarize_run(const CounterexampleRun& run, int64_t tail_window, double converged_below) {
  const auto& g = run.grad_norm_sq;
  TORCH_CHECK(!g.empty(), "counterexample: run (", run.method, ", ", to_string(run.optimizer), ", seed ", run.seed,
              ") has no recorded steps");
  RunSummary s;
  s.initial = g.front();
  s.final = g.back();
  const size_t last10 = std::max<size_t>(1, (g.size() + 9) / 10);
  s.tail_min = *std::min_element(g.end() - last10, g.end());
  s.tail_median = tail_median(g, tail_window);
  for (size_t t = 0; t < g.size(); ++t) {
    if (g[t] != s.initial) {
      s.left_at = static_cast<int64_t>(t);
      break;
    }
  }
  s.final_ef = run.ef_norm.empty() ? 0.0 : run.ef_norm.back();
  if (s.left_at < 0) s.outcome = RunOutcome::kStalled;
  else if (s.tail_median < converged_below) s.outcome = RunOutcome::kConverged;
  else s.outcome = RunOutcome::kOther;
  return s;
}

BinomialInterval binomial_interval_95(int64_t k, int64_t n) {
  TORCH_CHECK(n >= 1 && k >= 0 && k <= n, "binomial interval needs 0 <= k <= n and n >= 1, got k=", k, " n=", n);
  constexpr double z = 1.959963984540054;  // two-sided 95% normal quantile
  BinomialInterval b;
  b.k = k;
  b.n = n;
  b.p = double(k) / double(n);
  const double z2n = z * z / double(n);
  const double denom = 1 + z2n;
  const double center = (b.p + z2n / 2) / denom;
  const double half = z * std::sqrt(b.p * (1 - b.p) / double(n) + z2n / (4 * double(n))) / denom;
  // At k = 0 (k = n) the lower (upper) end is exactly 0 (1); the formula only gets there up to rounding.
  b.lo = k == 0 ? 0.0 : std::max(0.0, center - half);
  b.hi = k == n ? 1.0 : std::min(1.0, center + half);
  return b;
}

std::pair<double, double> stall_fraction_band(int workers, int64_t seeds) {
  const double p = std::ldexp(1.0, -workers);
  const double h = 3 * std::sqrt(p * (1 - p) / double(seeds));
  return {std::max(0.0, p - h), std::min(1.0, p + h)};
}

std::vector<const CounterexampleRun*> runs_of(const CounterexampleResult& r, const std::string& method,
                                              CounterexampleOptimizer optimizer) {
  std::vector<const CounterexampleRun*> out;
  for (const auto& run : r.runs)
    if (run.method == method && run.optimizer == optimizer) out.push_back(&run);
  return out;
}

namespace {

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, x);
  return buf;
}

}  // namespace

void print_counterexample_table(const CounterexampleResult& r, std::ostream& os) {
  const auto& o = r.options;
  const bool uncond = !o.conditioned();
  char line[512];
  std::snprintf(line, sizeof(line), "%-10s %-5s %5s  %-12s %-12s %-12s %-9s %-11s %7s %9s %5s", "method", "opt",
                "seeds", "|gradf_T|^2", "max_seeds", "min_last10%", "leaves_t", "|mean_e_T|", "stalled",
                "converged", "other");
  os << line << (uncond ? "  stall fraction [95% CI]       2^-N" : "") << "\n";
  for (const auto& m : o.methods()) {
    for (const auto opt : o.optimizers()) {
      const auto runs = runs_of(r, m, opt);
      if (runs.empty()) continue;
      std::vector<double> finals, tail_mins, lefts, efs;
      int64_t counts[3] = {0, 0, 0};
      for (const auto* run : runs) {
        const RunSummary s = summarize_run(*run, o.tail_window(), o.converged_below());
        finals.push_back(s.final);
        tail_mins.push_back(s.tail_min);
        efs.push_back(s.final_ef);
        if (s.left_at >= 0) lefts.push_back(double(s.left_at));
        ++counts[static_cast<int>(s.outcome)];
      }
      // Median step at which ‖∇f‖² first changed, over the seeds where it did.
      const std::string left = lefts.empty() ? "never" : fmt("%.0f", median(lefts, kNaN));
      std::snprintf(line, sizeof(line), "%-10s %-5s %5zu  %-12s %-12s %-12s %-9s %-11s %7lld %9lld %5lld", m.c_str(),
                    to_string(opt).c_str(), runs.size(), fmt("%.4g", median(finals, kNaN)).c_str(),
                    fmt("%.4g", *std::max_element(finals.begin(), finals.end())).c_str(),
                    fmt("%.4g", median(tail_mins, kNaN)).c_str(), left.c_str(), fmt("%.4g", median(efs, kNaN)).c_str(),
                    static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
                    static_cast<long long>(counts[2]));
      os << line;
      if (uncond) {
        const auto b = binomial_interval_95(counts[0], static_cast<int64_t>(runs.size()));
        std::snprintf(line, sizeof(line), "  %lld/%lld = %.3f [%.3f, %.3f]  %.3f", static_cast<long long>(b.k),
                      static_cast<long long>(b.n), b.p, b.lo, b.hi, std::ldexp(1.0, -o.workers()));
        os << line;
      }
      os << "\n";
    }
  }
  os << "|gradf_T|^2: median over seeds of ||grad f(X_T)||^2 (max_seeds: the largest); min_last10%: median over "
        "seeds of the minimum over the last 10% of steps;\nleaves_t: median first step at which ||grad f||^2 left its "
        "initial value (over seeds where it did); stalled: ||grad f(X_t)||^2 = initial value exactly at every step;\n"
        "converged: median of the last "
     << o.tail_window() << " values below " << o.converged_below() << " (docs/algorithms.md §7.5).\n";
  if (uncond) {
    const auto band = stall_fraction_band(o.workers(), o.seeds());
    os << "stall fraction: Wilson 95% interval; the 7.6 acceptance band for 2^-N is [" << fmt("%.3f", band.first)
       << ", " << fmt("%.3f", band.second) << "].\n";
  }
}

void write_counterexample_csv(const CounterexampleResult& r, std::ostream& os, int64_t max_seeds) {
  os << "step,method,optimizer,seed,grad_norm_sq,ef_norm\n";
  char line[256];
  for (const auto& run : r.runs) {
    if (max_seeds >= 0 && run.seed >= r.options.first_seed() + static_cast<uint64_t>(max_seeds)) continue;
    for (size_t t = 0; t < run.grad_norm_sq.size(); ++t) {
      std::snprintf(line, sizeof(line), "%zu,%s,%s,%llu,%.17g,%.17g\n", t, run.method.c_str(), to_string(run.optimizer).c_str(),
                    static_cast<unsigned long long>(run.seed), run.grad_norm_sq[t], run.ef_norm[t]);
      os << line;
    }
  }
}

void write_counterexample_summary_csv(const CounterexampleResult& r, std::ostream& os) {
  os << "method,optimizer,seed,outcome,initial,final,tail_min,tail_median,left_at,final_ef_norm\n";
  char line[512];
  for (const auto& run : r.runs) {
    const RunSummary s = summarize_run(run, r.options.tail_window(), r.options.converged_below());
    std::snprintf(line, sizeof(line), "%s,%s,%llu,%s,%.17g,%.17g,%.17g,%.17g,%lld,%.17g\n", run.method.c_str(),
                  to_string(run.optimizer).c_str(), static_cast<unsigned long long>(run.seed), to_string(s.outcome).c_str(),
                  s.initial, s.final, s.tail_min, s.tail_median, static_cast<long long>(s.left_at), s.final_ef);
    os << line;
  }
}

}  // namespace counterexample
}  // namespace lowrank
