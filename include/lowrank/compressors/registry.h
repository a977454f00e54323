#pragma once
// The compressor registry: name -> factory, with help text that feeds `lowrank --help`.
// Adding a compressor = one header, one source, one line in src/compressors/registry.cpp.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/compressors/compressor.h"
#include "lowrank/util/config.h"

namespace lowrank {

struct CompressorInfo {
  std::string name;
  std::string help;  ///< one line: what it is, its paper, its wire cost
  std::function<std::unique_ptr<Compressor>(const Config&)> create;
};

/// All registered compressors, in registration order.
const std::vector<CompressorInfo>& compressor_registry();
std::vector<std::string> compressor_names();
/// Creates `name` from `config`; unknown names and unknown/invalid options throw, listing the
/// valid choices.
std::unique_ptr<Compressor> make_compressor(const std::string& name, const Config& config = {});

}  // namespace lowrank
