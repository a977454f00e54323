#pragma once
// ErrorFeedback: the whole error-feedback rule of the reducer (docs/algorithms.md §1.4), in one place.
//
//   Δ_i = g_i + e_i                       what a rank compresses (compressed matrices; with the
//                                         global residual also the dense tensors)
//   r_i = Δ_i − C_i(Δ_i)   (local)        or r_i = Δ_i − ĝ (global, as PyTorch's hook)
//   e_i ← r_i              (EF14, β = 0)  or e_i ← β·e_i + (1−β)·r_i (EMA, 0 < β < 1)
//   e_i ← 0                               on steps where the compressor's algorithm says so
//                                         (Compressor::resets_error_feedback: GreedyLore's refresh)
//
// Warm-up steps (t < start_iter) are plain means and keep no error. Two ways to run the rule on a
// compressed group, chosen once per reducer:
//   in place  EF on, local residual, β = 0, Compressor::Traits::in_place_residual: Δ_i is formed inside
//             the error buffer E (E += G; by the compressor, in its first pass over Δ_i, where
//             Compressor::Traits::fuses_delta says it can), the compressor overwrites it with r_i, and ĝ
//             is written straight into the gradient buffer G. No scratch buffer, no copy.
//   general   Δ_i goes to a scratch buffer D, the compressor writes r_i into R and ĝ into O, and
//             update() applies the rule; G ← O. Scratch buffers are allocated once.
#include <ATen/ATen.h>

#include "lowrank/compressors/compressor.h"

namespace lowrank {


class ErrorFeedback {
 public:
  ErrorFeedback(bool on, bool global_residual, double beta);

  bool on() const { return on_; }
  bool global_residual() const { return global_; }
  double beta() const { return beta_; }
  /// Dense tensors keep an error buffer too (global residual).
  bool dense() const { return on_ && global_; }
  /// Whether compressed groups of `c` run in place (see above).
  bool in_place(const Compressor::Traits& c) const;

  /// In place: E ← G + E (= Δ); the compressor then writes r into E.
  void form_delta_in_place(const at::Tensor& G, at::Tensor& E) const;
  /// In place, after the compressor: E ← 0 on reset steps (E already holds r otherwise).
  void finish_in_place(at::Tensor& E, bool reset) const;

  /// General: D ← G + E when on, D ← G when off.
  void form_delta(const at::Tensor& G, const at::Tensor& E, at::Tensor& D) const;
  /// General, after the compressor wrote R (local residual) and O (ĝ): the rule above on E; R is
  /// used as scratch.
  void update(at::Tensor& E, at::Tensor& R, const at::Tensor& D, const at::Tensor& O, bool reset) const;

  /// Dense tensors under the global residual, before their all-reduce: G ← Δ / W, with Δ kept in E
  /// (β = 0) or in the scratch S (β > 0).
  void dense_before(at::Tensor& G, at::Tensor& E, at::Tensor& S, int world) const;
  /// After the all-reduce left the mean in G: E ← rule(Δ − mean).
  void dense_after(const at::Tensor& G, at::Tensor& E, at::Tensor& S) const;

 private:
  bool on_, global_;
  double beta_;
};

}  // namespace lowrank
