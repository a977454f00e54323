#include "lowrank/report/plot.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "lowrank/report/bandwidth_model.h"
#include "lowrank/report/gnuplot.h"
#include "lowrank/util/files.h"

namespace lowrank {
namespace report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

std::vector<std::string> split_cells(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream ls(line);
  while (std::getline(ls, cell, ',')) out.push_back(trim(cell));
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

bool is_missing(const std::string& cell) {
  if (cell.empty()) return true;
  std::string l = cell;
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
  return l == "nan" || l == "-nan";
}

std::string num(double x) {
  std::ostringstream os;
  os.precision(10);
  os << x;
  return os.str();
}

// The script's first lines: the PNG terminal (pngcairo where this gnuplot has it, else png).
std::string preamble(const std::string& png, int width = 900, int height = 560) {
  std::ostringstream gp;
  const std::string size = std::to_string(width) + "," + std::to_string(height);
  gp << "# written by lowrank (src/report/plot.cpp); redraw with: gnuplot <this file>\n"
     << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
     << "  set terminal pngcairo size " << size << " noenhanced font 'sans,10'\n"
     << "} else {\n"
     << "  set terminal png size " << size << " noenhanced\n"
     << "}\n"
     << "set output " << gnuplot_quote(png) << "\n"
     << "set grid\nset key outside right top\n";
  // Twelve distinguishable line types (gnuplot's default cycle repeats its colours after eight, so a
  // ninth run would look like the first): the tab10 colours, then black and two dashed ones.
  static const char* colours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#1f77b4"};
  for (int i = 0; i < 12; ++i)
    gp << "set linetype " << i + 1 << " lc rgb '" << colours[i] << "' dashtype " << (i < 11 ? 1 : 2) << "\n";
  gp << "set linetype cycle 12\n";
  return gp.str();
}

// Draws `png` from <png minus .png>.dat and .gp, both kept; @DATA@ in the script names the .dat.
std::string draw(const std::string& png, const std::string& data, const std::string& script_body) {
  fs::path stem(png);
  stem.replace_extension();
  GnuplotFigure f;
  f.png = png;
  f.data_path = stem.string() + ".dat";
  f.data = data;
  f.script_path = stem.string() + ".gp";
  f.script = script_body;
  for (size_t at; (at = f.script.find("@DATA@")) != std::string::npos;) f.script.replace(at, 6, gnuplot_quote(f.data_path));
  return draw_figure(f);
}

// Labels of run directories: base names, or the paths as given when two base names clash.
std::vector<std::string> labels_of(const std::vector<std::string>& dirs) {
  std::vector<std::string> out;
  std::map<std::string, int> count;
  for (const auto& d : dirs) count[run_label(d)] += 1;
  for (const auto& d : dirs) out.push_back(count[run_label(d)] > 1 ? d : run_label(d));
  return out;
}

struct Series {
  std::string title;
  std::vector<std::pair<double, double>> points;
};

// One data block per series (gnuplot's `index`), with the x and y of every row having both.
std::string blocks(const std::vector<Series>& series) {
  std::ostringstream os;
  for (size_t i = 0; i < series.size(); ++i) {
    os << "# " << i << ": " << series[i].title << "\n";
    for (const auto& xy : series[i].points) os << num(xy.first) << " " << num(xy.second) << "\n";
    os << "\n\n";
  }
  return os.str();
}

Series series_of(const std::string& title, const std::vector<double>& x, const std::vector<double>& y,
                 double x_scale = 1.0, bool positive_x = false) {
  Series s;
  s.title = title;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) continue;
    if (positive_x && !(x[i] > 0)) continue;
    s.points.emplace_back(x[i] * x_scale, y[i]);
  }
  return s;
}

std::string plot_series(const std::vector<Series>& series, const std::string& style) {
  std::ostringstream os;
  os << "plot ";
  bool first = true;
  for (size_t i = 0; i < series.size(); ++i) {
    if (series[i].points.empty()) continue;
    os << (first ? "" : ", \\\n     ") << "@DATA@ index " << i << " using 1:2 with " << style << " title "
       << gnuplot_quote(series[i].title);
    first = false;
  }
  return os.str() + "\n";
}

bool any_points(const std::vector<Series>& series) {
  return std::any_of(series.begin(), series.end(), [](const Series& s) { return !s.points.empty(); });
}

}  // namespace

// ---------------------------------------------------------------------------------------- CSV

