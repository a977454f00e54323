#pragma once
// The 2×2 objective and stochastic oracle of Theorem 1 of the PowerSGD+ paper (Xie, Chen, Yuan,
// arXiv:2509.11254, Sec. 3 and Appendix A; docs/algorithms.md §7.1, §7.4).
//
// Paper basis (§7.1), X [2, 2], D = (1, −1)ᵀ, s = DᵀXD = x11 − x12 − x21 + x22:
//   f(X)  = ψ(s),  ψ(x) = x² (|x| ≤ 1), 2|x| − 1 otherwise
//   ∇f(X) = ψ'(s)·A,  A = [[1, −1], [−1, 1]],  B = [[1, 1], [1, 1]]
//   g_i   = ∇f(X) + ξ_i(σB − ∇f(X)),  ξ_i uniform on {−1, +1}: unbiased, one draw per worker and step
// Aligned basis (§7.4, the default), Y = RᵀXR with R = [u_A, C]: s = 2·y11, A' = 2E11, B' = 2E22.
// In the aligned basis everything PowerSGD would put on u_A is an exact zero, so its stall holds
// bit-for-bit. In the paper basis it holds only as long as rounding puts nothing on u_A (§7.4
// reports a leak from FMA and summation order in a reference simulation).
#include <array>
#include <cstdint>
#include <string>

#include "lowrank/util/fields.h"

namespace lowrank {
namespace counterexample {

/// A 2×2 matrix, row-major: {x11, x12, x21, x22}.
using Mat2 = std::array<double, 4>;

enum class CounterexampleBasis {
  kAligned,  ///< Y = RᵀXR: exact zeros, PowerSGD's stall is exact in floating point (§7.4)
  kPaper,    ///< the paper's coordinates (§7.1)
};
inline const Choices<CounterexampleBasis> kCounterexampleBases = {{CounterexampleBasis::kAligned, "aligned"},
                                                                   {CounterexampleBasis::kPaper, "paper"}};
inline std::string to_string(CounterexampleBasis b) { return choice_name(b, kCounterexampleBases); }

/// ψ (Huber-like) and its derivative ψ' (§7.1).
double huber_psi(double x);
double huber_psi_prime(double x);

/// The objective and its stochastic oracle in one basis (§7.1, §7.4).
class CounterexampleProblem {
 public:
  CounterexampleProblem(CounterexampleBasis basis, double sigma);

  CounterexampleBasis basis() const { return basis_; }
  double sigma() const { return sigma_; }
  /// s = DᵀXD: x11 − x12 − x21 + x22 (paper), 2·y11 (aligned).
  double s(const Mat2& X) const;
  double value(const Mat2& X) const { return huber_psi(s(X)); }
  /// ∇f(X) = ψ'(s)·A.
  Mat2 gradient(const Mat2& X) const;
  /// ‖∇f(X)‖_F² (= 4ψ'(s)²).
  double grad_norm_sq(const Mat2& X) const;
  /// g = ∇f(X) + ξ(σB − ∇f(X)), ξ ∈ {−1, +1}.
  Mat2 oracle(const Mat2& X, int xi) const;
  /// A (paper) or A' = 2E11 (aligned).
  Mat2 A() const;
  /// B (paper) or B' = 2E22 (aligned).
  Mat2 B() const;
  /// X_0 = [[2, 0], [0, 0]] (paper) ⇔ Y_0 = [[1, 1], [1, 1]] (aligned); s_0 = 2, ‖∇f(X_0)‖² = 16.
  Mat2 x0() const;

  /// R = [u_A, C] = (1/√2)[[1, 1], [−1, 1]]; the aligned basis is Y = RᵀXR.
  static Mat2 rotation();
  /// RᵀXR: paper coordinates → aligned coordinates.
  static Mat2 to_aligned(const Mat2& X);

 private:
  CounterexampleBasis basis_;
  double sigma_;
};

/// ξ_t^{(i)} ∈ {−1, +1} of worker i at step t: a deterministic counter-based stream of
/// (seed, t, i) (the SplitMix64 hash of §1.7). `force_first` (conditioned mode) makes ξ_0 = +1.
int counterexample_noise(uint64_t seed, int64_t step, int worker, bool force_first);

}  // namespace counterexample
}  // namespace lowrank
