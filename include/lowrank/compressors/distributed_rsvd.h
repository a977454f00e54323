#pragma once
// The distributed randomized SVD step (docs/algorithms.md §3.3): a rank-k compression of the mean
// Δ̄ of every group whose every product is an all-reduced local one, so Δ̄ is never formed. PowerSGD+
// restarts with it (restart=rsvd_dist) and PowerSGD's rank=auto measures its spectrum with it
// (auto_rank.h). With ℓ = width, q = power_iters, Ω = shared N(0,1) [n, ℓ] (Stream::kSketch):
//   Y = orth(AR_sum(Δ_i Ω))                                          // m·ℓ
//   q times: Z = orth(AR_sum(Δ_iᵀ Y)); Y = orth(AR_sum(Δ_i Z))       // n·ℓ + m·ℓ
//   B = AR_sum(Yᵀ Δ_i) / W                                           // ℓ·n; B = Yᵀ Δ̄
//   Ũ = top_left_singular_vectors(B, k);  P̃ = Y Ũ;  Q = Bᵀ Ũ  (= Δ̄ᵀP̃, no all-reduce)
//   e_i = Δ_i − P̃ P̃ᵀ Δ_i;  ĝ = P̃ Qᵀ;  state "Q" = Q
// Wire per matrix: (q+1)·ℓ·(m+n) elements of the working dtype in 2q+2 collectives. orth is a
// Householder QR, like the range finder of linalg/svd.h.
//
// Measuring the spectrum (rank=auto, auto_rank.h) adds p = kEnergyProbes columns Ω' (shared N(0,1)
// [n, p], Stream::kEnergyProbe, independent of Ω) to the first collective: AR_sum(Δ_i [Ω | Ω']),
// p·m elements more. The singular values of B are those of Δ̄ within the range Y; the energy Y
// leaves out is estimated from the probes, unbiased because Ω' is independent of Y:
//   ‖Δ̄‖² ≈ ‖B‖² + ‖(I − YYᵀ) Δ̄Ω'‖² / p
// exact when Y holds Δ̄'s whole range (a gradient of rank ≤ ℓ).
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "lowrank/compressors/compressor.h"

namespace lowrank {

/// Probe columns of the energy estimate (above).
constexpr int64_t kEnergyProbes = 8;

/// What the sketch saw of Δ̄, per group: σ_j² of B [b, ℓ] (descending), and the estimate of ‖Δ̄‖_F² [b] above.
struct SketchSpectrum {
  at::Tensor sq_singular;
  at::Tensor energy;
};

/// One step of the above on every group, with k[i] and width[i] (k ≤ ℓ ≤ min(m, n)) per group. Writes
/// out and residual, stores state "Q" [b, n, k], and returns P̃ [b, m, k] per group. `spectrum`, when
/// given, receives what the sketch saw (and the first collective carries the energy probes).
std::vector<at::Tensor> distributed_rsvd_step(std::vector<ShapeGroup>& groups, const StepContext& ctx,
                                              const std::vector<int64_t>& k, const std::vector<int64_t>& width,
                                              int64_t power_iters, std::vector<SketchSpectrum>* spectrum = nullptr);

/// The elements one m×n matrix hands over: (q+1)·ℓ·(m+n), plus kEnergyProbes·m when measuring.
inline int64_t distributed_rsvd_elements(int64_t m, int64_t n, int64_t width, int64_t power_iters, bool measuring) {
  return (power_iters + 1) * width * (m + n) + (measuring ? kEnergyProbes * m : 0);
}

}  // namespace lowrank
