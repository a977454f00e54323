#include "lowrank/compressors/noop.h"

#include <gtest/gtest.h>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"
#include "support/seeded.h"

namespace lowrank {
namespace {

using testing::mix;
using testing::randn_seeded;

// noop sends nothing: no collective after set-up, 0 bytes, and every rank keeps its own gradient
// bit for bit (PyTorch's noop_hook), whatever the warm-up or error-feedback options say.
TEST(NoOp, SendsNothingAndLeavesEveryRanksGradient) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    at::Tensor w = at::zeros({16, 8}), b = at::zeros({8});
    GradientReducer red({{"w", w}, {"b", b}}, make_compressor("noop"), c,
                        ReducerOptions().start_iter(1).error_feedback(true).ef_residual(EfResidual::kGlobal));
    EXPECT_TRUE(red.compressed_names().empty());
    EXPECT_EQ(red.expected_bytes(-1) / 4, 0);
    EXPECT_EQ(red.expected_bytes(3) / 4, 0);
    const auto collectives = c->stats().collectives;
    for (int64_t s = 0; s < 3; ++s) {
      const at::Tensor gw = randn_seeded({16, 8}, mix({uint64_t(c->rank()), uint64_t(s)}), at::kFloat);
      const at::Tensor gb = randn_seeded({8}, mix({9, uint64_t(c->rank()), uint64_t(s)}), at::kFloat);
      w.grad().copy_(gw);
      b.grad().copy_(gb);
      red.reduce();
      EXPECT_TRUE(at::equal(w.grad(), gw)) << "step " << s;
      EXPECT_TRUE(at::equal(b.grad(), gb)) << "step " << s;
    }
    EXPECT_EQ(c->stats().collectives, collectives);
    EXPECT_EQ(red.stats().bytes_sent, 0);
    EXPECT_EQ(red.stats().dense_bytes, 3 * (16 * 8 + 8) * 4);
    EXPECT_FALSE(red.error_feedback());
    for (const auto& kv : red.state_dict()) EXPECT_NE(kv.first.rfind("ef/", 0), 0u) << kv.first;
  });
}

TEST(NoOp, IsRegisteredWithItsWireCost) {
  auto c = make_compressor("noop");
  EXPECT_EQ(c->name(), "noop");
  EXPECT_FALSE(c->traits().communicates);
  EXPECT_EQ(c->wire_bytes(100, 50, 0, at::kFloat) / 4, 0);
}

}  // namespace
}  // namespace lowrank
