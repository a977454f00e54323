#pragma once
// Column orthonormalization (docs/algorithms.md §1.9). Pure functions on tensors.
#include <ATen/ATen.h>

#include <ostream>
#include <string>

#include "lowrank/util/fields.h"

namespace lowrank {
namespace linalg {

enum class OrthMethod {
  kGramSchmidt,  ///< Gram–Schmidt with one re-orthogonalization pass; zero columns stay zero
  kHouseholder,  ///< Q of a thin Householder QR (LAPACK); never NaN
  kAuto,         ///< PyTorch's rule: Gram–Schmidt if k <= 2 or half precision, else Householder
};

enum class OrthEpsMode {
  kMax,       ///< nrm(x) = max(||x||, eps): zero columns stay zero (our default)
  kAdditive,  ///< nrm(x) = ||x|| + eps: PyTorch's rule; eps = 0 gives NaN on zero columns
};

/// Names of the methods; mgs and qr are accepted aliases.
inline const Choices<OrthMethod> kOrthMethods = {{OrthMethod::kGramSchmidt, "gram_schmidt"},
                                                 {OrthMethod::kHouseholder, "householder"},
                                                 {OrthMethod::kAuto, "auto"},
                                                 {OrthMethod::kGramSchmidt, "mgs"},
                                                 {OrthMethod::kHouseholder, "qr"}};
inline const Choices<OrthEpsMode> kOrthEpsModes = {{OrthEpsMode::kMax, "max"}, {OrthEpsMode::kAdditive, "additive"}};

OrthMethod parse_orth_method(const std::string& s);
std::string to_string(OrthMethod m);
OrthEpsMode parse_orth_eps_mode(const std::string& s);
std::string to_string(OrthEpsMode m);

/// Orthonormalizes the columns of X in place. X is [m, k] or batched [b, m, k] with k <= m;
/// batched matrices are treated independently. Computation runs in fp32 (or fp64 for fp64
/// input) and is written back in X's dtype. Default eps 1e-16 (max mode).
void orthogonalize_(at::Tensor& X, double eps = 1e-16, OrthEpsMode eps_mode = OrthEpsMode::kMax,
                    OrthMethod method = OrthMethod::kGramSchmidt);

/// Out-of-place form of orthogonalize_.
at::Tensor orthogonalize(const at::Tensor& X, double eps = 1e-16, OrthEpsMode eps_mode = OrthEpsMode::kMax,
                         OrthMethod method = OrthMethod::kGramSchmidt);

}  // namespace linalg
}  // namespace lowrank
