#pragma once
// Flags that only a language model reads (--preset, --width, --tokenizer, ...), shared by
// `lowrank train` and `lowrank inspect`: the model size flags are declared here once, and any of
// them given with another model, which would silently ignore it, gets a warning.
#include <CLI/CLI.hpp>

#include <ostream>
#include <string>
#include <vector>

#include "lowrank/train/train_options.h"

namespace lowrank {
namespace cli {

/// --preset, --layers, --width and --heads, bound to `o`'s model size.
void add_model_size_flags(CLI::App* sub, train::TrainOptions& o);

/// Writes "warning: --preset, --width apply to language models (--model llama) only; ignored with
/// --model cnn" to `out` when `model` is a valid name of a model that is no language model and any
/// of `flags` was given; nothing otherwise (an invalid name fails later, with its own message).
void warn_ignored_language_model_flags(const std::string& model, const std::vector<CLI::Option*>& flags,
                                       std::ostream& out);

}  // namespace cli
}  // namespace lowrank
