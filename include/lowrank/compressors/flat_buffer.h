#pragma once
// One flat buffer per collective per step (docs/algorithms.md §1.8): a single contiguous tensor and
// views of the requested shapes into it, in order.
#include <ATen/ATen.h>

#include <vector>

namespace lowrank {

struct FlatBuffer {
  at::Tensor flat;                 ///< 1-D, contiguous, Σ numel(shapes)
  std::vector<at::Tensor> views;   ///< views[i] has shapes[i]

  static FlatBuffer zeros(const std::vector<std::vector<int64_t>>& shapes,
                          at::TensorOptions options = at::kFloat);
};

}  // namespace lowrank
