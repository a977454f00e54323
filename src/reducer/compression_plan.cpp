#include "lowrank/reducer/compression_plan.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <regex>

#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {

std::string reason_name(CompressionReason r) {
  switch (r) {
    case CompressionReason::kCompressed: return "compressed";
    case CompressionReason::kCompressorDense: return "compressor_dense";
    case CompressionReason::kOneDim: return "one_dim";
    case CompressionReason::kUncompressedName: return "uncompressed_name";
    case CompressionReason::kSizeRule: return "size_rule";
  }
  return "unknown";
}

const std::string* matching_pattern(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (name.find(p) != std::string::npos) return &p;
    try {
      if (std::regex_search(name, std::regex(p))) return &p;
    } catch (const std::regex_error&) {
      // Not a valid regex: substring matching above is all it means.
    }
  }
  return nullptr;
}

CompressionDecision decide_compression(const std::string& name, at::IntArrayRef shape, const Compressor& compressor,
                                       const ReducerOptions& options) {
  CompressionDecision d;
  const Compressor::Traits traits = compressor.traits();
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  if (shape.size() >= 2) {
    d.m = shape[0];
    d.n = numel / std::max<int64_t>(d.m, 1);
  } else if (traits.elementwise) {
    d.m = 1;
    d.n = numel;
  }
  if (!traits.compresses) {
    d.reason = CompressionReason::kCompressorDense;
    return d;
  }
  if (shape.size() < 2 && !traits.elementwise) {
    d.reason = CompressionReason::kOneDim;
    return d;
  }
  if (const std::string* p = matching_pattern(name, options.uncompressed_names())) {
    d.reason = CompressionReason::kUncompressedName;
    d.matched_pattern = *p;
    return d;
  }
  if (traits.elementwise) {
    d.compressed = true;
    d.reason = CompressionReason::kCompressed;
    return d;
  }
  d.size_rule_bytes = compressor.size_test_bytes(d.m, d.n);
  // Dense fp32 bytes against ρ·c (exactly the old floats rule m·n > ρ·c/4: a factor of 4 is exact).
  if (!(4.0 * double(d.m * d.n) > options.min_compression_rate() * d.size_rule_bytes)) {
    d.reason = CompressionReason::kSizeRule;
    return d;
  }
  d.compressed = true;
  d.reason = CompressionReason::kCompressed;
  return d;
}

double CompressionPlan::compression_ratio() const {
  return bytes_sent_per_step > 0 ? double(dense_bytes_per_step) / double(bytes_sent_per_step) : 0.0;
}

double CompressionPlan::mean_compression_ratio() const {
  return mean_bytes_sent_per_step > 0 ? double(dense_bytes_per_step) / mean_bytes_sent_per_step : 0.0;
}

CompressionPlan plan_compression(const std::vector<std::pair<std::string, at::Tensor>>& params,
                                 const Compressor& compressor, const ReducerOptions& options, int64_t step,
                                 int64_t mean_steps) {
  TORCH_CHECK(step >= 0, "plan_compression: step must be >= 0, got ", step);
  TORCH_CHECK(mean_steps >= 1, "plan_compression: mean_steps must be >= 1, got ", mean_steps);
  options.validate();
  CompressionPlan plan;
  plan.step = step;
  plan.mean_steps = mean_steps;
  plan.warm_up = step < options.start_iter();
  plan.communicates = compressor.traits().communicates;
  for (const auto& np : params) {
    PlannedParam p;
    p.name = np.first;
    p.shape = np.second.sizes().vec();
    p.dtype = np.second.scalar_type();
    p.numel = np.second.numel();
    p.decision = decide_compression(p.name, np.second.sizes(), compressor, options);
    // As the reducer: fp64 parameters are reduced in fp64, everything else in fp32.
    const at::ScalarType work = p.dtype == at::kDouble ? at::kDouble : at::kFloat;
    p.dense_bytes = p.numel * static_cast<int64_t>(c10::elementSize(work));
    // Bytes handed over at training step t (see ReductionEngine::reduce_bucket).
    auto bytes_at = [&](int64_t t) -> int64_t {
      if (!compressor.traits().communicates) return 0;
      if (t < options.start_iter() || !p.decision.compressed) return p.dense_bytes;
      return compressor.wire_bytes(p.decision.m, p.decision.n, t - options.start_iter(), work);
    };
    p.bytes = bytes_at(step);
    double sum = 0;
    for (int64_t t = step; t < step + mean_steps; ++t) sum += double(bytes_at(t));
    p.mean_bytes = sum / double(mean_steps);
    plan.dense_bytes_per_step += p.dense_bytes;
    plan.bytes_sent_per_step += p.bytes;
    plan.mean_bytes_sent_per_step += p.mean_bytes;
    plan.numel += p.numel;
    if (p.decision.compressed) {
      plan.compressed_tensors += 1;
      plan.compressed_numel += p.numel;
    }
    plan.params.push_back(std::move(p));
  }
  for (const auto& pattern : options.uncompressed_names()) {
    const std::vector<std::string> one{pattern};
    if (std::none_of(params.begin(), params.end(),
                     [&](const std::pair<std::string, at::Tensor>& np) { return matching_pattern(np.first, one); }))
      plan.unmatched_uncompressed_names.push_back(pattern);
  }
  return plan;
}

}  // namespace lowrank
