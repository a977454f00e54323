// The bandwidth model (report/bandwidth_model.h): its formulas on synthetic profiles, the break-even
// bandwidth against the closed form, the per-step traffic the reducer counts and summary.json
// carries, and the plot from run directories.
#include "lowrank/report/bandwidth_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using report::Link;
using report::StepProfile;

bool has_text(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

StepProfile profile(int64_t W, double compute, double compress, double optimizer, double ar_bytes, double ar,
                    double ag_bytes = 0, double ag = 0) {
  StepProfile p;
  p.label = "p";
  p.world_size = W;
  p.compute_ms = compute;
  p.compress_ms = compress;
  p.optimizer_ms = optimizer;
  p.all_reduce_bytes = ar_bytes;
  p.all_reduces = ar;
  p.all_gather_bytes = ag_bytes;
  p.all_gathers = ag;
  return p;
}

TEST(BandwidthModel, RingFormulasForAllReduceAndAllGather) {
  // W = 2, 1 MB all-reduced at 100 Mbit/s: 2·1/2·8e6/1e8 s = 80 ms; latency 1 ms · 2(W−1) per call, 3 calls.
  EXPECT_DOUBLE_EQ(report::communication_ms(profile(2, 0, 0, 0, 1e6, 3), Link{1e8, 0}), 80.0);
  EXPECT_DOUBLE_EQ(report::communication_ms(profile(2, 0, 0, 0, 1e6, 3), Link{1e8, 1e-3}), 80.0 + 6.0);
  // W = 4: all-reduce 2·3/4·8e6/1e9 = 12 ms; all-gather of 0.5 MB own bytes 3·4e6/1e9 = 12 ms; latency
  // 2·3·1e-4 per all-reduce (2 calls) + 3·1e-4 per all-gather (1 call) = 1.5 ms.
  EXPECT_NEAR(report::communication_ms(profile(4, 0, 0, 0, 1e6, 2, 0.5e6, 1), Link{1e9, 1e-4}), 12.0 + 12.0 + 1.5,
              1e-9);
  // A shared link carries every worker's bytes: W times the byte term, the same latency.
  EXPECT_NEAR(report::communication_ms(profile(4, 0, 0, 0, 1e6, 2, 0.5e6, 1), Link{1e9, 1e-4, true}),
              4 * (12.0 + 12.0) + 1.5, 1e-9);
  // One worker communicates with nobody.
  EXPECT_EQ(report::communication_ms(profile(1, 0, 0, 0, 1e9, 10, 1e9, 10), Link{1e3, 1}), 0.0);
  // Step time: serial without overlap, the larger of compute and (compress + communication) with it.
  const StepProfile p = profile(2, 50, 5, 2, 1e6, 1);  // 80 ms of communication at 100 Mbit/s
  EXPECT_DOUBLE_EQ(report::predicted_step_ms(p, Link{1e8, 0}, false), 50 + 5 + 80 + 2);
  EXPECT_DOUBLE_EQ(report::predicted_step_ms(p, Link{1e8, 0}, true), std::max(50.0, 5 + 80.0) + 2);
  EXPECT_DOUBLE_EQ(report::predicted_step_ms(p, Link{1e10, 0}, true), 50 + 2);  // 0.8 ms hides behind compute
  // The rest of a step (batch, zero_grad, bookkeeping) adds to both, whatever the link, and to the dense
  // profile a run stands for, so it cancels out of a break-even point.
  StepProfile q = p;
  q.other_ms = 7;
  EXPECT_DOUBLE_EQ(report::predicted_step_ms(q, Link{1e8, 0}, false), 7 + 50 + 5 + 80 + 2);
  EXPECT_DOUBLE_EQ(report::predicted_step_ms(q, Link{1e8, 0}, true), 7 + std::max(50.0, 5 + 80.0) + 2);
  EXPECT_DOUBLE_EQ(report::predicted_step_ms(q, Link{1e10, 0}, true), 7 + 50 + 2);
  EXPECT_EQ(report::dense_profile_of(q, 1e7, 1).other_ms, 7.0);
}

TEST(BandwidthModel, BreakEvenMatchesTheClosedFormAndItsEdges) {
  // Without overlap and latency, t = A + c·bytes/B for each; equal at B = (c·(dense − compressed)) / (A_c − A_d),
  // c = 2(W−1)/W·8 = 8 bit per byte at W = 2: B = 8·(1e7 − 1e5) / 10 ms = 7.92e9 bit/s.
  const StepProfile compressed = profile(2, 100, 10, 1, 1e5, 2);
  const StepProfile dense = report::dense_profile_of(compressed, 1e7, 1);
  EXPECT_EQ(dense.compress_ms, 0.0);
  EXPECT_EQ(dense.compute_ms, 100.0);
  EXPECT_EQ(dense.all_reduces, 1.0);
  const double b = report::break_even_bits_per_second(compressed, dense, 0, false);
  EXPECT_NEAR(b / 7.92e9, 1.0, 1e-9);
  // Latency adds 2(W−1)·L per collective: the compressed one makes one more call.
  const double with_latency = report::break_even_bits_per_second(compressed, dense, 1e-3, false);
  EXPECT_NEAR(with_latency, 8 * (1e7 - 1e5) / ((10 + 2.0) * 1e-3), 1e-6 * with_latency);
  // Compression that costs nothing and sends less is faster on every link in range: +inf.
  EXPECT_TRUE(std::isinf(report::break_even_bits_per_second(profile(2, 100, 0, 1, 1e5, 1), dense, 0, false)));
  // Compression that costs more and sends as much is never faster: 0.
  EXPECT_EQ(report::break_even_bits_per_second(profile(2, 100, 10, 1, 1e7, 1), dense, 0, false), 0.0);
  // With overlap the crossing moves to where dense's communication starts to show behind its compute.
  const double overlapped = report::break_even_bits_per_second(compressed, dense, 0, true);
  EXPECT_LT(overlapped, b);
  EXPECT_NEAR(report::predicted_step_ms(compressed, Link{overlapped, 0}, true),
              report::predicted_step_ms(dense, Link{overlapped, 0}, true), 1e-6);
}

TEST(BandwidthModel, BadLinksAreRefusedNamingTheValue) {
  const StepProfile p = profile(2, 1, 1, 1, 1, 1);
  EXPECT_TRUE(has_text(testing::error_of([&] { report::communication_ms(p, Link{0, 0}); }),
                                "bandwidth must be a finite number of bits/s > 0, got 0"));
  EXPECT_TRUE(has_text(testing::error_of([&] { report::communication_ms(p, Link{1e9, -1}); }),
                                "latency must be a finite number of seconds >= 0, got -1"));
  EXPECT_EQ(report::parse_bandwidth("20mbit"), 20e6);
  EXPECT_EQ(report::parse_bandwidth("2.5gbit"), 2.5e9);
  EXPECT_EQ(report::parse_bandwidth("500kbit"), 5e5);
  EXPECT_EQ(report::parse_bandwidth("1tbit"), 1e12);
  for (const char* bad : {"100", "mbit", "-5mbit", "0gbit", "fast", "1e999gbit"})
    EXPECT_TRUE(has_text(testing::error_of([&] { report::parse_bandwidth(bad); }), std::string("'") + bad + "'")) << bad;
  EXPECT_EQ(report::bandwidth_text(100e6), "100 Mbit/s");
  EXPECT_EQ(report::bandwidth_text(2.5e9), "2.5 Gbit/s");
  EXPECT_EQ(report::bandwidth_text(std::numeric_limits<double>::infinity()), "∞");
  EXPECT_EQ(report::bandwidth_text(0), "—");
}

// The reducer counts, per step, the collectives and all-gather bytes the communicator was handed: bf16
// travels by all-gather, none by all-reduce, powersgd by two all-reduces per bucket.
TEST(BandwidthModel, ReducerCountsTrafficByKindPerStep) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    for (const std::string name : {"bf16", "none", "powersgd"}) {
      std::vector<std::pair<std::string, at::Tensor>> params = {{"w", at::zeros({16, 12})}, {"b", at::zeros({12})}};
      GradientReducer red(params, make_compressor(name, Config{}), c,
                          ReducerOptions().min_compression_rate(0).skip_nonfinite(false));
      const comm::CommStats before = c->stats();
      for (int s = 0; s < 3; ++s) {
        for (auto& p : params) p.second.mutable_grad() = at::ones_like(p.second);
        red.reduce();
      }
      const ReducerStats& r = red.stats();
      const comm::CommStats& now = c->stats();
      EXPECT_EQ(r.traffic_steps, 3) << name;
      EXPECT_EQ(r.traffic_bytes, r.bytes_sent) << name;
      EXPECT_EQ(r.collectives, now.collectives - before.collectives) << name;
      EXPECT_EQ(r.all_gathers, now.all_gathers - before.all_gathers) << name;
      EXPECT_EQ(r.all_gather_bytes, now.all_gather_bytes - before.all_gather_bytes) << name;
      if (name == "bf16") {
        EXPECT_GT(r.all_gathers, 0) << name;
        EXPECT_EQ(r.all_gather_bytes, r.bytes_sent) << name;
      } else {
        EXPECT_EQ(r.all_gathers, 0) << name;
        EXPECT_EQ(r.all_gather_bytes, 0) << name;
        EXPECT_GT(r.collectives, 0) << name;
      }
    }
  });
}