CsvTable CsvTable::read(const std::string& path) {
  std::ifstream f(path);
  TORCH_CHECK(f.good(), "cannot read ", path, ": ", std::strerror(errno));
  CsvTable t;
  t.path_ = path;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(f, line)) {
    ++line_no;
    if (trim(line).empty()) continue;
    auto cells = split_cells(line);
    if (t.header_.empty()) {
      t.header_ = cells;
      std::set<std::string> seen;
      for (const auto& h : t.header_) {
        TORCH_CHECK(!h.empty(), path, " line ", line_no, ": the header has an empty column name (garbled file?)");
        TORCH_CHECK(seen.insert(h).second, path, " line ", line_no, ": column '", h, "' appears twice in the header");
      }
      continue;
    }
    TORCH_CHECK(cells.size() == t.header_.size(), path, " line ", line_no, ": ", cells.size(), " cells, but the header has ",
                t.header_.size(), " columns (garbled or truncated file?)");
    t.rows_.push_back(std::move(cells));
  }
  TORCH_CHECK(!t.header_.empty(), path, " is empty: no header line");
  return t;
}

bool CsvTable::has(const std::string& column) const {
  return std::find(header_.begin(), header_.end(), column) != header_.end();
}

bool CsvTable::has_values(const std::string& column) const {
  if (!has(column)) return false;
  for (double v : this->column(column))
    if (std::isfinite(v)) return true;
  return false;
}

