#include "support/train_test_support.h"
#include "lowrank/train/optimizer_factory.h"

#include <gtest/gtest.h>

namespace lowrank {
namespace {

using testing::error_of;

// A few fp32 multiply-adds on O(1) values.
constexpr double kFloatTol = 1e-6;
// Adam's first step is lr·g/(|g| + eps) = lr·(1 − O(eps/|g|)).
constexpr double kAdamTol = 1e-6;

TEST(OptimizerFactory, SgdWithMomentumAndWeightDecayStepsExactly) {
  at::Tensor p = at::tensor({1.0f, 2.0f}).requires_grad_();
  auto opt = train::make_optimizer("sgd", {p}, 0.1, 0.9, 0.5);
  // Step 1: d = g + 0.5 p = [0.5 + 0.5, -1 + 1] = [1, 0]; buf = d; p -= 0.1 buf -> [0.9, 2].
  p.mutable_grad() = at::tensor({0.5f, -1.0f});
  opt->step();
  EXPECT_NEAR(p[0].item<double>(), 0.9, kFloatTol);
  EXPECT_NEAR(p[1].item<double>(), 2.0, kFloatTol);
  // Step 2: d = [0.5 + 0.45, -1 + 1] = [0.95, 0]; buf = 0.9·[1, 0] + d = [1.85, 0]; p -> [0.715, 2].
  opt->step();
  EXPECT_NEAR(p[0].item<double>(), 0.715, kFloatTol);
  EXPECT_NEAR(p[1].item<double>(), 2.0, kFloatTol);
}

TEST(OptimizerFactory, AdamAndAdamwFirstStepMovesByTheLearningRate) {
  for (const std::string name : {"adam", "adamw"}) {
    at::Tensor p = at::tensor({1.0f, -3.0f}).requires_grad_();
    auto opt = train::make_optimizer(name, {p}, 0.01, 0.9, 0.0);
    p.mutable_grad() = at::tensor({2.0f, -0.5f});
    opt->step();
    EXPECT_NEAR(p[0].item<double>(), 0.99, kAdamTol) << name;
    EXPECT_NEAR(p[1].item<double>(), -2.99, kAdamTol) << name;
  }
  EXPECT_EQ(train::default_lr("sgd"), 0.05);
  EXPECT_EQ(train::default_lr("adam"), 1e-3);
}

TEST(OptimizerFactory, BadInputIsNamed) {
  at::Tensor p = at::zeros({2}).requires_grad_();
  std::string msg = error_of([&] { train::make_optimizer("lamb", {p}, 0.1, 0.9, 0); });
  EXPECT_NE(msg.find("unknown optimizer 'lamb'; valid: sgd, adam, adamw"), std::string::npos) << msg;
  msg = error_of([&] { train::make_optimizer("sgd", {p}, -1, 0.9, 0); });
  EXPECT_NE(msg.find("lr must be a finite number > 0, got -1"), std::string::npos) << msg;
  msg = error_of([&] { train::make_optimizer("adam", {p}, 0.1, 1.0, 0); });
  EXPECT_NE(msg.find("momentum must lie in [0, 1), got 1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lowrank
