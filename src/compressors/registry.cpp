#include "lowrank/compressors/registry.h"

#include <c10/util/Exception.h>

#include <sstream>

#include "lowrank/compressors/none.h"
#include "lowrank/compressors/powersgd.h"

namespace lowrank {

const std::vector<CompressorInfo>& compressor_registry() {
  static const std::vector<CompressorInfo> registry = {
      {"none", "dense mean all-reduce (baseline); m*n floats per matrix", NoCompression::create},
      {"powersgd",
       "PowerSGD (Vogels et al. 2019): rank-r power step, warm start, EF; k(m+n) floats per matrix "
       "(alternating mode: k*n or k*m)",
       PowerSgd::create},
  };
  return registry;
}

std::vector<std::string> compressor_names() {
  std::vector<std::string> names;
  for (const auto& c : compressor_registry()) names.push_back(c.name);
  return names;
}

std::unique_ptr<Compressor> make_compressor(const std::string& name, const Config& config) {
  for (const auto& c : compressor_registry()) {
    if (c.name == name) {
      auto compressor = c.create(config);
      config.check_all_used("compressor '" + name + "'");
      return compressor;
    }
  }
  std::ostringstream valid;
  for (const auto& n : compressor_names()) valid << (valid.tellp() > 0 ? ", " : "") << n;
  TORCH_CHECK(false, "unknown compressor '", name, "'; valid: ", valid.str());
}

}  // namespace lowrank
