#pragma once
// The optimizer registry of `lowrank train`. Optimizers act after the reducer on ĝ, unmodified,
// with full-size replicated state (docs/algorithms.md §1.10); weight decay is never compressed.
//
//   sgd    torch::optim::SGD  (momentum, L2 weight decay)           default lr 0.05
//   adam   torch::optim::Adam (betas (momentum, 0.999), L2 decay)    default lr 0.001
//   adamw  torch::optim::AdamW (betas (momentum, 0.999), decoupled)  default lr 0.001
#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <vector>

namespace lowrank {
namespace train {

std::vector<std::string> optimizer_names();
/// Throws listing the valid names when `name` is not registered.
void check_optimizer_name(const std::string& name);
/// The learning rate used when none is given.
double default_lr(const std::string& name);
/// `name` over `params`; momentum is SGD's momentum or Adam's beta1.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, std::vector<at::Tensor> params,
                                                        double lr, double momentum, double weight_decay);

}  // namespace train
}  // namespace lowrank
