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
#include "lowrank/models/llama.h"

namespace lowrank {
namespace models {

/// Registered model names ("mlp", "cnn", "resnet18", "llama").
std::vector<std::string> model_names();
/// Throws listing the valid names when `name` is not registered.
void check_model_name(const std::string& name);
/// Whether `name` reads token ids (a language model) rather than images.
bool is_language_model(const std::string& name);

/// The language model's size: a preset (llama_preset_names()) and overrides; 0 = the preset's.
struct ModelSize {
  std::string preset = "tiny";
  int64_t layers = 0;
  int64_t width = 0;
  int64_t heads = 0;
  int64_t seq_len = 0;
};
/// The options `make_model("llama", spec, …, size)` builds: the preset with the overrides, the
/// vocabulary from spec.classes and seq_len from spec.sequence_length when it is set.
LlamaOptions llama_options(const InputSpec& spec, const ModelSize& size);

/// A freshly initialized `name` for inputs `spec` (`size` is read by language models only).
std::shared_ptr<Classifier> make_model(const std::string& name, const InputSpec& spec, uint64_t seed,
                                       const ModelSize& size = {});
/// Σ numel over the parameters of `module`.
int64_t parameter_count(const torch::nn::Module& module);
/// Re-draws every parameter of `module` in parameter order: a weight with fan_in = numel/size(0)
/// gets U(±1/sqrt(fan_in)), and a bias that follows it the same bound.
void init_parameters(torch::nn::Module& module, uint64_t seed);

}  // namespace models
}  // namespace lowrank
