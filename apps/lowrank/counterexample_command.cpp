// `lowrank counterexample`: the Theorem 1 counterexample of the PowerSGD+ paper (docs/algorithms.md §7).
// Runs N simulated workers through the library's real compressors, prints a table, writes
// counterexample.csv (+ counterexample_summary.csv) and a gnuplot PNG into --out.
#include <c10/util/Exception.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/counterexample/counterexample.h"
#include "lowrank/counterexample/counterexample_report.h"
#include "number_flags.h"

namespace lowrank {
namespace cli {
namespace {

// Limits of the flags: threads (workers, parallel runs), steps and seeds (every run keeps its
// trajectory of `steps` values) far beyond the paper's N = 3, T = 5000 and 400 seeds.
constexpr int64_t kMaxWorkers = 1024;
constexpr int64_t kMaxRank = 1000000;
constexpr int64_t kMaxSteps = 100000000;
constexpr int64_t kMaxSeeds = 1000000;

struct CounterexampleFlags {
  std::string mode = "conditioned";
  counterexample::CounterexampleOptions o;  // conditioned defaults; unconditioned ones are applied when not given
  std::string out = ".";
  bool plot = true;
  int64_t csv_seeds = -1;
};

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? sep : "") << v[i];
  return os.str();
}

// Gnuplot single-quoted string: a quote is written twice.
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Writes the PNG by piping a generated script (data inline) into gnuplot. Returns false with a
// message when gnuplot is not installed; throws when it fails.
bool plot_png(const counterexample::CounterexampleResult& r, const std::filesystem::path& png) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::cerr << "lowrank counterexample: gnuplot not found, so no plot was drawn (install the Debian package "
                 "gnuplot-nox); the CSV files were written\n";
    return false;
  }
  const auto& o = r.options;
  std::vector<const counterexample::CounterexampleRun*> curves;
  for (const auto& m : o.methods())
    for (const auto& opt : o.optimizers())
      for (const auto* run : counterexample::runs_of(r, m, opt))
        if (run->seed == o.first_seed()) curves.push_back(run);
  std::ostringstream gp;
  gp << "set terminal pngcairo size 1100,950 enhanced font 'sans,11'\n"
     << "set output " << gp_quote(png.string()) << "\n"
     << "$data << EOD\n";
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
  gp << "EOD\n"
     << "set multiplot layout 2,1 title " << gp_quote(
            "Theorem 1 counterexample (docs/algorithms.md §7): " + o.mode() + ", " + o.basis() + " basis, N = " +
            std::to_string(o.workers()) + ", seed " + std::to_string(o.first_seed())) << " noenhanced\n"
     << "set logscale y\nset format y '10^{%L}'\nset grid\nset key outside right top\nset xlabel 't'\n"
     << "set lmargin 12\nset rmargin 26\n"
     << "set ylabel '||{/Symbol \\321}f(X_t)||^2'\n";
  auto plot_panel = [&](size_t first_col) {
    gp << "plot ";
    // One colour per curve; solid for the first optimizer, dashed for the others, so that curves
    // lying on top of each other (PowerSGD's two flat lines at 16) both stay visible.
    static const char* kColours[] = {"#9400d3", "#e69f00", "#009e73", "#0072b2", "#d55e00", "#56b4e9", "#000000"};
    for (size_t i = 0; i < curves.size(); ++i) {
      const auto& opts = o.optimizers();
      const size_t oi = std::find(opts.begin(), opts.end(), curves[i]->optimizer) - opts.begin();
      gp << (i ? ", " : "") << "$data using 1:" << first_col + i << " with lines lw 1.5 lc rgb '"
         << kColours[i % (sizeof(kColours) / sizeof(kColours[0]))] << "' dt " << (oi == 0 ? 1 : 2) << " title "
         << gp_quote(curves[i]->method + ", " + curves[i]->optimizer) << " noenhanced";
    }
    gp << "\n";
  };
  plot_panel(2);
  // Exact cancellations make ‖ē‖ dip to 1e-50 and below; clip there, the story is 1e-4 … 1e5.
  gp << "set ylabel '||mean_{i} e_{i}||  (clipped below 10^{-4})'\nset yrange [1e-4:*]\n";
  plot_panel(2 + curves.size());
  gp << "unset multiplot\n";

  // A gnuplot that dies early must give an error here, not kill us with SIGPIPE.
  const auto old_handler = std::signal(SIGPIPE, SIG_IGN);
  FILE* pipe = popen("gnuplot", "w");
  if (pipe == nullptr) std::signal(SIGPIPE, old_handler);
  TORCH_CHECK(pipe != nullptr, "could not start gnuplot");
  const std::string script = gp.str();
  const size_t written = std::fwrite(script.data(), 1, script.size(), pipe);
  const int status = pclose(pipe);
  std::signal(SIGPIPE, old_handler);
  TORCH_CHECK(written == script.size() && status == 0, "gnuplot failed (exit status ", status, ") writing ",
              png.string());
  return true;
}

