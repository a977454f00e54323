#pragma once
// The compressors with per-parameter state, in configurations whose steps differ (restarts,
// refreshes, the alternating mode) within a few steps, plus the dense baseline: what tests that
// must hold "for every compressor" iterate over.
#include <string>
#include <vector>

#include "lowrank/util/config.h"

namespace lowrank {
namespace testing {

struct CompressorCase {
  std::string compressor;
  Config config;
};

inline std::vector<CompressorCase> compressor_cases() {
  return {
      {"powersgd", {{"rank", "2"}}},
      {"powersgd", {{"rank", "2"}, {"powersgd_mode", "alternating"}}},
      {"powersgd+", {{"rank", "2"}, {"restart_period", "2"}}},
      {"greedylore", {{"rank", "2"}, {"refresh_period", "2"}}},
      {"galore", {{"rank", "2"}, {"refresh_period", "2"}}},
      {"none", {}},
  };
}

}  // namespace testing
}  // namespace lowrank
