#pragma once
// Cnn: the small convolutional net of `lowrank train --model cnn`:
//   conv1 (C -> c1, k×k, same padding) ReLU maxpool 2×2
//   conv2 (c1 -> c2, k×k, same padding) ReLU maxpool 2×2
//   fc1 (c2·⌊H/4⌋·⌊W/4⌋ -> hidden) ReLU, fc2 (hidden -> classes)
// On Fashion-MNIST at the defaults: 215 370 parameters; conv1.weight [16,1,5,5] (viewed 16×25),
// conv2.weight [32,16,5,5] (32×400), fc1.weight [128,1568], fc2.weight [10,128].
//
// Example:
//   auto net = std::make_shared<Cnn>(CnnOptions(1, 28, 28, 10).conv1_channels(32));
#include <torch/arg.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <ostream>

#include "lowrank/models/classifier.h"

namespace lowrank {
namespace models {

struct CnnOptions {
  CnnOptions(int64_t in_channels, int64_t height, int64_t width, int64_t classes)
      : in_channels_(in_channels), height_(height), width_(width), classes_(classes) {}
  /// Input channels, height and width; output classes. No defaults.
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, height);
  TORCH_ARG(int64_t, width);
  TORCH_ARG(int64_t, classes);
  /// Output channels of the first convolution. Default 16.
  TORCH_ARG(int64_t, conv1_channels) = 16;
  /// Output channels of the second convolution. Default 32.
  TORCH_ARG(int64_t, conv2_channels) = 32;
  /// Odd kernel size of both convolutions. Default 5.
  TORCH_ARG(int64_t, kernel) = 5;
  /// Width of the hidden fully connected layer. Default 128.
  TORCH_ARG(int64_t, hidden) = 128;

 public:
  void validate() const;
};
std::ostream& operator<<(std::ostream& os, const CnnOptions& o);

class Cnn : public Classifier {
 public:
  explicit Cnn(CnnOptions options);
  at::Tensor forward(at::Tensor x) override;
  const CnnOptions& options() const { return options_; }

 private:
  CnnOptions options_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

}  // namespace models
}  // namespace lowrank
