// `lowrank inspect` and `lowrank compare`: real processes of the built binary.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/data/input_spec.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "lowrank/report/plot.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using nlohmann::json;
using testing::CommandResult;
using testing::expect_contains;
using testing::run_command;
using testing::TempDir;

CommandResult lowrank(const std::string& args) {
  return run_command("timeout " + std::to_string(testing::kRunTimeoutSeconds) + " " + testing::lowrank_binary() + " " +
                     args);
}

// The totals `lowrank inspect --json` prints are what a real reducer counts in its first step.
TEST(InspectCli, JsonTotalsEqualTheReducersStatsAfterOneStep) {
  struct Case {
    std::string args, model, compressor;
    Config config;
    ReducerOptions options;
  };
  const std::vector<Case> cases = {
      {"--model cnn --compressor powersgd --rank 4", "cnn", "powersgd", Config{{"rank", "4"}}, ReducerOptions()},
      {"--model mlp --compressor powersgd+ --rank 2 --opt restart_period=5 --uncompressed-names fc2 "
       "--min-compression-rate 3",
       "mlp", "powersgd+", Config{{"rank", "2"}, {"restart_period", "5"}},
       ReducerOptions().uncompressed_names({"fc2"}).min_compression_rate(3)},
      {"--model cnn --compressor none", "cnn", "none", Config{}, ReducerOptions()},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const CommandResult r = lowrank("inspect --json " + c.args);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const json j = json::parse(r.output);

    auto net = models::make_model(c.model, data::input_spec("fashion-mnist"), 0);
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& kv : net->named_parameters()) named.emplace_back(kv.key(), kv.value());
    GradientReducer red(named, make_compressor(c.compressor, c.config),
                        std::shared_ptr<comm::Communicator>(comm::make_local_communicator()), c.options);
    for (auto& p : named) p.second.mutable_grad().normal_();
    ASSERT_TRUE(red.reduce());

    EXPECT_EQ(j.at("bytes_sent_per_step").get<int64_t>(), red.stats().bytes_sent);
    EXPECT_EQ(j.at("dense_bytes_per_step").get<int64_t>(), red.stats().dense_bytes);
    EXPECT_DOUBLE_EQ(j.at("floats_sent_per_step").get<double>(), double(red.stats().bytes_sent) / 4);
    EXPECT_DOUBLE_EQ(j.at("compression_ratio").get<double>(), red.stats().compression_ratio());
    ASSERT_EQ(j.at("parameters").size(), named.size());
    std::vector<std::string> compressed;
    int64_t sum = 0;
    for (const auto& p : j.at("parameters")) {
      if (p.at("compressed").get<bool>()) compressed.push_back(p.at("name").get<std::string>());
      sum += p.at("bytes_per_step").get<int64_t>();
    }
    EXPECT_EQ(sum, red.stats().bytes_sent);
    EXPECT_EQ(compressed, red.compressed_names());
  }
}

