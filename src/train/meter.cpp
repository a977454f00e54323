#include "lowrank/train/meter.h"

#include <c10/util/Exception.h>

#include "lowrank/util/stats.h"

namespace lowrank {
namespace train {

AverageMeter::AverageMeter(double sum, int64_t count) : sum_(sum), count_(count) {
  TORCH_CHECK(count >= 0, "AverageMeter: count must be >= 0, got ", count);
}

void AverageMeter::add(double value) {
  sum_ += value;
  ++count_;
}

double AverageMeter::value(double if_empty) const { return count_ > 0 ? sum_ / double(count_) : if_empty; }

void AverageMeter::reset() {
  sum_ = 0;
  count_ = 0;
}

WindowMeter::WindowMeter(int64_t capacity) : capacity_(capacity) {
  TORCH_CHECK(capacity >= 1, "WindowMeter: capacity must be >= 1, got ", capacity);
}

void WindowMeter::add(double value) {
  values_.push_back(value);
  if (static_cast<int64_t>(values_.size()) > capacity_) values_.pop_front();
}

double WindowMeter::value(double if_empty) const {
  if (values_.empty()) return if_empty;
  double sum = 0;
  for (double v : values_) sum += v;
  return sum / double(values_.size());
}

void WindowMeter::assign(const std::vector<double>& values) { values_.assign(values.begin(), values.end()); }

double MedianMeter::value() const {
  if (values_.size() <= 1) return median(values_);
  return median(std::vector<double>(values_.begin() + 1, values_.end()));
}

void TimeMeter::reset(double offset_seconds) {
  start_ = Clock::now();
  offset_ = offset_seconds;
}

double TimeMeter::value() const { return offset_ + std::chrono::duration<double>(Clock::now() - start_).count(); }

}  // namespace train
}  // namespace lowrank
