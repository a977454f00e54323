#pragma once
// Singular-vector routines for the lazy-basis compressors (docs/algorithms.md §3, §4, §5). Pure
// functions on tensors: no communication, no state.
//
// Every function accepts one matrix [m, n] or a batch [b, m, n] (matrices treated independently)
// and returns the same rank of result. The work runs in fp32 (fp64 for fp64 input, §1.9) and the
// result has the work dtype. Column signs of singular vectors are whatever LAPACK returns; every
// caller in lowrank uses them only through sign-invariant products (P Pᵀ, λ_j²).
//
// Identical input bits give identical output bits when the same routine runs on the same kind of
// machine, which is what lets every rank compute the same basis from an all-reduced matrix.
//
//   top_left_singular_vectors(A, k)      U[:, :k] of the thin SVD           [.., m, k]
//   left_singular_basis(A)               complete U (m×m), full SVD if m > n [.., m, m]
//   randomized_range(A, Omega, q)        Halko–Martinsson–Tropp range finder [.., m, ℓ]
//   randomized_left_singular_vectors(A, Omega, k, q)  HMT randomized SVD     [.., m, k]
#include <ATen/ATen.h>

#include <cstdint>

namespace lowrank {
namespace linalg {

/// Left singular vectors with the singular values they came with.
struct SingularPairs {
  at::Tensor U;  ///< as the function returning vectors only returns them
  at::Tensor S;  ///< every singular value of the matrix that was decomposed, descending [.., min(rows, cols)]
};

/// The k leading left singular vectors of A [m, n] or [b, m, n]: U[:, :k] of the thin SVD, with
/// singular values in descending order. Needs 1 <= k <= min(m, n). Returns [.., m, k].
at::Tensor top_left_singular_vectors(const at::Tensor& A, int64_t k);
/// top_left_singular_vectors() and the singular values of A (the same bits: one decomposition).
SingularPairs top_left_singular_pairs(const at::Tensor& A, int64_t k);

/// A complete orthonormal basis of ℝ^m made of the left singular vectors of A [m, n] or
/// [b, m, n], in descending singular-value order (the thin SVD when m <= n, the full SVD
/// otherwise). Returns [.., m, m].
at::Tensor left_singular_basis(const at::Tensor& A);
/// left_singular_basis() and the singular values of A.
SingularPairs left_singular_basis_pairs(const at::Tensor& A);

/// Randomized range finder with power iterations (Halko, Martinsson, Tropp, arXiv:0909.4061,
/// Alg. 4.4): Y = orth(A Ω); q times { Z = orth(Aᵀ Y); Y = orth(A Z) }. Omega is the sketch
/// [n, ℓ] or [b, n, ℓ] with ℓ <= min(m, n); orth is a Householder QR (never NaN, §1.9). Returns
/// Y [.., m, ℓ] with orthonormal columns spanning approximately A's dominant range.
at::Tensor randomized_range(const at::Tensor& A, const at::Tensor& Omega, int64_t power_iters);

/// Randomized SVD (HMT Alg. 5.1 on the range above): Y = randomized_range(A, Omega, q),
/// B = Yᵀ A [ℓ, n], B = Ũ S V̂ᵀ, returns P̃ = Y Ũ[:, :k] [.., m, k]. Needs k <= ℓ.
at::Tensor randomized_left_singular_vectors(const at::Tensor& A, const at::Tensor& Omega, int64_t k,
                                            int64_t power_iters);
/// randomized_left_singular_vectors() and the singular values of the sketch B = YᵀA [.., ℓ].
SingularPairs randomized_left_singular_pairs(const at::Tensor& A, const at::Tensor& Omega, int64_t k,
                                             int64_t power_iters);

}  // namespace linalg
}  // namespace lowrank
