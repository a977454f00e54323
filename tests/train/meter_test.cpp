#include "lowrank/train/meter.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

namespace lowrank {
namespace {

// Inputs are small integers and halves: every mean below is exact in double precision.

TEST(AverageMeter, MeansTheValuesSinceTheLastReset) {
  train::AverageMeter m;
  EXPECT_EQ(m.value(-1.0), -1.0);
  EXPECT_TRUE(std::isnan(m.value(std::nan(""))));
  m.add(1);
  m.add(2);
  m.add(6);
  EXPECT_EQ(m.count(), 3);
  EXPECT_EQ(m.sum(), 9.0);
  EXPECT_EQ(m.value(-1.0), 3.0);
  m.reset();
  EXPECT_EQ(m.count(), 0);
  EXPECT_EQ(m.sum(), 0.0);
  EXPECT_EQ(m.value(0.0), 0.0);
  // Restored from a checkpoint's sum and count, it continues as if it had seen the values.
  train::AverageMeter restored(9.0, 3);
  restored.add(3);
  EXPECT_EQ(restored.value(-1.0), 3.0);
  EXPECT_EQ(restored.count(), 4);
  EXPECT_THROW(train::AverageMeter(1.0, -1), c10::Error);
}

TEST(WindowMeter, MeansTheLastCapacityValues) {
  train::WindowMeter w(3);
  EXPECT_EQ(w.value(-1.0), -1.0);
  for (double v : {1.0, 2.0, 3.0}) w.add(v);
  EXPECT_EQ(w.value(0.0), 2.0);
  w.add(7);  // drops the 1
  EXPECT_EQ(w.values(), (std::vector<double>{2, 3, 7}));
  EXPECT_EQ(w.value(0.0), 4.0);
  w.reset();
  EXPECT_TRUE(w.values().empty());
  EXPECT_THROW(train::WindowMeter(0), c10::Error);
}

TEST(WindowMeter, AssignKeepsACheckpointsWindowWhole) {
  train::WindowMeter w(2);
  w.assign({1, 2, 3, 4});  // written with a larger window
  EXPECT_EQ(w.values(), (std::vector<double>{1, 2, 3, 4}));
  w.add(5);  // one value in, one out, as the trainer always did
  EXPECT_EQ(w.values(), (std::vector<double>{2, 3, 4, 5}));
  w.assign({});
  w.add(1.5);
  EXPECT_EQ(w.value(0.0), 1.5);
}

TEST(MedianMeter, LeavesTheFirstValueOutWhenThereAreMore) {
  train::MedianMeter m;
  EXPECT_EQ(m.value(), 0.0);
  m.add(100);  // alone, the first value is the median
  EXPECT_EQ(m.value(), 100.0);
  m.add(3);
  EXPECT_EQ(m.value(), 3.0);
  m.add(1);
  m.add(2);  // {3, 1, 2} without the 100
  EXPECT_EQ(m.value(), 2.0);
  m.add(4);  // {3, 1, 2, 4}: the mean of the middle two
  EXPECT_EQ(m.value(), 2.5);
  EXPECT_EQ(m.count(), 5);
  m.reset();
  EXPECT_EQ(m.value(), 0.0);
}

TEST(TimeMeter, CountsFromItsOffset) {
  // Generous: a loaded machine may stall the thread, never run the clock backwards.
  constexpr double kMaxSeconds = 60;
  train::TimeMeter t;
  t.reset(5.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const double v = t.value();
  EXPECT_GE(v, 5.002);
  EXPECT_LT(v, 5.0 + kMaxSeconds);
  EXPECT_GE(t.value(), v);
  t.reset();
  EXPECT_LT(t.value(), v);
}

}  // namespace
}  // namespace lowrank
