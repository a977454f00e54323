#pragma once
// Small summaries of timing samples, shared by the trainer, the benchmarks and the reports.
#include <algorithm>
#include <vector>

namespace lowrank {

/// The median of `v` (the mean of the two middle values when their count is even); `if_empty` when
/// there are none.
inline double median(std::vector<double> v, double if_empty = 0.0) {
  if (v.empty()) return if_empty;
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + h, v.end());
  const double upper = v[h];
  if (v.size() % 2 == 1) return upper;
  return 0.5 * (upper + *std::max_element(v.begin(), v.begin() + h));
}

}  // namespace lowrank
