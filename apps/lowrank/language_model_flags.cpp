#include "language_model_flags.h"

#include <c10/util/Exception.h>

#include "lowrank/util/choices.h"
#include "lowrank/models/model_factory.h"
#include "number_flags.h"

namespace lowrank {
namespace cli {

void add_model_size_flags(CLI::App* sub, train::TrainOptions& o) {
  sub->add_option("--preset", o.model_preset(),
                  "llama size: " + join_names(models::llama_preset_names()) +
                      " (0.9 M, 4.3 M, 12 M, 24 M parameters at 2048 pieces)")
      ->capture_default_str();
  add_integer(sub, "--layers", o.layers(), "llama: transformer blocks (0 = the preset's)", {0, train::kMaxLayers})
      ->capture_default_str();
  add_integer(sub, "--width", o.width(), "llama: model width d (0 = the preset's)", {0, train::kMaxWidth})
      ->capture_default_str();
  add_integer(sub, "--heads", o.heads(), "llama: attention heads (0 = the preset's)", {0, train::kMaxWidth})
      ->capture_default_str();
}

void warn_ignored_language_model_flags(const std::string& model, const std::vector<CLI::Option*>& flags,
                                       std::ostream& out) {
  try {
    models::check_model_name(model);
  } catch (const c10::Error&) {
    return;
  }
  if (models::is_language_model(model)) return;
  std::vector<std::string> given;
  for (const auto* f : flags)
    if (f->count() > 0) given.push_back(f->get_name());
  if (given.empty()) return;
  std::string names;
  for (size_t i = 0; i < given.size(); ++i) names += (i ? ", " : "") + given[i];
  out << "warning: " << names << (given.size() == 1 ? " applies" : " apply")
      << " to language models (--model llama) only; ignored with --model " << model << std::endl;
}

}  // namespace cli
}  // namespace lowrank
