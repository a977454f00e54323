// `lowrank counterexample`: the Theorem 1 counterexample of the PowerSGD+ paper (docs/algorithms.md §7).
// Runs N simulated workers through the library's real compressors, prints a table, writes
// counterexample.csv (+ counterexample_summary.csv) and a gnuplot PNG into --out.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdio>
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
#include "lowrank/counterexample/counterexample_plot.h"
#include "lowrank/counterexample/counterexample_report.h"
#include "lowrank/report/gnuplot.h"
#include "lowrank/util/fields.h"
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

using counterexample::CounterexampleMode;
using counterexample::CounterexampleOptimizer;
using counterexample::CounterexampleOptions;
using counterexample::CounterexampleResult;

struct CounterexampleFlags {
  CounterexampleOptions o;  // conditioned defaults; unconditioned ones are applied when not given
  // The named choices of `o`, as given; parsed once by resolve_options().
  std::string mode = to_string(CounterexampleMode::kConditioned);
  std::string basis = to_string(o.basis());
  std::vector<std::string> optimizers;
  std::string out = ".";
  bool plot = true;
  int64_t csv_seeds = -1;
};

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::ostringstream os;
  for (size_t i = 0; i < v.size(); ++i) os << (i ? sep : "") << v[i];
  return os.str();
}

// The options of the command line: the named choices parsed, and the §7.5 defaults of the mode for
// --steps and --seeds when they were not given. Validated.
CounterexampleOptions resolve_options(const CounterexampleFlags& f, CLI::App* sub) {
  const auto mode = parse_choice("counterexample: mode", f.mode, counterexample::kCounterexampleModes);
  const auto defaults = CounterexampleOptions::for_mode(mode);
  CounterexampleOptions o = f.o;
  o.mode(mode);
  o.basis(parse_choice("counterexample: basis", f.basis, counterexample::kCounterexampleBases));
  std::vector<CounterexampleOptimizer> optimizers;
  for (const auto& name : f.optimizers)
    optimizers.push_back(parse_choice("counterexample: optimizer", name, counterexample::kCounterexampleOptimizers));
  o.optimizers(optimizers);
  if (sub->get_option("--steps")->count() == 0) o.steps(defaults.steps());
  if (sub->get_option("--seeds")->count() == 0) o.seeds(defaults.seeds());
  o.validate();
  return o;
}

// Opens `path`, hands the stream to `write`, and throws naming the file when that fails.
template <typename Write>
void write_csv(const std::filesystem::path& path, Write write) {
  std::ofstream os(path);
  TORCH_CHECK(os, "cannot write ", path.string());
  write(os);
  TORCH_CHECK(os.good(), "error writing ", path.string());
}

// counterexample.csv (the first csv_seeds seeds; -1 = all) and counterexample_summary.csv into dir.
void write_csv_files(const CounterexampleResult& result, const std::filesystem::path& dir, int64_t csv_seeds) {
  const auto csv = dir / "counterexample.csv";
  write_csv(csv, [&](std::ostream& os) { counterexample::write_counterexample_csv(result, os, csv_seeds); });
  const auto summary = dir / "counterexample_summary.csv";
  write_csv(summary, [&](std::ostream& os) { counterexample::write_counterexample_summary_csv(result, os); });
  const int64_t seeds = result.options.seeds();
  std::cout << "wrote " << csv.string()
            << (csv_seeds >= 0 && csv_seeds < seeds
                    ? " (first " + std::to_string(csv_seeds) + " of " + std::to_string(seeds) +
                          " seeds; --csv-seeds to change)"
                    : std::string())
            << "\nwrote " << summary.string() << "\n";
}

// counterexample.png; without gnuplot a warning instead (the CSV files carry the numbers).
void plot_if_possible(const CounterexampleResult& result, const std::filesystem::path& png) {
  if (report::find_gnuplot().empty()) {
    std::cerr << "lowrank counterexample: gnuplot not found, so no plot was drawn (install the Debian package "
                 "gnuplot-nox); the CSV files were written\n";
    return;
  }
  counterexample::plot_counterexample(result, png.string());
  std::cout << "wrote " << png.string() << "\n";
}

int run(const CounterexampleFlags& f, CLI::App* sub) {
  const CounterexampleOptions o = resolve_options(f, sub);
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
  write_csv_files(result, dir, csv_seeds);
  if (f.plot) plot_if_possible(result, dir / "counterexample.png");
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
  sub->add_option("--basis", f->basis, "aligned (PowerSGD's stall is exact) or paper (docs/algorithms.md §7.4)")
      ->capture_default_str();
  sub->add_option("--methods", o.methods(), "Compressors, comma-separated: " + join(compressor_names()))
      ->delimiter(',')
      ->default_str(join(o.methods(), ","));
  for (const auto opt : o.optimizers()) f->optimizers.push_back(to_string(opt));
  sub->add_option("--optimizers", f->optimizers,
                  "Optimizers, comma-separated: " + choice_list(counterexample::kCounterexampleOptimizers))
      ->delimiter(',')
      ->default_str(join(f->optimizers, ","));
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