TEST(InspectCli, TableNamesEveryReasonAndBadPatternsFail) {
  const CommandResult r = lowrank("inspect --model cnn --compressor powersgd --rank 8 --uncompressed-names fc2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r, "1-D: always dense");
  expect_contains(r, "size rule: 4*m*n = 1600 <= rho*c = 2*1312 bytes");  // conv1: 16 x 25, c = 4 * (16 + 25) * 8
  expect_contains(r, "name matches --uncompressed-names 'fc2'");
  expect_contains(r, "compression ratio");
  const CommandResult bad = lowrank("inspect --model cnn --uncompressed-names fc9");
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  expect_contains(bad, "pattern 'fc9' matches no parameter of model cnn");
}

TEST(InspectCli, NumbersAreCheckedAndLanguageModelFlagsWarnedAbout) {
  const CommandResult huge = lowrank("inspect --step 99999999999999999999");
  EXPECT_NE(huge.exit_code, 0) << huge.output;
  expect_contains(huge, "lowrank: error: --step: must be <= 1000000000, got 99999999999999999999");
  const CommandResult sci = lowrank("inspect --model cnn --step 1e3 --json");  // a whole number written as a real
  ASSERT_EQ(sci.exit_code, 0) << sci.output;
  EXPECT_EQ(json::parse(sci.output).at("step"), 1000);
  const CommandResult ignored = lowrank("inspect --model cnn --preset small --width 64");
  ASSERT_EQ(ignored.exit_code, 0) << ignored.output;
  expect_contains(ignored, "warning: --preset, --width apply to language models (--model llama) only; ignored with "
                           "--model cnn");
}

TEST(BenchCli, BadFlagsFailBeforeTheBenchmarkRuns) {
  const CommandResult empty = lowrank("bench --batch-size 0");
  EXPECT_NE(empty.exit_code, 0) << empty.output;
  expect_contains(empty, "lowrank: error: --batch-size: must be >= 1, got 0");
  TempDir dir("bench");
  const CommandResult json = lowrank("bench --json " + (dir / "no/such/dir/bench.json"));
  EXPECT_EQ(json.exit_code, 1) << json.output;
  expect_contains(json, "bench: cannot write --json " + (dir / "no/such/dir/bench.json") + ": directory " +
                            (dir / "no/such/dir") + " does not exist");
  EXPECT_EQ(json.output.find("floor:"), std::string::npos) << "the benchmark ran:\n" << json.output;
}

TEST(CounterexampleCli, AnEvenWorkerCountIsRefused) {
  TempDir dir("counterexample");
  const CommandResult r = lowrank("counterexample --workers 2 --out " + (dir / "out"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "counterexample: workers must be odd");
  EXPECT_FALSE(testing::file_exists(dir / "out"));
}

// Error messages quote what they read; from a binary file that must not reach the terminal raw.
TEST(PlotCli, ABinaryFileIsDescribedNotEchoed) {
  TempDir dir("plot");
  ASSERT_EQ(::mkdir((dir / "run").c_str(), 0755), 0);
  std::string garbage = "\x1b]0;title\x07\xff,\x1b]0;title\x07\xff\n";  // one column twice: quoted in the error
  std::ofstream(dir / "run/metrics.csv", std::ios::binary) << garbage;
  CommandResult r = lowrank("plot " + (dir / "run") + " --out " + (dir / "png"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "column '\\x1b]0;title\\x07\\xff' appears twice");
  // A long line of bytes >= 0x80 (not UTF-8) is cut and escaped.
  garbage = "step,train_loss\n1,";
  for (int i = 0; i < 100000; ++i) garbage += static_cast<char>(0x80 + i % 64);
  std::ofstream(dir / "run/metrics.csv", std::ios::binary | std::ios::trunc) << garbage << "\n";
  r = lowrank("plot " + (dir / "run") + " --out " + (dir / "png"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_LT(r.output.size(), 4000u) << r.output;
  expect_contains(r, "more bytes)");
  for (unsigned char c : r.output) EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << int(c);
  EXPECT_EQ(r.output.find("wrote"), std::string::npos) << r.output;
}

TEST(CompareCli, BadConfigsFailBeforeAnythingRuns) {
  TempDir dir("compare");
  const CommandResult dup = lowrank("compare --out " + (dir / "c") + " --configs 'powersgd --rank 4; powersgd --rank 4'");
  EXPECT_EQ(dup.exit_code, 1) << dup.output;
  expect_contains(dup, "two configs get the label 'powersgd-r4'");
  const CommandResult out = lowrank("compare --out " + (dir / "c") + " --configs 'none --out x'");
  EXPECT_EQ(out.exit_code, 1) << out.output;
  expect_contains(out, "sets --out");
  const CommandResult clash = lowrank("compare --out " + (dir / "c") + " --configs 'powersgd --rank 4' -- --rank 2");
  EXPECT_EQ(clash.exit_code, 1) << clash.output;
  expect_contains(clash, "config 'powersgd-r4' sets --rank, which the shared train flags after -- set too");
  // An option `lowrank train` refuses is found before any config runs.
  const CommandResult bogus = lowrank("compare --out " + (dir / "c") + " --configs 'none; powersgd --opt bogus=1'");
  EXPECT_EQ(bogus.exit_code, 1) << bogus.output;
  expect_contains(bogus, "config 'powersgd-bogus1' (powersgd --opt bogus=1) is refused by lowrank train");
  expect_contains(bogus, "bogus");
  EXPECT_EQ(bogus.output.find("[1/2]"), std::string::npos) << bogus.output;
  // The bandwidth model's flags too.
  const CommandResult links = lowrank("compare --out " + (dir / "c") + " --links '100mbit 1gbps' --configs 'none'");
  EXPECT_EQ(links.exit_code, 1) << links.output;
  expect_contains(links, "bandwidth '1gbps'");
  EXPECT_EQ(links.output.find("[1/1]"), std::string::npos) << links.output;
  const CommandResult latency = lowrank("compare --out " + (dir / "c") + " --latency-ms -1 --configs 'none'");
  EXPECT_NE(latency.exit_code, 0) << latency.output;
  expect_contains(latency, "--latency-ms");
}

TEST(CompareCli, AFailingConfigStopsTheComparisonNamingIt) {
  TempDir dir("compare");
  // (A pattern that matches no parameter passes the options' check and fails in the run itself.)
  const CommandResult r = lowrank("compare --out " + dir.path() +
                                  " --configs 'label=broken: powersgd --uncompressed-names nomatch; none'");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "config 'broken' failed");
  expect_contains(r, "--keep-going");
  EXPECT_EQ(r.output.find("[2/2]"), std::string::npos) << r.output;  // none never ran
  const std::string csv = testing::read_text(dir / "compare.csv");
  EXPECT_NE(csv.find("broken,failed"), std::string::npos) << csv;
}

TEST(CompareCli, TwoTinyConfigsGiveOneRowEachAndThePlots) {
  REQUIRE_DATASET();
  TempDir dir("compare");
  const CommandResult r = lowrank("compare --out " + dir.path() + " --configs 'none; powersgd --rank 2' -- --model mlp "
                                  "--nproc 1 --steps 4 --metrics-every 2 --eval-examples 100");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r, "[1/2] none");
  expect_contains(r, "[2/2] powersgd-r2");
  const auto table = report::CsvTable::read(dir / "compare.csv");
  ASSERT_EQ(table.rows(), 2u);
  const auto ratio = table.column("compression_ratio");
  EXPECT_DOUBLE_EQ(ratio[0], 1.0);  // none
  EXPECT_GT(ratio[1], 1.0);         // powersgd rank 2
  const auto accuracy = table.column("metric_value");
  for (double a : accuracy) EXPECT_TRUE(a >= 0 && a <= 1) << a;
  EXPECT_GT(table.column("step_ms_median")[1], 0.0);
  for (const char* col : {"label", "compressor", "rank", "options", "metric", "final_train_loss", "bytes_sent_per_worker",
                          "floats_sent_per_worker", "wall_seconds", "forward_backward_ms", "communicate_ms",
                          "compress_ms", "collective_ms", "optimizer_ms"})
    EXPECT_TRUE(table.has(col)) << col;
  const std::string md = testing::read_text(dir / "compare.md");
  EXPECT_NE(md.find("| none | none |"), std::string::npos) << md;
  EXPECT_NE(md.find("| powersgd-r2 | powersgd | 2 |"), std::string::npos) << md;
  EXPECT_TRUE(testing::file_exists(dir / "none/summary.json"));
  // The bandwidth model's section: one worker sends nothing over any link, so compression, which
  // only adds work there, is never faster than dense ("—" with and without overlap).
  const size_t section = md.find("## Predicted step time by link");
  ASSERT_NE(section, std::string::npos) << md;
  const size_t row = md.find("| powersgd-r2 |", section);
  ASSERT_NE(row, std::string::npos) << md;
  const std::string line = md.substr(row, md.find('\n', row) - row);
  EXPECT_NE(line.find("| — | — |"), std::string::npos) << line;
  const auto predicted = report::CsvTable::read(dir / "predicted.csv");
  EXPECT_EQ(predicted.rows(), 2u * 4u);  // 2 runs × the 4 default bandwidths
  for (double comm : predicted.column("predicted_communication_ms")) EXPECT_EQ(comm, 0.0);  // one worker
  if (testing::run_command("command -v gnuplot").exit_code == 0)
    for (const char* f : {"loss_vs_step.png", "loss_vs_bytes.png", "metric_vs_ratio.png", "none/loss.png",
                          "step_time_vs_bandwidth.png"})
      EXPECT_TRUE(testing::file_exists(dir / f)) << f;
}

}  // namespace
}  // namespace lowrank
