// The objective, oracle and noise stream of the Theorem 1 counterexample: see
// include/lowrank/counterexample/counterexample_problem.h (docs/algorithms.md §7.1, §7.4).
#include "lowrank/counterexample/counterexample_problem.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "lowrank/compressors/shared_random.h"

namespace lowrank {
namespace counterexample {

double huber_psi(double x) { return std::abs(x) <= 1 ? x * x : 2 * std::abs(x) - 1; }

double huber_psi_prime(double x) { return std::abs(x) <= 1 ? 2 * x : (x > 0 ? 2.0 : -2.0); }

CounterexampleProblem::CounterexampleProblem(CounterexampleBasis basis, double sigma) : basis_(basis), sigma_(sigma) {
  TORCH_CHECK(std::isfinite(sigma) && sigma >= 0, "counterexample: sigma must be a finite number >= 0, got ", sigma);
}

double CounterexampleProblem::s(const Mat2& X) const {
  return basis_ == CounterexampleBasis::kPaper ? X[0] - X[1] - X[2] + X[3] : 2 * X[0];
}

Mat2 CounterexampleProblem::A() const {
  return basis_ == CounterexampleBasis::kPaper ? Mat2{1, -1, -1, 1} : Mat2{2, 0, 0, 0};
}

Mat2 CounterexampleProblem::B() const {
  return basis_ == CounterexampleBasis::kPaper ? Mat2{1, 1, 1, 1} : Mat2{0, 0, 0, 2};
}

Mat2 CounterexampleProblem::x0() const {
  return basis_ == CounterexampleBasis::kPaper ? Mat2{2, 0, 0, 0} : Mat2{1, 1, 1, 1};
}

Mat2 CounterexampleProblem::gradient(const Mat2& X) const {
  const double d = huber_psi_prime(s(X));
  const Mat2 a = A();
  return Mat2{d * a[0], d * a[1], d * a[2], d * a[3]};
}

double CounterexampleProblem::grad_norm_sq(const Mat2& X) const {
  const Mat2 g = gradient(X);
  return g[0] * g[0] + g[1] * g[1] + g[2] * g[2] + g[3] * g[3];
}

Mat2 CounterexampleProblem::oracle(const Mat2& X, int xi) const {
  TORCH_CHECK(xi == 1 || xi == -1, "counterexample: the noise xi must be +1 or -1, got ", xi);
  const Mat2 g = gradient(X);
  const Mat2 b = B();
  Mat2 out;
  for (int j = 0; j < 4; ++j) out[j] = g[j] + xi * (sigma_ * b[j] - g[j]);
  return out;
}

Mat2 CounterexampleProblem::rotation() {
  const double h = 1 / std::sqrt(2.0);
  return Mat2{h, h, -h, h};  // columns u_A = (1, −1)/√2 and C = (1, 1)/√2
}

Mat2 CounterexampleProblem::to_aligned(const Mat2& X) {
  const Mat2 R = rotation();
  auto at = [](const Mat2& M, int i, int j) { return M[2 * i + j]; };
  Mat2 Y{};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 2; ++k)
        for (int l = 0; l < 2; ++l) Y[2 * i + j] += at(R, k, i) * at(X, k, l) * at(R, l, j);
  return Y;
}

namespace {
// Purpose tag of the noise stream, distinct from the §1.7 purposes (Stream, 1 … 5).
constexpr uint64_t kNoisePurpose = 0xCE;
}  // namespace

int counterexample_noise(uint64_t seed, int64_t step, int worker, bool force_first) {
  if (force_first && step == 0) return 1;
  const uint64_t sid = (kNoisePurpose << 40) ^ static_cast<uint64_t>(worker);
  return (stream_seed(seed, step, sid) & 1) ? 1 : -1;
}

}  // namespace counterexample
}  // namespace lowrank
