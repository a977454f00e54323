#include "lowrank/train/lr_schedule.h"

#include <gtest/gtest.h>
#include <torch/optim/sgd.h>

#include <cmath>

namespace lowrank {
namespace {

// cos() in double precision on O(1) arguments.
constexpr double kCosTol = 1e-12;

TEST(LrSchedule, CosineStartsAtTheBaseHalvesMidwayAndEndsNearZero) {
  const int64_t T = 100;
  EXPECT_EQ(train::scheduled_lr("cosine", 0.2, 0, T), 0.2);
  EXPECT_NEAR(train::scheduled_lr("cosine", 0.2, 50, T), 0.1, kCosTol);
  EXPECT_NEAR(train::scheduled_lr("cosine", 0.2, 99, T), 0.2 * 0.5 * (1 + std::cos(M_PI * 0.99)), kCosTol);
  EXPECT_GT(train::scheduled_lr("cosine", 0.2, 99, T), 0.0);
  for (int64_t t = 1; t < T; ++t)
    EXPECT_LT(train::scheduled_lr("cosine", 0.2, t, T), train::scheduled_lr("cosine", 0.2, t - 1, T)) << t;
  EXPECT_EQ(train::scheduled_lr("cosine", 0.2, 0, 1), 0.2);
  EXPECT_EQ(train::scheduled_lr("constant", 0.2, 77, T), 0.2);
}

TEST(LrSchedule, WarmUpRampsLinearlyThenTheScheduleRunsOverTheRest) {
  const int64_t T = 110, W = 10;
  for (int64_t t = 0; t < W; ++t) EXPECT_NEAR(train::scheduled_lr("cosine", 1e-3, t, T, W), 1e-3 * (t + 1) / W, 1e-18);
  // After the ramp: the cosine of a 100-step run, starting at the base.
  for (int64_t t = W; t < T; ++t)
    EXPECT_NEAR(train::scheduled_lr("cosine", 1e-3, t, T, W), train::scheduled_lr("cosine", 1e-3, t - W, T - W),
                1e-18)
        << t;
  EXPECT_EQ(train::scheduled_lr("cosine", 1e-3, W, T, W), 1e-3);
  EXPECT_EQ(train::scheduled_lr("constant", 0.5, 3, T, W), 0.5 * 4 / 10);
  EXPECT_EQ(train::scheduled_lr("constant", 0.5, 30, T, W), 0.5);
  // A warm-up as long as the run is all ramp.
  EXPECT_EQ(train::scheduled_lr("cosine", 1.0, 4, 5, 5), 1.0);
}

TEST(LrSchedule, SetLrReachesEveryParameterGroupAndBadInputIsNamed) {
  at::Tensor p = at::ones({2}).requires_grad_();
  torch::optim::SGD sgd({p}, torch::optim::SGDOptions(0.5));
  train::set_lr(sgd, 0.125);
  EXPECT_EQ(sgd.param_groups()[0].options().get_lr(), 0.125);
  try {
    train::scheduled_lr("linear", 1, 0, 10);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(e.msg().find("unknown lr schedule 'linear'; valid: constant, cosine"), std::string::npos) << e.msg();
  }
  EXPECT_THROW(train::scheduled_lr("cosine", 1, 10, 10), c10::Error);
}

}  // namespace
}  // namespace lowrank
