#pragma once
// Random-k sparsification ("randomk"; rand-k of Stich, Cordonnier & Jaggi, "Sparsified SGD with
// Memory", NeurIPS 2018; docs/algorithms.md §6). The positions come from the shared seed (§1.7), so
// every rank keeps the same ones and no position travels.
//
// Elementwise (Compressor::Traits::elementwise): every tensor is compressed, a 0- or 1-dim one viewed
// as [1, numel]. Every member matrix of N = m·n elements keeps k of them (SparseBudget, topk.h):
//   k = option k > 0 ? min(k, N) : max(1, ⌈density·N⌉)
// At compressed step s, every worker i, with Δ_i flattened to N elements:
//   S   = k distinct positions per member, ascending (Floyd's sampling: k draws), the members of a group
//         drawn one after another from shared_generator(seed, s, stream_id(Stream::kPositions,
//         ordinal)), so S is the same on every rank and changes with s (and with batching, which
//         renumbers the groups)
//   v_i = Δ_i[S]                                  // working dtype (fp32, or fp64)
//   α   = scaled ? N/k : 1
//   e_i = Δ_i − C_i(Δ_i), C_i(Δ_i) = α·v_i at S, 0 elsewhere
//   v̄   = AR_sum(v_i) / W                         // ONE all-reduce for all groups (one flat buffer)
//   ĝ   = α·v̄ at S, 0 elsewhere
// scaled = true is the unbiased estimator (E[ĝ] = mean Δ_i over the draw of S; variance
// (N/k − 1)·x² per element x) and runs without error feedback by default; unscaled, rand-k is
// biased towards 0 and runs with error feedback (then Σ ĝ + mean e telescopes, §1.4). Drawing S
// costs O(k log k) per member and step (Floyd's algorithm, then a sort), not O(N).
//
// Wire per matrix (§8): k·elem(work) bytes (k values, no positions): 4k at fp32, 8k at fp64. The
// size rule is not consulted (elementwise); size_test_bytes reports 4k. No state.
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <cstdint>
#include <ostream>

#include "lowrank/compressors/compressor_base.h"
#include "lowrank/compressors/topk.h"  // SparseBudget
#include "lowrank/util/fields.h"

namespace lowrank {

/// Example:
///   RandomK c(RandomKOptions().budget(SparseBudget().k(64)).scaled(true));
///   make_compressor("randomk", Config{{"density", "0.01"}, {"scaled", "true"}});
struct RandomKOptions {
  /// Elements kept per matrix (keys density, k). Default density 0.01, k 0 (use density).
  TORCH_ARG(SparseBudget, budget) = SparseBudget();
  /// Multiply the kept values by N/k (unbiased rand-k); error feedback is then off by default.
  /// Default false.
  TORCH_ARG(bool, scaled) = false;

 public:
  /// The Config keys and operator<< fields, in this order (scaled shown only when true).
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    SparseBudget::fields(o.budget_, v);
    v("scaled", o.scaled_, o.scaled_);
  }
  void validate() const { budget_.validate("randomk"); }
};
inline std::ostream& operator<<(std::ostream& os, const RandomKOptions& o) { return os << render_fields(o); }

class RandomK : public CompressorBase<RandomK, RandomKOptions> {
 public:
  static constexpr const char* kName = "randomk";
  using CompressorBase::CompressorBase;

  Traits traits() const override {
    Traits t;
    t.elementwise = true;
    t.default_error_feedback = !options_.scaled();
    t.in_place_residual = true;  // each group's delta is read (values) before its residual is written
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override;
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;
  /// Unscaled with error feedback: each element travels about once every 1/density steps, so the
  /// error buffer holds most of the gradient back and releases it late. Scaled below density 0.5: the
  /// N/k-scaled values have variance (N/k − 1)·x². Both trained badly where measured (docs/results.md).
  std::vector<std::string> start_warnings(const std::vector<MatrixInfo>& compressed,
                                          bool error_feedback) const override;

  /// k of an m×n matrix.
  int64_t k_of(int64_t m, int64_t n) const { return options_.budget().kept(m * n); }
  /// S of `group` at `step` ([b, k] int64, member j's positions in row j): the same on every rank.
  at::Tensor positions(const ShapeGroup& group, int64_t step, uint64_t seed) const;
};

}  // namespace lowrank