int run(CounterexampleFlags& f, CLI::App* sub) {
  // Mode defaults (§7.5) for the flags not given on the command line.
  const auto defaults = counterexample::CounterexampleOptions::for_mode(f.mode);
  counterexample::CounterexampleOptions o = f.o;
  o.mode(f.mode);
  if (sub->get_option("--steps")->count() == 0) o.steps(defaults.steps());
  if (sub->get_option("--seeds")->count() == 0) o.seeds(defaults.seeds());
  o.validate();
  // Unconditioned runs are many: by default the trajectory CSV keeps the first 20 seeds.
  const int64_t csv_seeds =
      sub->get_option("--csv-seeds")->count() ? f.csv_seeds : (o.conditioned() ? -1 : std::min<int64_t>(20, o.seeds()));
  TORCH_CHECK(csv_seeds >= -1, "--csv-seeds must be >= 0 (or -1 for all), got ", csv_seeds);

  const std::filesystem::path dir(f.out);
  std::filesystem::create_directories(dir);  // before the run, so a bad --out fails at once

  std::cout << "counterexample: " << o << "\n" << std::flush;
  const auto result = counterexample::run_counterexample(o);
  std::cout << "\n";
  counterexample::print_counterexample_table(result, std::cout);
  std::printf("\n%zu runs x %lld steps in %.1f s\n", result.runs.size(), static_cast<long long>(o.steps()),
              result.seconds);

  const auto csv = dir / "counterexample.csv";
  {
    std::ofstream os(csv);
    TORCH_CHECK(os, "cannot write ", csv.string());
    counterexample::write_counterexample_csv(result, os, csv_seeds);
    TORCH_CHECK(os.good(), "error writing ", csv.string());
  }
  const auto summary = dir / "counterexample_summary.csv";
  {
    std::ofstream os(summary);
    TORCH_CHECK(os, "cannot write ", summary.string());
    counterexample::write_counterexample_summary_csv(result, os);
    TORCH_CHECK(os.good(), "error writing ", summary.string());
  }
  std::cout << "wrote " << csv.string()
            << (csv_seeds >= 0 && csv_seeds < o.seeds()
                    ? " (first " + std::to_string(csv_seeds) + " of " + std::to_string(o.seeds()) +
                          " seeds; --csv-seeds to change)"
                    : std::string())
            << "\nwrote " << summary.string() << "\n";
  if (f.plot) {
    const auto png = dir / "counterexample.png";
    if (plot_png(result, png)) std::cout << "wrote " << png.string() << "\n";
  }
  return 0;
}

}  // namespace

Command add_counterexample_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "counterexample",
      "The Theorem 1 counterexample of the PowerSGD+ paper (docs/algorithms.md §7): N simulated workers run the real "
      "compressors on a 2x2 problem where PowerSGD stalls and PowerSGD+ converges");
  auto f = std::make_shared<CounterexampleFlags>();
  auto& o = f->o;
  sub->add_option("--mode", f->mode,
                  "conditioned (xi_0 = +1 on every worker; T 5000, 20 seeds) or unconditioned (T 3000, 400 seeds)")
      ->capture_default_str();
  add_integer(sub, "--workers", o.workers(), "Simulated workers N (odd, docs/algorithms.md §7.2)", {1, kMaxWorkers})
      ->capture_default_str();
  add_real(sub, "--sigma", o.sigma(), "Noise scale sigma > 0", positive())->capture_default_str();
  add_integer(sub, "--rank", o.rank(), "Compression rank r", {1, kMaxRank})->capture_default_str();
  add_integer(sub, "--restart-period", o.restart_period(),
              "Period tau: restart_period of powersgd+, refresh_period of greedylore and galore", {1, kMaxSteps})
      ->capture_default_str();
  add_integer(sub, "--steps", o.steps(), "Steps T per run (default 5000 conditioned, 3000 unconditioned)",
              {1, kMaxSteps});
  add_integer(sub, "--seeds", o.seeds(), "Seeds per method and optimizer (default 20 conditioned, 400 unconditioned)",
              {1, kMaxSeeds});
  add_integer(sub, "--first-seed", o.first_seed(), "First seed", {0, std::numeric_limits<int64_t>::max() - kMaxSeeds})
      ->capture_default_str();
  sub->add_option("--basis", o.basis(), "aligned (PowerSGD's stall is exact) or paper (docs/algorithms.md §7.4)")
      ->capture_default_str();
  sub->add_option("--methods", o.methods(), "Compressors, comma-separated: " + join(compressor_names()))
      ->delimiter(',')
      ->default_str(join(o.methods(), ","));
  sub->add_option("--optimizers", o.optimizers(), "Optimizers, comma-separated: msgd, adam")
      ->delimiter(',')
      ->default_str(join(o.optimizers(), ","));
  add_real(sub, "--lr-msgd", o.lr_msgd(), "MSGD learning rate", positive())->capture_default_str();
  add_real(sub, "--momentum", o.momentum(), "MSGD momentum, 0 <= m < 1", RealRange{0, 1, false, true})
      ->capture_default_str();
  add_real(sub, "--lr-adam", o.lr_adam(), "Adam learning rate", positive())->capture_default_str();
  sub->add_option("--compressor-option", o.compressor_options(),
                  "Extra compressor option METHOD:KEY=VALUE, repeatable (e.g. greedylore:refresh_period=10)");
  add_integer(sub, "--parallel", o.parallel(), "Runs simulated at once (0 = hardware threads)", {0, kMaxWorkers})
      ->capture_default_str();
  add_integer(sub, "--tail-window", o.tail_window(), "Converged if the median of the last this many values ...",
              {1, kMaxSteps})
      ->capture_default_str();
  add_real(sub, "--converged-below", o.converged_below(), "... is below this", positive())->capture_default_str();
  sub->add_option("--out", f->out, "Directory for counterexample.csv, counterexample_summary.csv and the PNG")
      ->capture_default_str();
  add_integer(sub, "--csv-seeds", f->csv_seeds,
              "Seeds per method and optimizer written to counterexample.csv (-1 = all; default all "
              "conditioned, 20 unconditioned)",
              {-1, kMaxSeeds});
  sub->add_flag("--plot,!--no-plot", f->plot, "Draw counterexample.png with gnuplot (default on)");
  return {sub, [f, sub] { return run(*f, sub); }};
}

}  // namespace cli
}  // namespace lowrank
