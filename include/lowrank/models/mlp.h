#pragma once
// Mlp: flatten, then Linear+ReLU per hidden width, then a Linear to the class logits.
// Parameters fc1.weight [h1, C·H·W], fc1.bias [h1], ..., fc<L+1>.weight [classes, h_L].
//
// Example:
//   auto net = std::make_shared<Mlp>(MlpOptions(784, 10).hidden({256, 128}));
#include <torch/arg.h>
#include <torch/nn/modules/linear.h>

#include <ostream>
#include <vector>

#include "lowrank/models/classifier.h"

namespace lowrank {
namespace models {

struct MlpOptions {
  MlpOptions(int64_t in_features, int64_t classes) : in_features_(in_features), classes_(classes) {}
  /// Input features (C·H·W). No default.
  TORCH_ARG(int64_t, in_features);
  /// Output classes. No default.
  TORCH_ARG(int64_t, classes);
  /// Hidden layer widths, input side first. Default {256, 128}.
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{256, 128};

 public:
  void validate() const;
};
std::ostream& operator<<(std::ostream& os, const MlpOptions& o);

class Mlp : public Classifier {
 public:
  explicit Mlp(MlpOptions options);
  at::Tensor forward(at::Tensor x) override;
  const MlpOptions& options() const { return options_; }

 private:
  MlpOptions options_;
  std::vector<torch::nn::Linear> layers_;
};

}  // namespace models
}  // namespace lowrank
