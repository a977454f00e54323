#pragma once
// ResNet18: `lowrank train --model resnet18`, the CIFAR variant of He et al. (2016) used by the
// PowerSGD paper (Vogels et al. 2019):
//   stem:   conv 3×3 stride 1 (C -> 64, no bias), BatchNorm, ReLU; no max-pool
//   layer1..layer4: two BasicBlocks each, widths 64, 128, 256, 512, first strides 1, 2, 2, 2
//           BasicBlock: conv3×3(stride) BN ReLU conv3×3 BN, + shortcut, ReLU; the shortcut is a
//           1×1 conv (stride) + BN where the stride or width changes, the identity otherwise
//   head:   global average pool, fc 512 -> classes (with bias)
// Input channels and classes come from the dataset. On Fashion-MNIST (1×28×28, 10 classes):
// 11 172 810 parameters in 62 tensors. Convolutions are initialized Kaiming-normal (fan_out,
// ReLU), BatchNorm weights 1 and biases 0, the classifier as PyTorch's Linear.
//
// BatchNorm running statistics are buffers, not parameters: the reducer does not average them,
// so each rank keeps its own (as PyTorch DDP with broadcast_buffers=false).
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <memory>

#include "lowrank/models/classifier.h"

namespace lowrank {
namespace models {

class BasicBlock : public torch::nn::Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential shortcut_{nullptr};  // empty: identity
};

class ResNet18 : public Classifier {
 public:
  ResNet18(int64_t in_channels, int64_t classes);
  at::Tensor forward(at::Tensor x) override;
  /// Kaiming-normal convolutions, BatchNorm (1, 0), Linear U(±1/sqrt(fan_in)); from `seed` alone.
  void init(uint64_t seed);

 private:
  int64_t in_channels_;
  torch::nn::Conv2d stem_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
  torch::nn::Sequential layers_[4] = {nullptr, nullptr, nullptr, nullptr};  // "layer1".."layer4", blocks "0", "1"
  torch::nn::Linear fc_{nullptr};
};

}  // namespace models
}  // namespace lowrank
