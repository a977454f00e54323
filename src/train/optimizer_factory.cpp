#include "lowrank/train/optimizer_factory.h"

#include <c10/util/Exception.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <sstream>

#include "lowrank/util/choices.h"

namespace lowrank {
namespace train {

std::vector<std::string> optimizer_names() { return {"sgd", "adam", "adamw"}; }

void check_optimizer_name(const std::string& name) { check_choice("optimizer", name, optimizer_names()); }

double default_lr(const std::string& name) {
  check_optimizer_name(name);
  return name == "sgd" ? 0.05 : 1e-3;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, std::vector<at::Tensor> params,
                                                        double lr, double momentum, double weight_decay) {
  check_optimizer_name(name);
  TORCH_CHECK(std::isfinite(lr) && lr > 0, "optimizer '", name, "': lr must be a finite number > 0, got ", lr);
  TORCH_CHECK(momentum >= 0 && momentum < 1, "optimizer '", name, "': momentum must lie in [0, 1), got ", momentum);
  TORCH_CHECK(std::isfinite(weight_decay) && weight_decay >= 0, "optimizer '", name,
              "': weight_decay must be a finite number >= 0, got ", weight_decay);
  if (name == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(weight_decay));
  if (name == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(lr).betas({momentum, 0.999}).weight_decay(weight_decay));
  return std::make_unique<torch::optim::AdamW>(
      params, torch::optim::AdamWOptions(lr).betas({momentum, 0.999}).weight_decay(weight_decay));
}

}  // namespace train
}  // namespace lowrank
