// `lowrank plot RUN_DIR... [--out DIR]`: PNGs of finished (or running) `lowrank train` runs, drawn
// by gnuplot through report/plot.h.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "number_flags.h"
#include "lowrank/report/plot.h"

namespace lowrank {
namespace cli {
namespace {

struct PlotFlags {
  std::vector<std::string> runs;
  std::string out;
  bool loss = true;
  bool bandwidth = true;
  bool shared_link = false;
  double latency_ms = 0.1;
};

// Where the comparison plots go without --out: the run directory itself for one run, else the
// parent of the first run directory (runs/a runs/b -> runs/; `lowrank compare`'s OUT).
std::string default_out(const std::vector<std::string>& runs) {
  if (runs.size() == 1) return runs.front();
  std::string first = runs.front();
  while (first.size() > 1 && first.back() == '/') first.pop_back();
  const auto parent = std::filesystem::path(first).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace

Command add_plot_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "plot",
      "Draw PNGs of `lowrank train --out` runs with gnuplot: loss vs step, loss vs bytes sent and final metric vs "
      "compression ratio of all runs together, and with one run also its loss curve (RUN_DIR/loss.png)");
  auto f = std::make_shared<PlotFlags>();
  sub->add_option("runs", f->runs,
                  "Run directories written by `lowrank train --out` (metrics.csv or metrics.csv.partial; the ratio "
                  "plot also needs summary.json)")
      ->required()
      ->type_name("RUN_DIR");
  sub->add_option("--out", f->out,
                  "Directory for loss_vs_step.png, loss_vs_bytes.png, metric_vs_ratio.png (and their .gp/.dat); "
                  "created if missing")
      ->type_name("DIR")
      ->default_str("RUN_DIR with one run, else the parent directory of the first RUN_DIR");
  sub->add_flag("--bandwidth,!--no-bandwidth", f->bandwidth,
                "Also draw step_time_vs_bandwidth.png: each run's predicted step time against link bandwidth "
                "(docs/reports.md, \"Predicted step time by link\"; runs whose summary.json has per-step traffic; "
                "default on)");
  add_real(sub, "--latency-ms", f->latency_ms, "Link latency per message hop for that plot (ms, >= 0)",
           non_negative(1e6))
      ->capture_default_str();
  sub->add_flag("--shared-link", f->shared_link, "Predict for one link shared by all workers (docs/reports.md)");
  sub->add_flag("--loss,!--no-loss", f->loss,
                "With one RUN_DIR, also draw its loss curve into RUN_DIR/loss.png (default on)");
  return {sub, [f] {
            const std::string out = f->out.empty() ? default_out(f->runs) : f->out;
            if (f->runs.size() == 1 && f->loss) {
              const std::string png = report::plot_run_loss(f->runs.front());  // before "wrote": it may throw
              std::cout << "wrote " << png << "\n";
            }
            const auto p = report::plot_comparison(f->runs, out);
            std::cout << "wrote " << p.loss_vs_step << "\nwrote " << p.loss_vs_bytes << "\nwrote " << p.metric_vs_ratio
                      << "\n";
            if (f->bandwidth) {
              // Runs from older versions (no per-step traffic) are named in the plot's title.
              if (std::any_of(f->runs.begin(), f->runs.end(),
                              [](const std::string& r) { return report::read_run_summary(r).has_bandwidth_curve(); }))
                std::cout << "wrote "
                          << report::plot_step_time_vs_bandwidth(
                                 f->runs, (std::filesystem::path(out) / "step_time_vs_bandwidth.png").string(),
                                 f->latency_ms / 1e3, false, f->shared_link)
                          << "\n";
            }
            return 0;
          }};
}

}  // namespace cli
}  // namespace lowrank
