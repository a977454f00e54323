#pragma once
// Plots of `lowrank train` runs (docs/reports.md): PNGs drawn by gnuplot (Debian package
// gnuplot-nox) from a generated script and data file, both kept next to the PNG (<name>.gp,
// <name>.dat) so that a figure can be restyled by hand and redrawn with `gnuplot <name>.gp`.
//
// Inputs are read by column or field NAME, never by position, so that columns added later
// (val_loss, val_perplexity, ...) change nothing: metrics.csv (or metrics.csv.partial of a run
// that did not finish) and summary.json of each run directory (docs/outputs.md). An empty cell,
// "nan" or a JSON null means "no value". A missing or garbled file, or a missing column, throws a
// c10::Error naming the file. A missing or failing gnuplot throws naming gnuplot, the package
// gnuplot-nox, and gnuplot's stderr (report/gnuplot.h runs it).
//
//   report::plot_run_loss("runs/psgd");                         // runs/psgd/loss.png
//   report::plot_comparison({"runs/none", "runs/psgd"}, "runs"); // three PNGs into runs/
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace lowrank {
namespace report {

/// A CSV file with a header line, read by column name.
class CsvTable {
 public:
  /// Reads `path`. Throws naming the file when it cannot be read, is empty, or has a row whose
  /// number of cells differs from the header's (naming the line).
  static CsvTable read(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::string>& header() const { return header_; }
  size_t rows() const { return rows_.size(); }
  bool has(const std::string& column) const;
  /// Whether the column exists and has at least one value.
  bool has_values(const std::string& column) const;
  /// The column as numbers, one per row: NaN for an empty cell or "nan". Throws naming the file
  /// when the column is missing (listing the header) or a cell is not a number (naming the line).
  std::vector<double> column(const std::string& name) const;

 private:
  std::string path_;
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// RUN_DIR/metrics.csv, else RUN_DIR/metrics.csv.partial (a run that has not finished); throws
/// naming RUN_DIR when neither exists.
std::string metrics_csv_path(const std::string& run_dir);

/// What the reports need from RUN_DIR/summary.json.
struct RunSummary {
  std::string dir;
  std::string label;               ///< the directory's base name
  std::string compressor;
  int64_t rank = -1;               ///< -1 when summary.json's rank is null (none, noop) or "auto"
  bool rank_auto = false;          ///< summary.json's rank is "auto" (rank=auto)
  std::string compressor_options;  ///< config.compressor_options other than rank, "k=v k=v" (sorted)
  std::string model, dataset;
  int64_t world_size = 0, steps = 0;
  /// "val_perplexity" when summary.json has a value for it (lower is better), else "test_accuracy".
  std::string metric;
  double metric_value = 0;
  bool lower_is_better = false;
  double final_train_loss = 0;
  int64_t bytes_sent_per_worker = 0;
  double floats_sent_per_worker = 0, dense_floats_per_worker = 0;  ///< bytes / 4
  double compression_ratio = 0;
  double wall_seconds = 0;
  double step_ms_median = 0, forward_backward_ms = 0, communicate_ms = 0, compress_ms = 0, collective_ms = 0,
         optimizer_ms = 0;
  /// Per-step means over the steps this run's process made (summary.json "per_step"); NaN when the
  /// summary predates them. What the bandwidth model (report/bandwidth_model.h) needs.
  double all_reduce_bytes_per_step = kNoValue, all_gather_bytes_per_step = kNoValue, all_reduces_per_step = kNoValue,
         all_gathers_per_step = kNoValue, dense_bytes_per_step = kNoValue, buckets_per_step = kNoValue;
  static constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();
  bool has_per_step() const;
  /// Whether the bandwidth model draws a curve for this run: it has per-step traffic and
  /// communicates (noop sends nothing: its step time does not depend on the link).
  bool has_bandwidth_curve() const { return has_per_step() && compressor != "noop"; }
};

/// Reads RUN_DIR/summary.json; throws naming the file when it is missing, not JSON, or lacks a
/// needed field (compressor, compression_ratio, final_train_loss, and val_perplexity or
/// test_accuracy).
RunSummary read_run_summary(const std::string& run_dir);

/// The label of a run directory in plots and tables: its base name ("runs/psgd/" -> "psgd").
std::string run_label(const std::string& run_dir);

/// (a) One run's loss curve: train_loss vs step from RUN_DIR's metrics.csv and, when present, the
/// validation curve: val_loss (same axis) when the header has that column with values, else
/// test_accuracy on a second axis. Writes `png` (default RUN_DIR/loss.png); returns its path.
std::string plot_run_loss(const std::string& run_dir, const std::string& png = "");

/// (b) Several runs together, one curve per run, labelled by run_label():
/// train_loss vs step.
std::string plot_loss_vs_step(const std::vector<std::string>& run_dirs, const std::string& png);
/// train_loss vs MB sent per worker (column bytes_sent; log scale). A run that sent nothing (noop)
/// has no curve and is named in the title.
std::string plot_loss_vs_bytes(const std::vector<std::string>& run_dirs, const std::string& png);
/// Final metric vs compression ratio, one labelled point per run, from summary.json: val_perplexity
/// ("lower is better") when the runs have it, else test_accuracy. Throws naming the runs when some
/// report val_perplexity and others do not.
std::string plot_metric_vs_ratio(const std::vector<std::string>& run_dirs, const std::string& png);

/// Predicted step time against link bandwidth (log x and y, 1 Mbit/s to 100 Gbit/s) at latency
/// `latency_s`, one curve per run with has_bandwidth_curve() from the bandwidth model
/// (report/bandwidth_model.h), plus the first such run's dense profile when no run is `none`. Runs
/// whose summary.json lacks the per-step fields are left out and named in the title; throws when no
/// run has a curve.
std::string plot_step_time_vs_bandwidth(const std::vector<std::string>& run_dirs, const std::string& png,
                                        double latency_s, bool overlap, bool shared = false);

struct ComparisonPlots {
  std::string loss_vs_step, loss_vs_bytes, metric_vs_ratio;  ///< the PNGs' paths
};
/// The three plots of (b) into OUT_DIR/loss_vs_step.png, loss_vs_bytes.png, metric_vs_ratio.png
/// (OUT_DIR is created).
ComparisonPlots plot_comparison(const std::vector<std::string>& run_dirs, const std::string& out_dir);

}  // namespace report
}  // namespace lowrank