void write_summary(const std::string& dir, const std::string& compressor, bool per_step, double step_ms = 50) {
  std::filesystem::create_directories(dir);
  std::ofstream f(dir + "/summary.json", std::ios::trunc);
  f << "{\"compressor\": \"" << compressor << "\", \"rank\": null, \"world_size\": 2, \"compression_ratio\": 1, "
    << "\"final_train_loss\": 0.5, \"test_accuracy\": 0.8, \"forward_backward_ms\": 40, \"compress_ms\": 3, "
    << "\"optimizer_ms\": 1, \"step_ms_median\": " << step_ms << ", \"communicate_ms\": 4, "
    << "\"config\": {\"overlap\": true}";
  if (per_step)
    f << ", \"per_step\": {\"steps\": 10, \"bytes_sent\": 1e5, \"all_reduce_bytes\": 1e5, \"all_gather_bytes\": 0, "
      << "\"all_reduces\": 2, \"all_gathers\": 0, \"dense_bytes\": 4e6, \"buckets\": 1}";
  f << "}\n";
}

// From run directories: the profile read back from summary.json, and the plot, which leaves out (and
// names) a run without per-step traffic and refuses when no run has it.
TEST(BandwidthModel, ProfilesAndThePlotComeFromSummaries) {
  testing::TempDir dir("bw");
  const std::string a = dir.path() + "/psgd", old = dir.path() + "/old";
  write_summary(a, "powersgd", true);
  write_summary(old, "powersgd", false);
  const report::RunSummary s = report::read_run_summary(a);
  ASSERT_TRUE(s.has_per_step());
  const StepProfile p = report::step_profile_of(s);
  EXPECT_EQ(p.world_size, 2);
  EXPECT_EQ(p.compute_ms, 40.0);
  EXPECT_EQ(p.compress_ms, 3.0);
  EXPECT_EQ(p.all_reduce_bytes, 1e5);
  EXPECT_EQ(p.all_reduces, 2.0);
  EXPECT_EQ(p.other_ms, 50.0 - 40 - 4 - 1);  // the median step less forward+backward, the wait and the optimizer
  // Medians of the parts can add up to more than the median step: then nothing is left over.
  write_summary(dir.path() + "/tight", "powersgd", true, 44);
  EXPECT_EQ(report::step_profile_of(report::read_run_summary(dir.path() + "/tight")).other_ms, 0.0);
  const report::RunSummary o = report::read_run_summary(old);
  EXPECT_FALSE(o.has_per_step());
  EXPECT_TRUE(has_text(testing::error_of([&] { report::step_profile_of(o); }), "no per-step traffic"));
  EXPECT_TRUE(has_text(
      testing::error_of([&] { report::plot_step_time_vs_bandwidth({old}, dir.path() + "/x.png", 1e-4, false); }),
      "none of the runs has per-step traffic"));
  if (testing::run_command("command -v gnuplot").exit_code != 0) GTEST_SKIP() << "gnuplot is not installed";
  const std::string png = report::plot_step_time_vs_bandwidth({a, old}, dir.path() + "/bw.png", 1e-4, false);
  EXPECT_EQ(testing::read_text(png).substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const std::string gp = testing::read_text(dir.path() + "/bw.gp");
  EXPECT_TRUE(has_text(gp, "not shown, no per-step traffic: old")) << gp;
  EXPECT_TRUE(has_text(gp, "dense all-reduce (psgd")) << gp;
}

}  // namespace
}  // namespace lowrank