std::vector<double> CsvTable::column(const std::string& name) const {
  const auto it = std::find(header_.begin(), header_.end(), name);
  if (it == header_.end()) {
    std::ostringstream h;
    for (size_t i = 0; i < header_.size(); ++i) h << (i ? "," : "") << header_[i];
    TORCH_CHECK(false, path_, " has no column '", name, "' (its header: ", h.str(), ")");
  }
  const size_t c = static_cast<size_t>(it - header_.begin());
  std::vector<double> out;
  out.reserve(rows_.size());
  for (size_t r = 0; r < rows_.size(); ++r) {
    const std::string& cell = rows_[r][c];
    if (is_missing(cell)) {
      out.push_back(kNaN);
      continue;
    }
    char* end = nullptr;
    const double v = std::strtod(cell.c_str(), &end);
    TORCH_CHECK(end && *end == '\0', path_, ": column '", name, "' of data row ", r + 1, " is '", cell,
                "', not a number (garbled file?)");
    out.push_back(v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------- runs

std::string metrics_csv_path(const std::string& run_dir) {
  const fs::path d(run_dir);
  if (fs::exists(d / "metrics.csv")) return (d / "metrics.csv").string();
  if (fs::exists(d / "metrics.csv.partial")) return (d / "metrics.csv.partial").string();
  TORCH_CHECK(fs::is_directory(d), "run directory ", run_dir, " does not exist");
  TORCH_CHECK(false, "no metrics.csv (nor metrics.csv.partial) in ", run_dir,
              " (is it a directory written by `lowrank train --out`?)");
}

std::string run_label(const std::string& run_dir) {
  std::string s = run_dir;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  const std::string base = fs::path(s).filename().string();
  return base.empty() || base == "." ? fs::absolute(s).lexically_normal().filename().string() : base;
}

namespace {

// summary.json as a JSON object; throws naming the file when it is missing or not one.
json read_summary_json(const std::string& run_dir, const std::string& path) {
  TORCH_CHECK(fs::exists(path), "no summary.json in ", run_dir,
              " (a run writes it only when it finishes; is it a directory written by `lowrank train --out`?)");
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    TORCH_CHECK(false, path, " is not valid JSON (garbled or truncated file?): ", e.what());
  }
  TORCH_CHECK(j.is_object(), path, " is not a JSON object");
  return j;
}

// The fields of one JSON object, read with errors that name its file.
struct JsonFields {
  const json& j;
  const std::string& path;

  bool has_number(const char* key) const { return j.contains(key) && j.at(key).is_number(); }
  double number(const char* key) const {
    TORCH_CHECK(has_number(key), path, " has no number '", key, "'");
    return j.at(key).get<double>();
  }
  double optional(const char* key) const { return has_number(key) ? j.at(key).get<double>() : 0.0; }
  int64_t optional_int(const char* key, int64_t absent = 0) const {
    return has_number(key) ? j.at(key).get<int64_t>() : absent;
  }
  std::string text(const char* key) const {
    return j.contains(key) && j.at(key).is_string() ? j.at(key).get<std::string>() : "";
  }
};

// config.compressor_options other than rank, "k=v k=v" in the JSON object's (sorted) key order.
std::string compressor_options_of(const json& j) {
  if (!j.contains("config") || !j.at("config").is_object()) return "";
  const json& config = j.at("config");
  if (!config.contains("compressor_options") || !config.at("compressor_options").is_object()) return "";
  std::string o;
  for (const auto& kv : config.at("compressor_options").items()) {
    if (kv.key() == "rank") continue;
    o += (o.empty() ? "" : " ") + kv.key() + "=" +
         (kv.value().is_string() ? kv.value().get<std::string>() : kv.value().dump());
  }
  return o;
}

// val_perplexity (lower is better) when it has a value, else test_accuracy. A run without a
// validation set may write val_perplexity as NaN or null: then it counts as absent.
void read_metric(const JsonFields& f, RunSummary& s) {
  if (f.has_number("val_perplexity") && std::isfinite(f.number("val_perplexity"))) {
    s.metric = "val_perplexity";
    s.metric_value = f.number("val_perplexity");
    s.lower_is_better = true;
    return;
  }
  TORCH_CHECK(f.has_number("test_accuracy"), f.path, " has neither 'val_perplexity' nor 'test_accuracy'");
  s.metric = "test_accuracy";
  s.metric_value = f.number("test_accuracy");
}

// summary.json's "per_step" object (absent in summaries of older versions: the fields stay NaN).
void read_per_step(const json& j, const std::string& path, RunSummary& s) {
  if (!j.contains("per_step") || !j.at("per_step").is_object()) return;
  const JsonFields f{j.at("per_step"), path};
  for (auto [key, field] : {std::pair{"all_reduce_bytes", &RunSummary::all_reduce_bytes_per_step},
                            {"all_gather_bytes", &RunSummary::all_gather_bytes_per_step},
                            {"all_reduces", &RunSummary::all_reduces_per_step},
                            {"all_gathers", &RunSummary::all_gathers_per_step},
                            {"dense_bytes", &RunSummary::dense_bytes_per_step},
                            {"buckets", &RunSummary::buckets_per_step}})
    s.*field = f.number(key);
}

}  // namespace

RunSummary read_run_summary(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "summary.json").string();
  const json j = read_summary_json(run_dir, path);
  const JsonFields f{j, path};
  RunSummary s;
  s.dir = run_dir;
  s.label = run_label(run_dir);
  TORCH_CHECK(j.contains("compressor") && j.at("compressor").is_string(), path, " has no string 'compressor'");
  s.compressor = f.text("compressor");
  s.rank_auto = j.contains("rank") && j.at("rank").is_string() && j.at("rank").get<std::string>() == "auto";
  s.rank = s.rank_auto ? -1 : f.optional_int("rank", -1);
  s.compressor_options = compressor_options_of(j);
  s.model = f.text("model");
  s.dataset = f.text("dataset");
  read_metric(f, s);
  s.final_train_loss = f.number("final_train_loss");
  s.compression_ratio = f.number("compression_ratio");
  for (auto [key, field] : {std::pair{"world_size", &RunSummary::world_size}, {"steps", &RunSummary::steps},
                            {"bytes_sent_per_worker", &RunSummary::bytes_sent_per_worker}})
    s.*field = f.optional_int(key);
  for (auto [key, field] : {std::pair{"wall_seconds", &RunSummary::wall_seconds},
                            {"floats_sent_per_worker", &RunSummary::floats_sent_per_worker},
                            {"dense_floats_per_worker", &RunSummary::dense_floats_per_worker},
                            {"step_ms_median", &RunSummary::step_ms_median},
                            {"forward_backward_ms", &RunSummary::forward_backward_ms},
                            {"communicate_ms", &RunSummary::communicate_ms}, {"compress_ms", &RunSummary::compress_ms},
                            {"collective_ms", &RunSummary::collective_ms}, {"optimizer_ms", &RunSummary::optimizer_ms}})
    s.*field = f.optional(key);
  read_per_step(j, path, s);
  return s;
}

bool RunSummary::has_per_step() const {
  for (double v : {all_reduce_bytes_per_step, all_gather_bytes_per_step, all_reduces_per_step, all_gathers_per_step,
                   dense_bytes_per_step, buckets_per_step})
    if (!std::isfinite(v)) return false;
  return world_size >= 1;
}

// ---------------------------------------------------------------------------------------- plots

std::string plot_run_loss(const std::string& run_dir, const std::string& png_in) {
  const std::string png = png_in.empty() ? (fs::path(run_dir) / "loss.png").string() : png_in;
  const CsvTable t = CsvTable::read(metrics_csv_path(run_dir));
  const auto step = t.column("step");
  std::vector<Series> series{series_of("train_loss", step, t.column("train_loss"))};
  TORCH_CHECK(any_points(series), t.path(), " has no train_loss values to plot");
  std::ostringstream gp;
  gp << preamble(png) << "set key inside top right box opaque\nset title " << gnuplot_quote(run_label(run_dir) + ": loss") << "\n"
     << "set xlabel 'step'\nset ylabel 'loss (nats)'\n";
  std::string plot = "plot @DATA@ index 0 using 1:2 with lines lw 2 title 'train_loss'";
  if (t.has_values("val_loss")) {
    series.push_back(series_of("val_loss", step, t.column("val_loss")));
    plot += ", \\\n     @DATA@ index 1 using 1:2 with linespoints lw 2 pt 7 title 'val_loss'";
  } else if (t.has_values("test_accuracy")) {
    series.push_back(series_of("test_accuracy", step, t.column("test_accuracy")));
    gp << "set y2label 'test accuracy'\nset y2tics\nset ytics nomirror\n";
    plot += ", \\\n     @DATA@ index 1 using 1:2 axes x1y2 with linespoints lw 2 pt 7 title 'test_accuracy (right axis)'";
  }
  gp << plot << "\n";
  return draw(png, blocks(series), gp.str());
}

std::string plot_loss_vs_step(const std::vector<std::string>& run_dirs, const std::string& png) {
  TORCH_CHECK(!run_dirs.empty(), "plot_loss_vs_step: no run directories");
  const auto labels = labels_of(run_dirs);
  std::vector<Series> series;
  for (size_t i = 0; i < run_dirs.size(); ++i) {
    const CsvTable t = CsvTable::read(metrics_csv_path(run_dirs[i]));
    series.push_back(series_of(labels[i], t.column("step"), t.column("train_loss")));
  }
  TORCH_CHECK(any_points(series), "no train_loss values to plot in the runs' metrics.csv");
  std::ostringstream gp;
  gp << preamble(png) << "set title 'train loss vs step'\nset xlabel 'step'\nset ylabel 'train loss (nats)'\n"
     << plot_series(series, "lines lw 2");
  return draw(png, blocks(series), gp.str());
}

std::string plot_loss_vs_bytes(const std::vector<std::string>& run_dirs, const std::string& png) {
  TORCH_CHECK(!run_dirs.empty(), "plot_loss_vs_bytes: no run directories");
  const auto labels = labels_of(run_dirs);
  std::vector<Series> series;
  std::string silent;
  for (size_t i = 0; i < run_dirs.size(); ++i) {
    const CsvTable t = CsvTable::read(metrics_csv_path(run_dirs[i]));
    series.push_back(series_of(labels[i], t.column("bytes_sent"), t.column("train_loss"), 1e-6, true));
    if (series.back().points.empty()) silent += (silent.empty() ? "" : ", ") + labels[i];
  }
  TORCH_CHECK(any_points(series), "no run sent any bytes (or none has train_loss values): nothing to plot against "
              "bytes sent");
  std::ostringstream gp;
  gp << preamble(png) << "set title "
     << gnuplot_quote("train loss vs data sent per worker" + (silent.empty() ? "" : " (not shown, nothing sent: " + silent + ")"))
     << "\nset logscale x\nset xlabel 'MB sent per worker (log scale)'\nset ylabel 'train loss (nats)'\n"
     << plot_series(series, "lines lw 2");
  return draw(png, blocks(series), gp.str());
}

std::string plot_metric_vs_ratio(const std::vector<std::string>& run_dirs, const std::string& png) {
  TORCH_CHECK(!run_dirs.empty(), "plot_metric_vs_ratio: no run directories");
  const auto labels = labels_of(run_dirs);
  std::vector<RunSummary> runs;
  for (const auto& d : run_dirs) runs.push_back(read_run_summary(d));
  for (const auto& r : runs)
    TORCH_CHECK(r.metric == runs.front().metric, "runs report different final metrics (", runs.front().label, ": ",
                runs.front().metric, ", ", r.label, ": ", r.metric, "); plot them separately");
  const bool log_x = std::all_of(runs.begin(), runs.end(), [](const RunSummary& r) { return r.compression_ratio > 0; });
  std::ostringstream data;
  data << "# compression_ratio " << runs.front().metric << " label\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    std::string l = labels[i];
    std::replace(l.begin(), l.end(), '"', '\'');
    data << num(runs[i].compression_ratio) << " " << num(runs[i].metric_value) << " \"" << l << "\"\n";
  }
  const std::string ylabel =
      runs.front().lower_is_better ? "final " + runs.front().metric + " (lower is better)" : "final " + runs.front().metric + " (higher is better)";
  std::ostringstream gp;
  gp << preamble(png) << "set title " << gnuplot_quote(ylabel + " vs compression ratio") << "\n"
     << (log_x ? "set logscale x\nset xlabel 'compression ratio (dense / sent, log scale)'\n"
               : "set xlabel 'compression ratio (dense / sent; 0 = nothing sent)'\n")
     << "set ylabel " << gnuplot_quote(ylabel) << "\nset offsets graph 0.1, graph 0.1, graph 0.1, graph 0.1\nset key off\n"
     << "plot @DATA@ using 1:2 with points pt 7 ps 1.5, @DATA@ using 1:2:3 with labels offset char 1,char 1 left\n";
  return draw(png, data.str(), gp.str());
}

