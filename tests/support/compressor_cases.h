#pragma once
// The compressors with per-parameter state, in configurations whose steps differ (restarts,
// refreshes, the alternating mode) within a few steps, the low-rank ones with quantized factors, the
// elementwise baselines (casts, sparsifiers, quantizers) and the dense baseline: what tests that must
// hold "for every compressor" iterate over.
#include <string>
#include <vector>

#include "lowrank/util/config.h"

namespace lowrank {
namespace testing {

struct CompressorCase {
  std::string compressor;
  Config config;
};

/// Every low-rank compressor at rank 2; the refreshing ones refresh (restart) at s = 0, 2, 4, ...
/// (GreedyLore without its dense warm-up and with refresh_input=corrected, under which error feedback
/// telescopes; compressor_cases() adds it at its default discard refresh, with a warm-up).
inline std::vector<CompressorCase> low_rank_cases() {
  return {
      {"powersgd", {{"rank", "2"}}},
      {"powersgd", {{"rank", "2"}, {"powersgd_mode", "alternating"}}},
      {"powersgd+", {{"rank", "2"}, {"restart_period", "2"}}},
      {"greedylore", {{"rank", "2"}, {"refresh_period", "2"}, {"dense_steps", "0"}, {"refresh_input", "corrected"}, {"probes", "2"}}},
      {"galore", {{"rank", "2"}, {"refresh_period", "2"}}},
  };
}

inline std::vector<CompressorCase> compressor_cases() {
  std::vector<CompressorCase> cases = low_rank_cases();
  const std::vector<CompressorCase> more = {
      {"powersgd", {{"rank", "2"}, {"factor_dtype", "bf16"}}},
      {"powersgd", {{"rank", "2"}, {"powersgd_mode", "alternating"}, {"factor_dtype", "int8"}}},
      {"powersgd+", {{"rank", "2"}, {"restart_period", "2"}, {"factor_dtype", "fp16"}}},
      {"greedylore", {{"rank", "2"}, {"refresh_period", "2"}, {"dense_steps", "1"}, {"factor_dtype", "int8"}}},
      {"galore", {{"rank", "2"}, {"refresh_period", "2"}, {"factor_dtype", "bf16"}}},
      {"fp16", {}},
      {"bf16", {}},
      {"topk", {{"density", "0.1"}}},
      {"randomk", {{"density", "0.1"}}},
      {"randomk", {{"density", "0.1"}, {"scaled", "true"}}},
      {"qsgd", {{"levels", "1"}, {"bucket_size", "10"}}},
      {"signsgd", {}},
      {"none", {}},
  };
  cases.insert(cases.end(), more.begin(), more.end());
  return cases;
}

}  // namespace testing
}  // namespace lowrank
