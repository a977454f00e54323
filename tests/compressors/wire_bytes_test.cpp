// "Bytes everywhere": for every registered compressor (with its defaults, and in the configurations
// of testing::compressor_cases() whose restarts, refreshes and factor types change the traffic within
// a few steps), the bytes the reducer reports equal the bytes it handed to the communicator, the
// compressor's wire_bytes() formula summed over the model (GradientReducer::expected_bytes), and the
// plan `lowrank inspect` prints (plan_compression), at every step: dense warm-up, normal, refresh.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/compression_plan.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/compressor_cases.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

// A 0-d scalar, a bias, tall, wide, two same-shape matrices (one shape group of two members when
// batching) and a 4-D "conv" tensor; `dtype` fp32 or fp64 (the reducer then works in fp64).
Named make_params(at::ScalarType dtype) {
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {
      {"scale", {}},    {"bias", {7}},        {"tall", {24, 6}}, {"wide", {6, 24}},
      {"sq1", {10, 10}}, {"sq2", {10, 10}}, {"conv", {8, 3, 3, 3}},
  };
  Named out;
  for (const auto& s : shapes) out.emplace_back(s.first, at::zeros(s.second, at::TensorOptions().dtype(dtype)));
  return out;
}

std::vector<testing::CompressorCase> all_cases() {
  std::vector<testing::CompressorCase> cases;
  for (const auto& name : compressor_names()) cases.push_back({name, {}});
  for (const auto& c : testing::compressor_cases()) cases.push_back(c);
  return cases;
}

// Steps 0 .. kSteps-1 with a dense warm-up of `start_iter` steps.
constexpr int64_t kSteps = 5;

void check_case(const testing::CompressorCase& c, at::ScalarType dtype, int64_t start_iter,
                const std::shared_ptr<comm::Communicator>& comm) {
  std::string what = c.compressor;
  for (const auto& kv : c.config.values()) what += " " + kv.first + "=" + kv.second;
  what += std::string(" ") + c10::toString(dtype) + " start_iter=" + std::to_string(start_iter);
  Named params = make_params(dtype);
  const auto opts = ReducerOptions().start_iter(start_iter).min_compression_rate(1);
  GradientReducer red(params, make_compressor(c.compressor, c.config), comm, opts);
  const auto planner = make_compressor(c.compressor, c.config);
  int64_t total = 0;
  for (int64_t t = 0; t < kSteps; ++t) {
    int64_t salt = 0;
    for (auto& p : params)
      p.second.mutable_grad() = at::randn(p.second.sizes(), p.second.options()) + double(comm->rank() + ++salt);
    const int64_t before = comm->stats().bytes_sent;
    ASSERT_TRUE(red.reduce()) << what;
    const int64_t handed = comm->stats().bytes_sent - before;
    const CompressionPlan plan = plan_compression(params, *planner, opts, t);
    EXPECT_EQ(red.stats().last_bytes_sent, handed) << what << " t=" << t;
    EXPECT_EQ(red.expected_bytes(t - start_iter), handed) << what << " t=" << t;
    EXPECT_EQ(plan.bytes_sent_per_step, handed) << what << " t=" << t;
    int64_t per_param = 0;
    for (const auto& p : plan.params) per_param += p.bytes;
    EXPECT_EQ(per_param, handed) << what << " t=" << t;
    total += handed;
  }
  EXPECT_EQ(red.stats().bytes_sent, total) << what;
  EXPECT_EQ(red.stats().floats_sent, total / 4) << what;
}

class WireBytesW2 : public ::testing::TestWithParam<at::ScalarType> {};
INSTANTIATE_TEST_SUITE_P(Dtypes, WireBytesW2, ::testing::Values(at::kFloat, at::kDouble));

TEST_P(WireBytesW2, ReportedEqualsHandedEqualsFormulaEqualsPlanForEveryCompressor) {
  const auto cases = all_cases();
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> comm) {
    at::manual_seed(7 + comm->rank());
    for (const auto& c : cases)
      for (int64_t start_iter : {int64_t(0), int64_t(2)}) check_case(c, GetParam(), start_iter, comm);
  });
}

// The registry is the list the test walks: a compressor registered without a test of its bytes
// cannot exist. (That the per-matrix costs add up is checked above, parameter by parameter.)
TEST(WireBytes, EveryRegisteredCompressorStatesAPositiveCostThatGrowsWithFp64) {
  for (const auto& name : compressor_names()) {
    const auto c = make_compressor(name);
    const bool sends = c->traits().communicates;
    for (int64_t s : {int64_t(0), int64_t(1), int64_t(7)}) {
      const int64_t a = c->wire_bytes(12, 5, s, at::kFloat), b = c->wire_bytes(12, 5, s, at::kDouble);
      if (sends) {
        EXPECT_GT(a, 0) << name;
        EXPECT_GE(b, a) << name << ": fp64 parameters cannot travel in fewer bytes than fp32 ones";
      } else {
        EXPECT_EQ(a, 0) << name;
        EXPECT_EQ(b, 0) << name;
      }
    }
  }
}

}  // namespace
}  // namespace lowrank
