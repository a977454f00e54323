#pragma once
// The model registry: name -> Classifier, feeding `lowrank train --help` and its error messages.
//
// make_model() initializes every parameter (resnet18: its own scheme, include/lowrank/models/resnet18.h) from its own CPU generator seeded with `seed`
// (uniform in ±1/sqrt(fan_in), PyTorch's default bound for Linear and Conv layers), so the same
// seed gives bit-identical weights in every process and thread, whatever else uses torch's
// global generator.
#include <memory>
#include <string>
#include <vector>

#include "lowrank/models/classifier.h"

namespace lowrank {
namespace models {

/// Registered model names ("mlp", "cnn", "resnet18").
std::vector<std::string> model_names();
/// Throws listing the valid names when `name` is not registered.
void check_model_name(const std::string& name);
/// A freshly initialized `name` for inputs `spec`.
std::shared_ptr<Classifier> make_model(const std::string& name, const InputSpec& spec, uint64_t seed);
/// Re-draws every parameter of `module` in parameter order: a weight with fan_in = numel/size(0)
/// gets U(±1/sqrt(fan_in)), and a bias that follows it the same bound.
void init_parameters(torch::nn::Module& module, uint64_t seed);

}  // namespace models
}  // namespace lowrank
