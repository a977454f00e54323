#pragma once
// The reducer's per-parameter decision (compressed or dense, and why) and the traffic it implies,
// as pure functions of the parameters' names and shapes, the compressor and the ReducerOptions.
// GradientReducer decides with decide_compression() itself, so `lowrank inspect` (which calls
// plan_compression() without building a reducer, a communicator or a dataset) can never disagree
// with a training run. Traffic is counted in bytes, as the reducer counts it (ReducerStats): the
// bytes handed to the communicator, an fp64 element counting 8.
//
//   auto model = models::make_model("cnn", data::input_spec("fashion-mnist"), 0);
//   auto plan = plan_compression(named_parameters, *make_compressor("powersgd", {{"rank", "4"}}), ReducerOptions());
//   plan.bytes_sent_per_step == reducer.stats().bytes_sent after its first reduce()
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/compressor.h"

namespace lowrank {

struct ReducerOptions;

/// Why a parameter is compressed or sent dense (the reducer's rules, in the order it applies them).
enum class CompressionReason {
  kCompressed,              ///< ndim >= 2 (any ndim for elementwise methods), no uncompressed_names match,
                            ///< 4·m·n > ρ·c (not asked of elementwise methods)
  kCompressorDense,         ///< the compressor compresses nothing (none, noop)
  kOneDim,                  ///< ndim < 2 (biases, norms): always dense
  kUncompressedName,        ///< the name matches an uncompressed_names pattern
  kSizeRule,                ///< m·n <= ρ·c: compressing would not save enough
};

/// Short machine name: "compressed", "compressor_dense", "one_dim", "uncompressed_name", "size_rule".
std::string reason_name(CompressionReason r);

struct CompressionDecision {
  bool compressed = false;
  CompressionReason reason = CompressionReason::kCompressorDense;
  int64_t m = 0, n = 0;      ///< matrix view [size(0), numel/size(0)] for ndim >= 2; [1, numel] for an elementwise
                             ///< method's smaller tensors; 0 × 0 otherwise
  double size_rule_bytes = 0; ///< c = compressor.size_test_bytes(m, n) where the size rule was evaluated, else 0
  std::string matched_pattern;  ///< the uncompressed_names pattern that matched (kUncompressedName)
};

/// Whether `name` contains one of `patterns` as a substring or matches it as a regex (an invalid
/// regex means substring only). Returns the first matching pattern, or nullptr.
const std::string* matching_pattern(const std::string& name, const std::vector<std::string>& patterns);

/// The reducer's rule for one parameter (GradientReducer's constructor calls exactly this).
CompressionDecision decide_compression(const std::string& name, at::IntArrayRef shape, const Compressor& compressor,
                                       const ReducerOptions& options);

/// One parameter in a plan.
struct PlannedParam {
  std::string name;
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::kFloat;  ///< the parameter's dtype (the reducer works in fp64 for fp64, fp32 otherwise)
  int64_t numel = 0;
  CompressionDecision decision;
  int64_t dense_bytes = 0;  ///< what a dense mean all-reduce hands over per step
  int64_t bytes = 0;        ///< what the reducer hands over for it at the plan's step
  double mean_bytes = 0;    ///< mean of that over the plan's window of steps
};

struct CompressionPlan {
  std::vector<PlannedParam> params;
  int64_t step = 0;        ///< the training step t counted (0-based; t < start_iter is dense warm-up)
  int64_t mean_steps = 1;  ///< window t .. t + mean_steps − 1 of the means
  bool warm_up = false;    ///< t < start_iter: every parameter travels dense this step
  bool communicates = true;  ///< false for noop: nothing is sent
  int64_t dense_bytes_per_step = 0;  ///< Σ dense_bytes (ReducerStats::dense_bytes per step)
  int64_t bytes_sent_per_step = 0;   ///< Σ bytes at `step` (ReducerStats::last_bytes_sent of that step)
  double mean_bytes_sent_per_step = 0;  ///< Σ mean_bytes: restart/refresh steps averaged in
  int64_t compressed_tensors = 0, compressed_numel = 0, numel = 0;
  std::vector<std::string> unmatched_uncompressed_names;  ///< patterns that match no parameter
  /// dense / sent at `step`; 0 when nothing is sent (as ReducerStats).
  double compression_ratio() const;
  /// dense / mean sent over the window: the ratio summary.json reports for a run of that many
  /// compressed steps.
  double mean_compression_ratio() const;
};

/// The plan for `params` (in the reducer's order): every decision and the bytes handed over at
/// training step `step` and on average over steps step .. step + mean_steps − 1.
CompressionPlan plan_compression(const std::vector<std::pair<std::string, at::Tensor>>& params,
                                 const Compressor& compressor, const ReducerOptions& options, int64_t step = 0,
                                 int64_t mean_steps = 1);

}  // namespace lowrank
