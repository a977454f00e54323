#include "lowrank/models/cnn.h"

#include <c10/util/Exception.h>

namespace lowrank {
namespace models {

void CnnOptions::validate() const {
  TORCH_CHECK(in_channels() >= 1, "CnnOptions: in_channels must be >= 1, got ", in_channels());
  TORCH_CHECK(height() >= 4 && width() >= 4, "CnnOptions: height and width must be >= 4 (two 2x2 poolings), got ",
              height(), "x", width());
  TORCH_CHECK(classes() >= 2, "CnnOptions: classes must be >= 2, got ", classes());
  TORCH_CHECK(conv1_channels() >= 1, "CnnOptions: conv1_channels must be >= 1, got ", conv1_channels());
  TORCH_CHECK(conv2_channels() >= 1, "CnnOptions: conv2_channels must be >= 1, got ", conv2_channels());
  TORCH_CHECK(kernel() >= 1 && kernel() % 2 == 1, "CnnOptions: kernel must be odd and >= 1, got ", kernel());
  TORCH_CHECK(hidden() >= 1, "CnnOptions: hidden must be >= 1, got ", hidden());
}

std::ostream& operator<<(std::ostream& os, const CnnOptions& o) {
  return os << "cnn(" << o.in_channels() << "x" << o.height() << "x" << o.width() << " conv" << o.kernel() << "x"
            << o.kernel() << ":" << o.conv1_channels() << "," << o.conv2_channels() << " fc:" << o.hidden() << ","
            << o.classes() << ")";
}

Cnn::Cnn(CnnOptions options) : options_(std::move(options)) {
  options_.validate();
  const auto& o = options_;
  auto conv = [&](int64_t in, int64_t out) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, o.kernel()).padding(o.kernel() / 2));
  };
  conv1_ = register_module("conv1", conv(o.in_channels(), o.conv1_channels()));
  conv2_ = register_module("conv2", conv(o.conv1_channels(), o.conv2_channels()));
  const int64_t flat = o.conv2_channels() * (o.height() / 2 / 2) * (o.width() / 2 / 2);
  fc1_ = register_module("fc1", torch::nn::Linear(flat, o.hidden()));
  fc2_ = register_module("fc2", torch::nn::Linear(o.hidden(), o.classes()));
}

at::Tensor Cnn::forward(at::Tensor x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels() && x.size(2) == options_.height() &&
                  x.size(3) == options_.width(),
              "Cnn: expected input [B, ", options_.in_channels(), ", ", options_.height(), ", ", options_.width(),
              "], got ", x.sizes());
  x = at::max_pool2d(at::relu(conv1_->forward(x)), {2, 2});
  x = at::max_pool2d(at::relu(conv2_->forward(x)), {2, 2});
  x = at::relu(fc1_->forward(x.flatten(1)));
  return fc2_->forward(x);
}

}  // namespace models
}  // namespace lowrank
