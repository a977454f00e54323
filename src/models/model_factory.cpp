#include "lowrank/models/model_factory.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <cmath>
#include <sstream>

#include "lowrank/util/choices.h"
#include "lowrank/models/cnn.h"
#include "lowrank/models/mlp.h"
#include "lowrank/models/resnet18.h"

namespace lowrank {
namespace models {

std::vector<std::string> model_names() { return {"mlp", "cnn", "resnet18", "llama"}; }

void check_model_name(const std::string& name) { check_choice("model", name, model_names()); }

bool is_language_model(const std::string& name) { return name == "llama"; }

LlamaOptions llama_options(const InputSpec& spec, const ModelSize& size) {
  LlamaOptions o = llama_preset(size.preset);
  if (size.layers > 0) o.layers(size.layers);
  if (size.width > 0) o.dim(size.width);
  if (size.heads > 0) o.heads(size.heads);
  if (size.seq_len > 0) o.seq_len(size.seq_len);
  if (spec.sequence_length > 0) o.seq_len(spec.sequence_length);
  o.vocab_size(spec.classes);
  return o;
}

std::shared_ptr<Classifier> make_model(const std::string& name, const InputSpec& spec, uint64_t seed,
                                       const ModelSize& size) {
  check_model_name(name);
  std::shared_ptr<Classifier> model;
  if (name == "llama") {
    auto net = std::make_shared<Llama>(llama_options(spec, size));
    net->init(seed);
    return net;
  }
  if (name == "resnet18") {
    auto net = std::make_shared<ResNet18>(spec.channels, spec.classes);
    net->init(seed);
    return net;
  }
  if (name == "mlp") {
    model = std::make_shared<Mlp>(MlpOptions(spec.channels * spec.height * spec.width, spec.classes));
  } else {
    model = std::make_shared<Cnn>(CnnOptions(spec.channels, spec.height, spec.width, spec.classes));
  }
  init_parameters(*model, seed);
  return model;
}

int64_t parameter_count(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

void init_parameters(torch::nn::Module& module, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  double bound = 1.0;
  for (auto& p : module.parameters()) {
    if (p.dim() >= 2) bound = 1.0 / std::sqrt(double(p.numel() / p.size(0)));
    p.uniform_(-bound, bound, gen);
  }
}

}  // namespace models
}  // namespace lowrank
