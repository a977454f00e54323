#pragma once
// Meters: small accumulators the training loop adds to each step and reads when it reports, after
// flashlight's fl/meter (AverageValueMeter, TimeMeter). Each owns its sums; none knows what it
// measures.
//
//   AverageMeter  mean of the values since the last reset (a metrics row's loss and step time)
//   WindowMeter   mean of the last `capacity` values (the final training loss)
//   MedianMeter   median of every value but the first (steady-state step timings)
//   TimeMeter     seconds since the last reset, plus an offset (time before a resumed run)
#include <chrono>
#include <cstdint>
#include <deque>
#include <vector>

namespace lowrank {
namespace train {

/// Mean of the values added since the last reset.
class AverageMeter {
 public:
  AverageMeter() = default;
  /// A meter that has already seen `count` values summing to `sum` (a checkpoint's).
  AverageMeter(double sum, int64_t count);

  void add(double value);
  /// sum / count, added in order; `if_empty` when nothing was added.
  double value(double if_empty) const;
  double sum() const { return sum_; }
  int64_t count() const { return count_; }
  void reset();

 private:
  double sum_ = 0;
  int64_t count_ = 0;
};

/// Mean of the last `capacity` values added.
class WindowMeter {
 public:
  /// `capacity` >= 1.
  explicit WindowMeter(int64_t capacity);

  /// Appends `value`, dropping the oldest one when the window is then over capacity.
  void add(double value);
  /// Mean of the window, summed oldest first; `if_empty` when it is empty.
  double value(double if_empty) const;
  /// The window, oldest first.
  std::vector<double> values() const { return {values_.begin(), values_.end()}; }
  /// Replaces the window with `values` as they are (a checkpoint's). A window longer than the
  /// capacity (written by a run with a larger metrics_every) is kept whole, and each add() drops
  /// one value, as the trainer always did.
  void assign(const std::vector<double>& values);
  int64_t capacity() const { return capacity_; }
  void reset() { values_.clear(); }

 private:
  int64_t capacity_;
  std::deque<double> values_;
};

/// Median of the values added, the first left out when there are more: the first step pays
/// one-off costs (allocation, warm-start draws, thread start).
class MedianMeter {
 public:
  void add(double value) { values_.push_back(value); }
  /// The median (util/stats.h: the mean of the two middle values for an even count); 0 when empty.
  double value() const;
  int64_t count() const { return static_cast<int64_t>(values_.size()); }
  void reset() { values_.clear(); }

 private:
  std::vector<double> values_;
};

/// Wall-clock seconds since the last reset, plus the offset given to it.
class TimeMeter {
 public:
  using Clock = std::chrono::steady_clock;
  TimeMeter() { reset(); }

  /// Restarts the clock now, counting from `offset_seconds`.
  void reset(double offset_seconds = 0);
  double value() const;

 private:
  Clock::time_point start_;
  double offset_ = 0;
};

}  // namespace train
}  // namespace lowrank
