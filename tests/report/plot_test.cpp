// report/plot.h: gnuplot PNGs from synthetic metrics.csv / summary.json, read by column name; clear
// errors for missing or garbled inputs (a missing or failing gnuplot: gnuplot_test.cpp).
#include "lowrank/report/plot.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::TempDir;
using testing::error_of;

const char* kHeader =
    "step,epoch,train_loss,lr,step_ms,floats_sent,bytes_sent,dense_floats,compression_ratio,relative_error,ef_norm,"
    "test_accuracy,elapsed_s,skipped_steps";

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

// A metrics.csv of `rows` rows in the current layout: loss 2/(1+step/10), accuracy at the end.
std::string metrics_csv(int rows, int64_t floats_per_step) {
  std::string s = std::string(kHeader) + "\n";
  for (int i = 1; i <= rows; ++i) {
    const int step = 10 * i;
    const int64_t floats = floats_per_step * step;
    s += std::to_string(step) + ",1," + std::to_string(2.0 / (1 + step / 10.0)) + ",0.05,40.0," + std::to_string(floats) +
         "," + std::to_string(4 * floats) + "," + std::to_string(215370LL * step) + ",22.8,0.7,1.3," +
         (i == rows ? "0.81" : "") + ",1.0,0\n";
  }
  return s;
}

std::string summary_json(const std::string& compressor, double ratio, double accuracy, const std::string& extra = "") {
  return "{\"compressor\": \"" + compressor + "\", \"rank\": " + (compressor == "none" ? "null" : "4") +
         ", \"compression_ratio\": " + std::to_string(ratio) + ", \"final_train_loss\": 0.4, \"test_accuracy\": " +
         std::to_string(accuracy) +
         ", \"bytes_sent_per_worker\": 1000, \"floats_sent_per_worker\": 250, \"wall_seconds\": 3.5, "
         "\"step_ms_median\": 40.0, \"forward_backward_ms\": 30.0, \"communicate_ms\": 3.0, \"compress_ms\": 4.0, "
         "\"collective_ms\": 1.0, \"optimizer_ms\": 2.0, \"config\": {\"compressor_options\": {\"rank\": \"4\", "
         "\"warm_start\": \"false\"}}" + extra + "}";
}

// A PNG: the 8-byte signature, and more than a header's worth of bytes.
void expect_png(const std::string& path) {
  ASSERT_TRUE(testing::file_exists(path)) << path;
  const std::string bytes = testing::read_text(path);
  ASSERT_GT(bytes.size(), 1000u) << path;
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
}

bool have_gnuplot() { return testing::run_command("command -v gnuplot").exit_code == 0; }
#define REQUIRE_GNUPLOT() \
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot (Debian package gnuplot-nox) is not installed"

TEST(Plot, RunLossWritesAPngFromASyntheticMetricsCsv) {
  REQUIRE_GNUPLOT();
  TempDir dir("plot");
  write(dir / "metrics.csv", metrics_csv(20, 9414));
  EXPECT_EQ(report::plot_run_loss(dir.path()), dir / "loss.png");
  expect_png(dir / "loss.png");
  EXPECT_TRUE(testing::file_exists(dir / "loss.gp"));
  EXPECT_TRUE(testing::file_exists(dir / "loss.dat"));
  EXPECT_NE(testing::read_text(dir / "loss.gp").find("test_accuracy"), std::string::npos);  // second axis
}

TEST(Plot, ColumnsAreReadByNameAndValLossIsPreferred) {
  REQUIRE_GNUPLOT();
  TempDir dir("plot");
  // Columns reordered, val_loss/val_perplexity appended, empty and "nan" cells.
  write(dir / "metrics.csv",
        "train_loss,step,bytes_sent,test_accuracy,val_loss,val_perplexity\n"
        "2.0,10,400,,,\n1.5,20,800,,1.7,5.47\nnan,30,1200,,,\n1.0,40,1600,0.5,1.2,3.32\n");
  const auto t = report::CsvTable::read(dir / "metrics.csv");
  const auto loss = t.column("train_loss");
  ASSERT_EQ(loss.size(), 4u);
  EXPECT_DOUBLE_EQ(loss[0], 2.0);
  EXPECT_TRUE(std::isnan(loss[2]));
  EXPECT_DOUBLE_EQ(t.column("step")[3], 40);
  EXPECT_TRUE(t.has_values("val_loss"));
  report::plot_run_loss(dir.path(), dir / "custom.png");
  expect_png(dir / "custom.png");
  const std::string gp = testing::read_text(dir / "custom.gp");
  EXPECT_NE(gp.find("val_loss"), std::string::npos);
  EXPECT_EQ(gp.find("test_accuracy"), std::string::npos);
}

