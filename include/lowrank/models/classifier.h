#pragma once
// Classifier: the interface of every model `lowrank train` can build (include/lowrank/models/model_factory.h).
#include <torch/nn/module.h>

#include <cstdint>

namespace lowrank {
namespace models {

/// Shape of one input example and the number of classes.
struct InputSpec {
  int64_t channels = 1;
  int64_t height = 28;
  int64_t width = 28;
  int64_t classes = 10;
};

class Classifier : public torch::nn::Module {
 public:
  /// x: [B, C, H, W] fp32 -> logits [B, classes].
  virtual at::Tensor forward(at::Tensor x) = 0;
};

}  // namespace models
}  // namespace lowrank
