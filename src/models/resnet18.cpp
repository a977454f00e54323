#include "lowrank/models/resnet18.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <cmath>
#include <string>

namespace lowrank {
namespace models {
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

}  // namespace

BasicBlock::BasicBlock(int64_t in, int64_t out, int64_t stride) {
  conv1_ = register_module("conv1", conv(in, out, 3, stride));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(out));
  conv2_ = register_module("conv2", conv(out, out, 3, 1));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(out));
  shortcut_ = register_module("shortcut", torch::nn::Sequential());
  if (stride != 1 || in != out) {
    shortcut_->push_back(conv(in, out, 1, stride));
    shortcut_->push_back(torch::nn::BatchNorm2d(out));
  }
}

at::Tensor BasicBlock::forward(const at::Tensor& x) {
  at::Tensor y = at::relu(bn1_->forward(conv1_->forward(x)));
  y = bn2_->forward(conv2_->forward(y));
  return at::relu(y + (shortcut_->is_empty() ? x : shortcut_->forward(x)));
}

ResNet18::ResNet18(int64_t in_channels, int64_t classes) : in_channels_(in_channels) {
  TORCH_CHECK(in_channels >= 1, "ResNet18: in_channels must be >= 1, got ", in_channels);
  TORCH_CHECK(classes >= 2, "ResNet18: classes must be >= 2, got ", classes);
  stem_ = register_module("conv1", conv(in_channels, 64, 3, 1));
  bn_ = register_module("bn1", torch::nn::BatchNorm2d(64));
  int64_t in = 64;
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int layer = 0; layer < 4; ++layer) {
    layers_[layer] = register_module("layer" + std::to_string(layer + 1), torch::nn::Sequential());
    for (int b = 0; b < 2; ++b) {
      const int64_t stride = (layer > 0 && b == 0) ? 2 : 1;
      layers_[layer]->push_back(std::make_shared<BasicBlock>(in, widths[layer], stride));
      in = widths[layer];
    }
  }
  fc_ = register_module("fc", torch::nn::Linear(512, classes));
}

at::Tensor ResNet18::forward(at::Tensor x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == in_channels_ && x.size(2) >= 8 && x.size(3) >= 8,
              "ResNet18: expected input [B, ", in_channels_, ", H >= 8, W >= 8], got ", x.sizes());
  x = at::relu(bn_->forward(stem_->forward(x)));
  for (auto& layer : layers_) x = layer->forward(x);
  x = at::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return fc_->forward(x);
}

void ResNet18::init(uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_modules()) {
    torch::nn::Module& m = *item.value();
    if (auto* c = m.as<torch::nn::Conv2d>()) {
      const auto& w = c->weight;
      const double fan_out = double(w.size(0) * w.size(2) * w.size(3));
      w.normal_(0.0, std::sqrt(2.0 / fan_out), gen);
    } else if (auto* bn = m.as<torch::nn::BatchNorm2d>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    } else if (auto* l = m.as<torch::nn::Linear>()) {
      const double bound = 1.0 / std::sqrt(double(l->weight.size(1)));
      l->weight.uniform_(-bound, bound, gen);
      l->bias.uniform_(-bound, bound, gen);
    }
  }
}

}  // namespace models
}  // namespace lowrank
