#pragma once
// Helpers shared by the tests of the low-rank family (powersgd+, greedylore, galore): seeded
// per-rank gradients, the reducer's error buffers, gathered means and exact references.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {
namespace testing {

/// N(0, 1) of `shape`, a pure function of (seed, rank, step, salt): every rank can rebuild every
/// other rank's gradient, and reruns see the same numbers.
inline at::Tensor seeded_randn(at::IntArrayRef shape, uint64_t seed, int64_t rank, int64_t step, int64_t salt = 0) {
  const uint64_t s = seed * 1000003ULL + static_cast<uint64_t>(rank) * 7919ULL + static_cast<uint64_t>(step) * 104729ULL +
                     static_cast<uint64_t>(salt) * 15485863ULL + 1ULL;
  return at::randn(shape, at::detail::createCPUGenerator(s), at::kFloat);
}

/// U diag(a, a−1, …, 1) Vᵀ for an m×n matrix, a = min(m, n), with seeded orthonormal U, V: a clear
/// spectral gap at every k, which per-rank noise of size ~0.3 does not close.
inline at::Tensor planted(int64_t m, int64_t n, int64_t salt) {
  const int64_t a = std::min(m, n);
  const at::Tensor U = std::get<0>(at::linalg_qr(seeded_randn({m, a}, 17, 0, 0, salt)));
  const at::Tensor V = std::get<0>(at::linalg_qr(seeded_randn({n, a}, 17, 0, 1, salt)));
  return U.matmul(at::diag(at::arange(a, 0, -1, at::kFloat))).matmul(V.t());
}

/// The reducer's error-feedback buffer for `name` (zeros when it has none yet).
inline at::Tensor ef_of(const GradientReducer& red, const std::string& name, const at::Tensor& like) {
  for (const auto& kv : red.state_dict())
    if (kv.first == "ef/" + name) return kv.second.clone();
  return at::zeros_like(like);
}

/// One entry of the reducer's compressor state ("state/<name>/<key>"); undefined if absent.
inline at::Tensor state_of(const GradientReducer& red, const std::string& name, const std::string& key) {
  for (const auto& kv : red.state_dict())
    if (kv.first == "state/" + name + "/" + key) return kv.second.clone();
  return at::Tensor();
}

/// Mean over ranks of `t`, in fp64, from an all-gather (the test's own collective, not the reducer's).
inline at::Tensor gathered_mean(comm::Communicator& c, const at::Tensor& t) {
  auto all = c.all_gather(t.contiguous());
  at::Tensor sum = at::zeros(t.sizes(), at::kDouble);
  for (const auto& a : all) sum += a.to(at::kDouble);
  return sum / static_cast<double>(all.size());
}

/// Whether `t` is bit-identical on every rank.
inline bool same_on_all_ranks(comm::Communicator& c, const at::Tensor& t) {
  auto all = c.all_gather(t.contiguous());
  for (const auto& a : all)
    if (!at::equal(a, all[0])) return false;
  return true;
}

/// U_k Σ_k V_kᵀ of M (fp64): the best rank-k approximation.
inline at::Tensor truncated_svd(const at::Tensor& M, int64_t k) {
  auto usv = at::linalg_svd(M.to(at::kDouble), /*full_matrices=*/false);
  const at::Tensor U = std::get<0>(usv).narrow(1, 0, k);
  const at::Tensor S = std::get<1>(usv).narrow(0, 0, k);
  const at::Tensor Vh = std::get<2>(usv).narrow(0, 0, k);
  return U.matmul(at::diag(S)).matmul(Vh);
}

/// Singular values of M (fp64, descending).
inline at::Tensor singular_values(const at::Tensor& M) { return at::linalg_svdvals(M.to(at::kDouble)); }

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

inline double sq_norm(const at::Tensor& t) { return t.to(at::kDouble).pow(2).sum().item<double>(); }

/// The c10::Error message of fn(); fails the test if nothing is thrown.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace testing
}  // namespace lowrank
