// `--compressor auto` (launch/compressor_choice.h): the link solved from two all-reduce timings, the
// choice on synthetic profiles on either side of the break-even, the fallback on absurd timings, and
// that every rank receives rank 0's timing.
#include "lowrank/launch/compressor_choice.h"

#include <gtest/gtest.h>

#include <mutex>

#include "support/multi_rank.h"

namespace lowrank {
namespace launch {
namespace {

// The ring all-reduce time of the bandwidth model for `bytes` on W workers.
double ring_seconds(double bytes, int W, double bits, double latency) {
  return 2.0 * (W - 1) / W * 8.0 * bytes / bits + 2.0 * (W - 1) * latency;
}

TEST(CompressorChoice, LinkIsSolvedFromTheTwoProbeSizes) {
  for (int W : {2, 4}) {
    for (double bits : {20e6, 1e9}) {
      const double latency = 2e-4;
      const LinkTiming t{ring_seconds(kProbeLargeBytes, W, bits, latency), ring_seconds(kProbeSmallBytes, W, bits, latency)};
      const MeasuredLink m = link_from_timing(t, W);
      ASSERT_TRUE(m.problem.empty()) << m.problem;
      EXPECT_NEAR(m.link.bits_per_second / bits, 1.0, 1e-9) << W;
      EXPECT_NEAR(m.link.latency_s / latency, 1.0, 1e-6) << W;
    }
  }
}

TEST(CompressorChoice, AnAbsurdTimingFallsBackToPowerSgdWithTheReason) {
  const std::vector<std::pair<LinkTiming, std::string>> bad = {
      {{0.0, 0.001}, "not positive and finite"},
      {{0.01, -1.0}, "not positive and finite"},
      {{std::nan(""), 0.001}, "not positive and finite"},
      {{0.001, 0.001}, "was not slower"},
      {{0.001, 0.002}, "was not slower"},
      {{1e6, 1e-6}, "outside [1 kbit/s, 10 Tbit/s]"},
  };
  for (const auto& b : bad) {
    const MeasuredLink m = link_from_timing(b.first, 2);
    EXPECT_NE(m.problem.find(b.second), std::string::npos) << m.problem;
    const CompressorChoice c = choose_compressor(m, {}, {}, 4);
    EXPECT_EQ(c.compressor, "powersgd");
    EXPECT_NE(c.reason.find("could not be measured"), std::string::npos) << c.reason;
  }
}

TEST(CompressorChoice, DenseWhereTheLinkIsFastCompressedWhereItIsSlow) {
  report::StepProfile dense, psgd;
  dense.world_size = psgd.world_size = 2;
  dense.all_reduce_bytes = 4e6;  // 4 MB per step in one collective
  dense.all_reduces = 1;
  psgd.all_reduce_bytes = 2e5;
  psgd.all_reduces = 3;
  psgd.compress_ms = 5;
  // Break-even without latency: 4e6·8/B = 2e5·8/B + 5 ms  =>  B = 3.8e6·8 / 5e-3 = 6.08 Gbit/s.
  const double even = 3.8e6 * 8 / 5e-3;
  for (double bits : {1e7, 1e8, 1e9, 0.9 * even}) {
    const CompressorChoice c = choose_compressor({report::Link{bits, 0, false}, ""}, dense, psgd, 4);
    EXPECT_EQ(c.compressor, "powersgd") << bits << " " << c.reason;
    EXPECT_LT(c.compressed_ms, c.dense_ms);
    EXPECT_NE(c.reason.find("chose powersgd --rank 4"), std::string::npos) << c.reason;
  }
  for (double bits : {1.1 * even, 1e11}) {
    const CompressorChoice c = choose_compressor({report::Link{bits, 0, false}, ""}, dense, psgd, 4);
    EXPECT_EQ(c.compressor, "none") << bits << " " << c.reason;
    EXPECT_NE(c.reason.find("the link is fast enough"), std::string::npos) << c.reason;
  }
}

TEST(CompressorChoice, EveryRankDecidesFromRankZerosTiming) {
  std::mutex mu;
  std::vector<LinkTiming> seen(2);
  testing::run_ranks(2, [&](comm::Communicator& c) {
    const LinkTiming t = time_link(c);
    std::lock_guard<std::mutex> lock(mu);
    seen[c.rank()] = t;
  });
  EXPECT_EQ(seen[0].large_s, seen[1].large_s);
  EXPECT_EQ(seen[0].small_s, seen[1].small_s);
  EXPECT_GT(seen[0].large_s, 0);
}

}  // namespace
}  // namespace launch
}  // namespace lowrank
