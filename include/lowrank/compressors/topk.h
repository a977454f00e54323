#pragma once
// Top-k sparsification with error feedback ("topk"; Stich, Cordonnier & Jaggi, "Sparsified SGD with
// Memory", NeurIPS 2018; Aji & Heafield, "Sparse Communication for Distributed Gradient Descent",
// EMNLP 2017; docs/algorithms.md §6).
//
// Elementwise (Compressor::Traits::elementwise): every tensor is compressed, a 0- or 1-dim one viewed
// as [1, numel]. Every member matrix of N = m·n elements keeps k of them (SparseBudget below):
//   k = option k > 0 ? min(k, N) : max(1, ⌈density·N⌉)
// At every compressed step, every worker i, with Δ_i flattened to N elements:
//   S_i = positions of the k largest |Δ_i|        // at::topk per member (row of the [b, N] view)
//   v_i = Δ_i[S_i]                                // k values in the working dtype (fp32, or fp64)
//   e_i = Δ_i with the entries at S_i set to 0    // = Δ_i − C_i(Δ_i), the local residual
//   (v_r, S_r) for every rank r = AG(v_i, S_i)     // ONE all-gather for all groups together
//   ĝ = (Σ_r scatter(v_r at S_r)) / W             // summed in rank order, in the working dtype
// The uint8 buffer a rank hands over holds first the values of every member (groups in order, members
// in order, k each, working dtype), then the int32 positions of every member in the same order. Values
// first keeps each region aligned to its element size, so both decode as views. Every rank decodes
// every rank's buffer in rank order, so ĝ is bit-identical on all ranks.
//
// Wire per matrix (§8): k·elem(work) + 4·k bytes (k values, k int32 positions): 8k at fp32, 12k at
// fp64. The size rule is not consulted (elementwise); size_test_bytes reports 8k. No state.
#include <c10/util/Exception.h>
#include <torch/arg.h>

#include <cstdint>
#include <ostream>

#include "lowrank/compressors/compressor_base.h"
#include "lowrank/util/fields.h"

namespace lowrank {

/// How many elements a sparsifier keeps per matrix; the options topk and randomk share
/// (randomk.h). Config keys "density" and "k".
struct SparseBudget {
  /// Fraction of each matrix's elements kept, in (0, 1]: k = max(1, ⌈density·N⌉). Default 0.01.
  TORCH_ARG(double, density) = 0.01;
  /// Elements kept per matrix (min(k, N)); overrides density when > 0, 0 = use density. Default 0.
  TORCH_ARG(int64_t, k) = 0;

 public:
  /// The Config keys and operator<< fields, in this order (k shown only when set).
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("density", o.density_);
    v("k", o.k_, o.k_ > 0);
  }
  /// Throws "<compressor>: density must be in (0, 1], got 1.5" (and likewise for k < 0).
  void validate(const char* compressor) const;
  /// k of a matrix of `numel` elements: in [1, numel] (0 only when numel is 0). ⌈density·N⌉ forgives
  /// a relative 1e-9 of rounding in density·N, so density 0.07 of 100 elements keeps 7, not 8.
  int64_t kept(int64_t numel) const;
};

/// Example:
///   TopK c(TopKOptions().budget(SparseBudget().density(0.001)));
///   make_compressor("topk", Config{{"density", "0.001"}});  // or {"k", "1000"}
struct TopKOptions {
  /// Elements kept per matrix (keys density, k). Default density 0.01, k 0 (use density).
  TORCH_ARG(SparseBudget, budget) = SparseBudget();

 public:
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    SparseBudget::fields(o.budget_, v);
  }
  void validate() const { budget_.validate("topk"); }
};
inline std::ostream& operator<<(std::ostream& os, const TopKOptions& o) { return os << render_fields(o); }

class TopK : public CompressorBase<TopK, TopKOptions> {
 public:
  static constexpr const char* kName = "topk";
  using CompressorBase::CompressorBase;

  Traits traits() const override {
    Traits t;
    t.elementwise = true;
    t.in_place_residual = true;  // each group's delta is read (top-k, values) before its residual is written
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override;
  int64_t wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const override;
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;

  /// k of an m×n matrix.
  int64_t k_of(int64_t m, int64_t n) const { return options_.budget().kept(m * n); }
};

}  // namespace lowrank
