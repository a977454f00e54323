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
  int64_t classes = 10;         ///< classes; for token inputs the vocabulary size
  int64_t sequence_length = 0;  ///< > 0: inputs are token ids [B, T] with T <= sequence_length
};

/// A classifier of images, or of every position's next token (a language model).
class Classifier : public torch::nn::Module {
 public:
  /// x: images [B, C, H, W] fp32 -> logits [B, classes]; or tokens [B, T] int64 -> logits
  /// [B, T, classes]. Either way the loss is the cross-entropy of the last dimension.
  virtual at::Tensor forward(at::Tensor x) = 0;
};

}  // namespace models
}  // namespace lowrank