TEST(Plot, RejectsMetricsWithoutTheNeededColumnsNamingTheFile) {
  TempDir dir("plot");
  write(dir / "metrics.csv", "step,epoch,lr\n10,1,0.05\n");
  const std::string e = error_of([&] { report::plot_run_loss(dir.path()); });
  EXPECT_NE(e.find(dir / "metrics.csv"), std::string::npos) << e;
  EXPECT_NE(e.find("train_loss"), std::string::npos) << e;

  write(dir / "metrics.csv", std::string(kHeader) + "\n10,1,2.0\n");  // a truncated row
  const std::string g = error_of([&] { report::plot_run_loss(dir.path()); });
  EXPECT_NE(g.find(dir / "metrics.csv"), std::string::npos) << g;
  EXPECT_NE(g.find("line 2"), std::string::npos) << g;

  write(dir / "metrics.csv", "step,train_loss\n10,abc\n");
  const std::string h = error_of([&] { report::plot_run_loss(dir.path()); });
  EXPECT_NE(h.find("'abc', not a number"), std::string::npos) << h;

  TempDir empty("plot");
  const std::string m = error_of([&] { report::plot_run_loss(empty.path()); });
  EXPECT_NE(m.find("no metrics.csv"), std::string::npos) << m;
  EXPECT_NE(m.find(empty.path()), std::string::npos) << m;
}

TEST(Plot, SummaryErrorsNameTheFileAndValPerplexityIsTheMetric) {
  TempDir dir("plot");
  EXPECT_NE(error_of([&] { report::read_run_summary(dir.path()); }).find("no summary.json in " + dir.path()),
            std::string::npos);
  write(dir / "summary.json", "{\"compressor\": ");
  const std::string e = error_of([&] { report::read_run_summary(dir.path()); });
  EXPECT_NE(e.find(dir / "summary.json"), std::string::npos) << e;
  write(dir / "summary.json", "{\"compressor\": \"none\"}");
  EXPECT_NE(error_of([&] { report::read_run_summary(dir.path()); }).find("neither 'val_perplexity' nor 'test_accuracy'"),
            std::string::npos);

  write(dir / "summary.json", summary_json("powersgd", 22.8, 0.8));
  auto s = report::read_run_summary(dir.path());
  EXPECT_EQ(s.metric, "test_accuracy");
  EXPECT_DOUBLE_EQ(s.metric_value, 0.8);
  EXPECT_EQ(s.rank, 4);
  EXPECT_EQ(s.compressor_options, "warm_start=false");
  EXPECT_DOUBLE_EQ(s.communicate_ms, 3.0);
  write(dir / "summary.json",
        summary_json("powersgd", 22.8, 0.0, ", \"task\": \"lm\", \"val_loss\": 3.0, \"val_perplexity\": 20.1, \"vocab_size\": 256"));
  s = report::read_run_summary(dir.path());
  EXPECT_EQ(s.metric, "val_perplexity");
  EXPECT_DOUBLE_EQ(s.metric_value, 20.1);
  EXPECT_TRUE(s.lower_is_better);
}

TEST(Plot, ComparisonWritesThreePngs) {
  REQUIRE_GNUPLOT();
  TempDir dir("plot");
  const std::vector<std::string> runs{dir / "none", dir / "powersgd-r4", dir / "noop"};
  const std::vector<int64_t> floats{215370, 9414, 0};
  const std::vector<std::string> compressors{"none", "powersgd", "noop"};
  for (size_t i = 0; i < runs.size(); ++i) {
    ASSERT_EQ(::mkdir(runs[i].c_str(), 0755), 0);
    write(runs[i] + "/metrics.csv", metrics_csv(5, floats[i]));
    write(runs[i] + "/summary.json", summary_json(compressors[i], i == 2 ? 0.0 : 215370.0 / floats[i], 0.8 - 0.01 * i));
  }
  const auto p = report::plot_comparison(runs, dir / "plots");
  expect_png(p.loss_vs_step);
  expect_png(p.loss_vs_bytes);
  expect_png(p.metric_vs_ratio);
  EXPECT_EQ(p.metric_vs_ratio, dir / "plots/metric_vs_ratio.png");
  EXPECT_NE(testing::read_text(dir / "plots/loss_vs_bytes.gp").find("nothing sent: noop"), std::string::npos);
  EXPECT_NE(testing::read_text(dir / "plots/metric_vs_ratio.dat").find("\"powersgd-r4\""), std::string::npos);
}

TEST(Plot, CliPlotsOneRunAndItsLossCurve) {
  REQUIRE_GNUPLOT();
  TempDir dir("plot");
  write(dir / "metrics.csv", metrics_csv(5, 9414));
  write(dir / "summary.json", summary_json("powersgd", 22.8, 0.8));
  const auto r = testing::run_command(testing::lowrank_binary() + " plot " + dir.path());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* f : {"loss.png", "loss_vs_step.png", "loss_vs_bytes.png", "metric_vs_ratio.png"}) expect_png(dir / f);
  const auto bad = testing::run_command(testing::lowrank_binary() + " plot " + (dir / "missing"));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  testing::expect_contains(bad, "lowrank: error: run directory " + (dir / "missing") + " does not exist");
}

}  // namespace
}  // namespace lowrank
