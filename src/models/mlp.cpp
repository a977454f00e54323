#include "lowrank/models/mlp.h"

#include <c10/util/Exception.h>

namespace lowrank {
namespace models {

void MlpOptions::validate() const {
  TORCH_CHECK(in_features() >= 1, "MlpOptions: in_features must be >= 1, got ", in_features());
  TORCH_CHECK(classes() >= 2, "MlpOptions: classes must be >= 2, got ", classes());
  for (size_t i = 0; i < hidden().size(); ++i)
    TORCH_CHECK(hidden()[i] >= 1, "MlpOptions: hidden[", i, "] must be >= 1, got ", hidden()[i]);
}

std::ostream& operator<<(std::ostream& os, const MlpOptions& o) {
  os << "mlp(" << o.in_features();
  for (int64_t h : o.hidden()) os << "-" << h;
  return os << "-" << o.classes() << ")";
}

Mlp::Mlp(MlpOptions options) : options_(std::move(options)) {
  options_.validate();
  int64_t in = options_.in_features();
  std::vector<int64_t> widths = options_.hidden();
  widths.push_back(options_.classes());
  for (size_t i = 0; i < widths.size(); ++i) {
    layers_.push_back(register_module("fc" + std::to_string(i + 1), torch::nn::Linear(in, widths[i])));
    in = widths[i];
  }
}

at::Tensor Mlp::forward(at::Tensor x) {
  x = x.flatten(1);
  TORCH_CHECK(x.size(1) == options_.in_features(), "Mlp: expected ", options_.in_features(),
              " input features per example, got ", x.size(1));
  for (size_t i = 0; i + 1 < layers_.size(); ++i) x = at::relu(layers_[i]->forward(x));
  return layers_.back()->forward(x);
}

}  // namespace models
}  // namespace lowrank
