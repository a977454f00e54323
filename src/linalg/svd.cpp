// Singular-vector routines: see include/lowrank/linalg/svd.h.
#include "lowrank/linalg/svd.h"

#include <c10/util/Exception.h>

#include "lowrank/linalg/orthogonalize.h"

namespace lowrank {
namespace linalg {

namespace {

at::ScalarType work_type(const at::Tensor& A) { return A.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

void check_matrix(const at::Tensor& A, const char* what) {
  TORCH_CHECK(A.dim() == 2 || A.dim() == 3, what, " expects [m, n] or [b, m, n], got ", A.sizes());
}

// Householder QR: the Q of a zero matrix is a set of unit vectors, never NaN.
at::Tensor orth(const at::Tensor& X) { return std::get<0>(at::linalg_qr(X, "reduced")); }

}  // namespace

SingularPairs top_left_singular_pairs(const at::Tensor& A, int64_t k) {
  check_matrix(A, "top_left_singular_vectors");
  const int64_t m = A.size(-2), n = A.size(-1);
  TORCH_CHECK(k >= 1 && k <= std::min(m, n), "top_left_singular_vectors: k must be in [1, min(m, n)] = [1, ",
              std::min(m, n), "], got ", k);
  auto usv = at::linalg_svd(A.to(work_type(A)), /*full_matrices=*/false);
  return {std::get<0>(usv).narrow(-1, 0, k).contiguous(), std::get<1>(usv)};
}

at::Tensor top_left_singular_vectors(const at::Tensor& A, int64_t k) { return top_left_singular_pairs(A, k).U; }

SingularPairs left_singular_basis_pairs(const at::Tensor& A) {
  check_matrix(A, "left_singular_basis");
  const bool full = A.size(-2) > A.size(-1);
  auto usv = at::linalg_svd(A.to(work_type(A)), /*full_matrices=*/full);
  return {std::get<0>(usv).contiguous(), std::get<1>(usv)};
}

at::Tensor left_singular_basis(const at::Tensor& A) { return left_singular_basis_pairs(A).U; }

at::Tensor randomized_range(const at::Tensor& A, const at::Tensor& Omega, int64_t power_iters) {
  check_matrix(A, "randomized_range");
  TORCH_CHECK(Omega.dim() == A.dim(), "randomized_range: Omega must have A's rank (", A.dim(), "), got ",
              Omega.sizes());
  const int64_t m = A.size(-2), n = A.size(-1), l = Omega.size(-1);
  TORCH_CHECK(Omega.size(-2) == n, "randomized_range: Omega must have n = ", n, " rows, got ", Omega.sizes());
  TORCH_CHECK(l >= 1 && l <= std::min(m, n), "randomized_range: sketch width l must be in [1, min(m, n)] = [1, ",
              std::min(m, n), "], got ", l);
  TORCH_CHECK(power_iters >= 0, "randomized_range: power_iters must be >= 0, got ", power_iters);
  const at::Tensor W = A.to(work_type(A));
  const at::Tensor At = W.transpose(-2, -1);
  at::Tensor Y = orth(at::matmul(W, Omega.to(W.scalar_type())));
  for (int64_t i = 0; i < power_iters; ++i) {
    at::Tensor Z = orth(at::matmul(At, Y));
    Y = orth(at::matmul(W, Z));
  }
  return Y;
}

SingularPairs randomized_left_singular_pairs(const at::Tensor& A, const at::Tensor& Omega, int64_t k,
                                             int64_t power_iters) {
  TORCH_CHECK(k >= 1 && k <= Omega.size(-1), "randomized_left_singular_vectors: k must be in [1, l] = [1, ",
              Omega.size(-1), "], got ", k);
  at::Tensor Y = randomized_range(A, Omega, power_iters);       // [.., m, l]
  at::Tensor B = at::matmul(Y.transpose(-2, -1), A.to(Y.scalar_type()));  // [.., l, n]
  SingularPairs small = top_left_singular_pairs(B, k);
  return {at::matmul(Y, small.U), small.S};                     // P̃ = Y Ũ[:, :k]
}

at::Tensor randomized_left_singular_vectors(const at::Tensor& A, const at::Tensor& Omega, int64_t k,
                                            int64_t power_iters) {
  return randomized_left_singular_pairs(A, Omega, k, power_iters).U;
}

}  // namespace linalg
}  // namespace lowrank
