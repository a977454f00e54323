#pragma once
// The dataset registry: name -> loader, feeding `lowrank train --help` and its error messages.
#include <string>
#include <vector>

#include "lowrank/data/dataset.h"
#include "lowrank/data/text_corpus.h"

namespace lowrank {
namespace data {

/// Registered dataset names ("fashion-mnist", "kjv", "text").
std::vector<std::string> dataset_names();
/// Throws listing the valid names when `name` is not registered.
void check_dataset_name(const std::string& name);
/// Where `name` is read from when no directory is given.
std::string default_data_dir(const std::string& name);
/// Whether `name` is text (token windows for a language model) rather than labelled images.
bool is_text_dataset(const std::string& name);
/// Loads `split` of `name` from `dir` ("" = default_data_dir(name)); `text` configures the
/// tokenizer and windows of text datasets (ignored for images).
Dataset load_dataset(const std::string& name, const std::string& dir, Split split, const TextOptions& text = {});

}  // namespace data
}  // namespace lowrank