std::string plot_step_time_vs_bandwidth(const std::vector<std::string>& run_dirs, const std::string& png,
                                        double latency_s, bool overlap, bool shared) {
  TORCH_CHECK(!run_dirs.empty(), "plot_step_time_vs_bandwidth: no run directories");
  const auto labels = labels_of(run_dirs);
  std::vector<Series> series;
  std::string left_out;
  const RunSummary* dense_source = nullptr;
  std::vector<RunSummary> runs;
  for (const auto& d : run_dirs) runs.push_back(read_run_summary(d));
  bool has_none = false;
  constexpr int kPoints = 61;  // 1 Mbit/s to 100 Gbit/s, 12 per decade
  const auto curve = [&](const std::string& title, const StepProfile& p) {
    Series s;
    s.title = title;
    for (int i = 0; i < kPoints; ++i) {
      const double bits = std::pow(10.0, 6.0 + 5.0 * i / (kPoints - 1));
      s.points.emplace_back(bits / 1e6, predicted_step_ms(p, Link{bits, latency_s, shared}, overlap));
    }
    return s;
  };
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!runs[i].has_per_step()) {
      left_out += (left_out.empty() ? "" : ", ") + labels[i];
      continue;
    }
    if (!runs[i].has_bandwidth_curve()) continue;  // noop
    has_none = has_none || runs[i].compressor == "none";
    if (!dense_source) dense_source = &runs[i];
    StepProfile p = step_profile_of(runs[i]);
    series.push_back(curve(labels[i], p));
  }
  TORCH_CHECK(!series.empty(), "none of the runs has per-step traffic in its summary.json (written by an older "
              "lowrank?) and communicates (noop sends nothing), so no step time can be predicted: ", left_out);
  if (!has_none) {  // the dense all-reduce the first run stands for
    const StepProfile p = step_profile_of(*dense_source);
    series.push_back(curve("dense all-reduce (" + dense_source->label + "'s compute)",
                           dense_profile_of(p, dense_source->dense_bytes_per_step, dense_source->buckets_per_step)));
  }
  char latency[64];
  std::snprintf(latency, sizeof latency, "%g ms", latency_s * 1e3);
  std::ostringstream gp;
  gp << preamble(png) << "set title "
     << gnuplot_quote(std::string("predicted step time vs link bandwidth (latency ") + latency +
                      (overlap ? ", communication overlapped with backward" : ", no overlap") +
                      (shared ? ", one link shared by all workers" : "") + ")" +
                      (left_out.empty() ? "" : "; not shown, no per-step traffic: " + left_out))
     << "\nset logscale x\nset logscale y\nset xlabel 'link bandwidth (Mbit/s, log scale)'\n"
     << "set ylabel 'predicted step time (ms, log scale)'\nset key outside right\n"
     << plot_series(series, "lines lw 2");
  return draw(png, blocks(series), gp.str());
}

ComparisonPlots plot_comparison(const std::vector<std::string>& run_dirs, const std::string& out_dir) {
  fs::create_directories(out_dir);
  const fs::path o(out_dir);
  ComparisonPlots p;
  p.loss_vs_step = plot_loss_vs_step(run_dirs, (o / "loss_vs_step.png").string());
  p.loss_vs_bytes = plot_loss_vs_bytes(run_dirs, (o / "loss_vs_bytes.png").string());
  p.metric_vs_ratio = plot_metric_vs_ratio(run_dirs, (o / "metric_vs_ratio.png").string());
  return p;
}

}  // namespace report
}  // namespace lowrank
