// "none" (dense baseline): through the GradientReducer it must equal a plain all-reduce divided by
// W, bit for bit, on inputs where every step of both computations is exact.
#include "lowrank/compressors/none.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

// 1-element (0-d and [1, 1]), vector, tall, wide, square and a 4-D "conv" tensor.
const std::vector<std::pair<std::string, std::vector<int64_t>>> kShapes = {
    {"scalar", {}},   {"one", {1, 1}},    {"bias", {7}},          {"tall", {9, 3}},
    {"wide", {3, 9}}, {"square", {5, 5}}, {"conv", {4, 2, 3, 3}},
};

// Small integers times `scale`. With scale = 1 for W in {1, 2, 4} (division by a power of two is
// exact) and scale = W otherwise, both x/W then Σ (the reducer's pre-division) and Σ then /W are
// exact in fp32, so the two results must be equal bit for bit.
at::Tensor small_ints(at::IntArrayRef shape, uint64_t seed, double scale) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(-8, 9, shape, gen, at::TensorOptions().dtype(at::kFloat)) * scale;
}

constexpr int64_t kSteps = 3;

// Runs once per world size W = GetParam().
class NoneCompressorW1to4 : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(WorldSizes, NoneCompressorW1to4, ::testing::Values(1, 2, 3, 4));

TEST_P(NoneCompressorW1to4, EqualsAPlainAllReduceBitForBit) {
  const int W = GetParam();
  const double scale = (W & (W - 1)) == 0 ? 1.0 : double(W);
  testing::run_ranks_shared(W, [W, scale](std::shared_ptr<comm::Communicator> c) {
    std::vector<std::pair<std::string, at::Tensor>> ps;
    for (const auto& s : kShapes) ps.emplace_back(s.first, at::zeros(s.second));
    // ρ = 0 would compress every matrix: "none" must still compress nothing and keep no state.
    GradientReducer red(ps, make_compressor("none"), c, ReducerOptions().min_compression_rate(0));
    EXPECT_TRUE(red.compressed_names().empty());
    int64_t numel = 0;
    for (const auto& p : ps) numel += p.second.numel();
    for (int64_t t = 0; t < kSteps; ++t) {
      std::vector<at::Tensor> want;
      for (size_t j = 0; j < ps.size(); ++j) {
        at::Tensor g = small_ints(kShapes[j].second, 100 * t + 10 * j + c->rank(), scale);
        ps[j].second.mutable_grad() = g.clone();
        at::Tensor reduced = g.clone();
        c->all_reduce_(reduced);
        want.push_back(reduced / W);
      }
      const int64_t bytes_before = c->stats().bytes_sent;
      red.reduce();
      for (size_t j = 0; j < ps.size(); ++j)
        EXPECT_TRUE(at::equal(ps[j].second.grad(), want[j]))
            << "W=" << W << " step=" << t << " " << ps[j].first << ": " << ps[j].second.grad() << " vs " << want[j];
      // Every element once, in one dense buffer; nothing else.
      EXPECT_EQ(red.stats().last_floats_sent, numel);
      EXPECT_EQ(red.expected_bytes(t) / 4, numel);
      EXPECT_EQ((c->stats().bytes_sent - bytes_before) / 4, numel);
    }
    EXPECT_DOUBLE_EQ(red.stats().compression_ratio(), 1.0);
    // Only the header (version, step, stats, settings): no EF buffer, no compressor state for a
    // method that does not compress.
    auto state = red.state_dict();
    ASSERT_EQ(state.size(), 4u);
    EXPECT_EQ(state[1].first, "step");
    EXPECT_EQ(state[1].second.item<int64_t>(), kSteps);
  });
}

TEST(NoneCompressor, MissingGradientsCountAsZero) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({3, 4});
    GradientReducer red({{"w", w}}, make_compressor("none"), c);
    if (c->rank() == 1) w.mutable_grad() = at::full({3, 4}, 6.0);  // rank 0 has no gradient
    red.reduce();
    ASSERT_TRUE(w.grad().defined());
    EXPECT_TRUE(at::equal(w.grad(), at::full({3, 4}, 3.0)));
  });
}

TEST(NoneCompressor, DescribesItself) {
  auto none = make_compressor("none");
  EXPECT_EQ(none->name(), "none");
  EXPECT_FALSE(none->traits().compresses);
  EXPECT_FALSE(none->traits().default_error_feedback);
  EXPECT_EQ(none->wire_bytes(7, 3, 0, at::kFloat) / 4, 21);
}

}  // namespace
}  // namespace lowrank
