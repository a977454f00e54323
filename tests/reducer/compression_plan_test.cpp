// reducer/compression_plan.h (what `lowrank inspect` prints) against a real GradientReducer: the
// decisions equal the reducer's, and the bytes counted per step equal ReducerStats, step by step.
#include "lowrank/reducer/compression_plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/data/input_spec.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/seeded.h"

namespace lowrank {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

Named named_parameters(const std::string& model) {
  auto net = models::make_model(model, data::input_spec("fashion-mnist"), 0);
  Named out;
  for (const auto& kv : net->named_parameters()) out.emplace_back(kv.key(), kv.value());
  return out;
}

struct Case {
  std::string model, compressor;
  Config config;
  ReducerOptions options;
};

// Runs `steps` reduce() calls of a reducer on world size 1 and checks every step's traffic against
// the plan of that step, the totals against the plan's mean, and the compressed set.
void check_case(const Case& c, int64_t steps) {
  SCOPED_TRACE(c.model + " " + c.compressor);
  const Named params = named_parameters(c.model);
  const auto plan_compressor = make_compressor(c.compressor, c.config);
  const CompressionPlan whole = plan_compression(params, *plan_compressor, c.options, 0, steps);

  GradientReducer red(params, make_compressor(c.compressor, c.config),
                      std::shared_ptr<comm::Communicator>(comm::make_local_communicator()), c.options);
  std::vector<std::string> planned_compressed;
  for (const auto& p : whole.params)
    if (p.decision.compressed) planned_compressed.push_back(p.name);
  EXPECT_EQ(planned_compressed, red.compressed_names());
  EXPECT_EQ(whole.unmatched_uncompressed_names, red.unmatched_uncompressed_names());

  for (int64_t t = 0; t < steps; ++t) {
    int64_t i = 0;
    for (auto& p : params) p.second.mutable_grad().copy_(testing::randn_seeded(p.second.sizes().vec(), 100 * t + i++, at::kFloat));
    ASSERT_TRUE(red.reduce());
    const CompressionPlan at_t = plan_compression(params, *plan_compressor, c.options, t);
    EXPECT_EQ(red.stats().last_bytes_sent, at_t.bytes_sent_per_step) << "step " << t;
    if (t == 0) {
      EXPECT_EQ(red.stats().bytes_sent, whole.bytes_sent_per_step);
      EXPECT_EQ(red.stats().dense_bytes, whole.dense_bytes_per_step);
      EXPECT_DOUBLE_EQ(red.stats().compression_ratio(), whole.compression_ratio());
    }
  }
  EXPECT_EQ(red.stats().dense_bytes, whole.dense_bytes_per_step * steps);
  EXPECT_DOUBLE_EQ(double(red.stats().bytes_sent), whole.mean_bytes_sent_per_step * double(steps));
  if (c.options.start_iter() == 0) EXPECT_NEAR(red.stats().compression_ratio(), whole.mean_compression_ratio(), 1e-9);
}

TEST(InspectPlan, EqualsTheReducersCountsStepByStep) {
  const std::vector<Case> cases = {
      {"cnn", "powersgd", Config{{"rank", "4"}}, ReducerOptions()},
      {"cnn", "none", Config{}, ReducerOptions()},
      {"cnn", "noop", Config{}, ReducerOptions()},
      {"mlp", "powersgd", Config{{"rank", "2"}}, ReducerOptions().uncompressed_names({"fc2", "nomatch"})},
      {"cnn", "powersgd", Config{{"rank", "2"}, {"powersgd_mode", "alternating"}}, ReducerOptions()},
      {"cnn", "powersgd+", Config{{"rank", "2"}, {"restart_period", "2"}}, ReducerOptions()},
      {"cnn", "galore", Config{{"rank", "2"}, {"refresh_period", "3"}}, ReducerOptions().start_iter(1)},
      {"cnn", "greedylore", Config{{"rank", "2"}}, ReducerOptions().min_compression_rate(30)},
  };
  for (const auto& c : cases) check_case(c, 4);
}

TEST(InspectPlan, GivesEveryReason) {
  const Named params = named_parameters("cnn");
  const auto psgd = make_compressor("powersgd", Config{{"rank", "8"}});
  const auto plan = plan_compression(params, *psgd, ReducerOptions().uncompressed_names({"fc2"}));
  std::map<std::string, CompressionReason> reason;
  for (const auto& p : plan.params) reason[p.name] = p.decision.reason;
  EXPECT_EQ(reason.at("conv1.bias"), CompressionReason::kOneDim);
  EXPECT_EQ(reason.at("conv1.weight"), CompressionReason::kSizeRule);  // 16 x 25 = 400 <= 2 * (16 + 25) * 8
  EXPECT_EQ(reason.at("fc1.weight"), CompressionReason::kCompressed);
  EXPECT_EQ(reason.at("fc2.weight"), CompressionReason::kUncompressedName);
  const auto fc1 = std::find_if(plan.params.begin(), plan.params.end(), [](const PlannedParam& p) { return p.name == "fc1.weight"; });
  EXPECT_EQ(fc1->decision.m, 128);
  EXPECT_EQ(fc1->decision.n, 1568);
  EXPECT_EQ(fc1->bytes, 4 * (128 + 1568) * 8);
  const auto none = plan_compression(params, *make_compressor("none"), ReducerOptions());
  for (const auto& p : none.params) EXPECT_EQ(p.decision.reason, CompressionReason::kCompressorDense);
  EXPECT_DOUBLE_EQ(none.compression_ratio(), 1.0);
  EXPECT_EQ(plan_compression(params, *make_compressor("noop"), ReducerOptions()).compression_ratio(), 0.0);
}

// An elementwise method (cast, sparsifier, quantizer) compresses every tensor, 1-D ones as [1, numel],
// without the size rule; uncompressed_names still applies. A 16-bit cast halves every tensor, which
// the size rule (ratio 2 is not > ρ = 2) would have refused.
TEST(InspectPlan, ElementwiseMethodsCompressEveryTensorButNamedOnes) {
  const Named params = named_parameters("cnn");
  for (const char* name : {"fp16", "topk", "signsgd"}) {
    const auto plan = plan_compression(params, *make_compressor(name), ReducerOptions().uncompressed_names({"fc2"}));
    for (const auto& p : plan.params) {
      const bool named_out = p.name.find("fc2") != std::string::npos;
      EXPECT_EQ(p.decision.compressed, !named_out) << name << " " << p.name;
      EXPECT_EQ(p.decision.reason, named_out ? CompressionReason::kUncompressedName : CompressionReason::kCompressed)
          << name << " " << p.name;
      EXPECT_EQ(p.decision.size_rule_bytes, 0) << name << " " << p.name;
      EXPECT_EQ(p.decision.m * p.decision.n, p.numel) << name << " " << p.name;
      if (p.shape.size() < 2) EXPECT_EQ(p.decision.m, 1) << name << " " << p.name;
      if (!named_out) EXPECT_LT(p.bytes, p.dense_bytes) << name << " " << p.name;
    }
  }
  const auto fp16 = plan_compression(params, *make_compressor("fp16"), ReducerOptions());
  EXPECT_EQ(fp16.bytes_sent_per_step * 2, fp16.dense_bytes_per_step);
}

TEST(InspectPlan, InputSpecOfFashionMnistAndUnknownDatasets) {
  const auto s = data::input_spec("fashion-mnist");
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.height, 28);
  EXPECT_EQ(s.width, 28);
  EXPECT_EQ(s.classes, 10);
  EXPECT_THROW(data::input_spec("imagenet"), c10::Error);
}

}  // namespace
}  // namespace lowrank
