#include "lowrank/linalg/orthogonalize.h"

#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace lowrank {
namespace linalg {

OrthMethod parse_orth_method(const std::string& s) {
  for (const auto& c : kOrthMethods)
    if (s == c.name) return c.value;
  TORCH_CHECK(false, "unknown orthogonalization method '", s, "'; valid: ", choice_list(kOrthMethods));
}
std::string to_string(OrthMethod m) { return choice_name(m, kOrthMethods); }
OrthEpsMode parse_orth_eps_mode(const std::string& s) {
  for (const auto& c : kOrthEpsModes)
    if (s == c.name) return c.value;
  TORCH_CHECK(false, "unknown orth_eps_mode '", s, "'; valid: ", choice_list(kOrthEpsModes));
}
std::string to_string(OrthEpsMode m) { return choice_name(m, kOrthEpsModes); }

namespace {

// Gram–Schmidt with one re-orthogonalization ("twice is enough", CGS2): column j is projected
// off columns 0..j-1 twice before it is normalized. A single pass (docs/algorithms.md §1.9's MGS) loses
// orthogonality when a column is nearly in the span of the previous ones, e.g. P = Δ̄Q for a
// rank-deficient Δ̄: the leftover rounding noise is normalized to a unit vector that is far from
// orthogonal, P̂P̂ᵀ stops being a projector, and PowerSGD is no longer exact on low-rank input.
// The second pass removes that. Zero columns stay zero.
// The same algorithm as loops over one contiguous [b, m, k] buffer: for the thin factors of a
// compressor (k of a few columns) the tensor version's ~10 small ATen calls per column dominate
// (docs/performance.md). Dot products accumulate in double.
template <typename T>
void gram_schmidt_loops_(T* X, int64_t b, int64_t m, int64_t k, double eps, OrthEpsMode mode) {
  std::vector<double> dots(static_cast<size_t>(k));
  for (int64_t bi = 0; bi < b; ++bi) {
    T* A = X + bi * m * k;  // row r, column j at A[r * k + j]
    for (int64_t j = 0; j < k; ++j) {
      for (int pass = 0; j > 0 && pass < 2; ++pass) {
        std::fill(dots.begin(), dots.begin() + j, 0.0);
        for (int64_t r = 0; r < m; ++r) {
          const double v = A[r * k + j];
          for (int64_t i = 0; i < j; ++i) dots[i] += double(A[r * k + i]) * v;
        }
        for (int64_t r = 0; r < m; ++r) {
          double s = 0;
          for (int64_t i = 0; i < j; ++i) s += double(A[r * k + i]) * dots[i];
          A[r * k + j] = static_cast<T>(A[r * k + j] - s);
        }
      }
      double sq = 0;
      for (int64_t r = 0; r < m; ++r) sq += double(A[r * k + j]) * double(A[r * k + j]);
      double nrm = std::sqrt(sq);
      nrm = mode == OrthEpsMode::kMax ? std::max(nrm, eps) : nrm + eps;
      for (int64_t r = 0; r < m; ++r) A[r * k + j] = static_cast<T>(A[r * k + j] / nrm);
    }
  }
}

void gram_schmidt_(at::Tensor& X, double eps, OrthEpsMode mode) {
  const int64_t k = X.size(2);
  if (X.is_contiguous() && X.device().is_cpu() && k <= 16) {
    AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "gram_schmidt_loops_", [&] {
      gram_schmidt_loops_<scalar_t>(X.data_ptr<scalar_t>(), X.size(0), X.size(1), k, eps, mode);
    });
    return;
  }
  for (int64_t j = 0; j < k; ++j) {
    at::Tensor col = X.narrow(2, j, 1);  // [b, m, 1]
    if (j > 0) {
      at::Tensor prev = X.narrow(2, 0, j);  // [b, m, j], orthonormal (or zero) columns
      for (int pass = 0; pass < 2; ++pass) col.sub_(at::bmm(prev, at::bmm(prev.transpose(1, 2), col)));
    }
    at::Tensor nrm = col.norm(2, {1}, /*keepdim=*/true);
    nrm = mode == OrthEpsMode::kMax ? nrm.clamp_min(eps) : nrm.add(eps);
    col.div_(nrm);
  }
}

}  // namespace

void orthogonalize_(at::Tensor& X, double eps, OrthEpsMode eps_mode, OrthMethod method) {
  TORCH_CHECK(X.dim() == 2 || X.dim() == 3, "orthogonalize expects [m, k] or [b, m, k], got ", X.sizes());
  TORCH_CHECK(eps >= 0, "orthogonalization eps must be >= 0, got ", eps);
  const bool batched = X.dim() == 3;
  at::Tensor B = batched ? X : X.unsqueeze(0);
  const int64_t m = B.size(1), k = B.size(2);
  TORCH_CHECK(k <= m, "orthogonalize needs k <= m, got ", B.sizes().slice(1));
  if (B.numel() == 0) return;
  const bool half = X.scalar_type() == at::kHalf || X.scalar_type() == at::kBFloat16;
  if (method == OrthMethod::kAuto) method = (k <= 2 || half) ? OrthMethod::kGramSchmidt : OrthMethod::kHouseholder;
  const auto work_type = X.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor W = B.to(work_type).contiguous();
  if (method == OrthMethod::kGramSchmidt) {
    gram_schmidt_(W, eps, eps_mode);
  } else {
    W = std::get<0>(at::linalg_qr(W, "reduced"));
  }
  B.copy_(W);
}

at::Tensor orthogonalize(const at::Tensor& X, double eps, OrthEpsMode eps_mode, OrthMethod method) {
  at::Tensor Y = X.clone();
  orthogonalize_(Y, eps, eps_mode, method);
  return Y;
}

}  // namespace linalg
}  // namespace lowrank
