// linalg/svd.h: truncated left singular vectors, the complete left basis, and the randomized
// range finder / SVD, against fp64 torch::linalg_svd on inputs with a clear spectrum.
#include "lowrank/linalg/svd.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

namespace lowrank {
namespace {

// fp32 SVD / QR of matrices up to 20×15 with singular values O(1)–O(10), against fp64.
constexpr double kTol = 1e-4;

at::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  return at::randn(shape, at::detail::createCPUGenerator(seed), at::kFloat);
}

// [b, m, n] batch with singular values a, a−1, …, 1 (a = min(m, n)) and seeded singular vectors.
at::Tensor planted(int64_t b, int64_t m, int64_t n, uint64_t seed) {
  const int64_t a = std::min(m, n);
  const at::Tensor U = std::get<0>(at::linalg_qr(randn({b, m, a}, seed)));
  const at::Tensor V = std::get<0>(at::linalg_qr(randn({b, n, a}, seed + 1)));
  return U.matmul(at::diag_embed(at::arange(a, 0, -1, at::kFloat).expand({b, a}))).matmul(V.transpose(1, 2));
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

at::Tensor projector(const at::Tensor& P) { return P.to(at::kDouble).matmul(P.to(at::kDouble).transpose(-2, -1)); }

TEST(Svd, TopLeftSingularVectorsSpanTheDominantSubspace) {
  for (auto mn : std::vector<std::pair<int64_t, int64_t>>{{9, 6}, {6, 9}, {7, 7}}) {
    const at::Tensor A = planted(3, mn.first, mn.second, 1);
    for (int64_t k : {int64_t{1}, int64_t{3}, std::min(mn.first, mn.second)}) {
      const at::Tensor P = linalg::top_left_singular_vectors(A, k);
      ASSERT_EQ(P.sizes().vec(), (std::vector<int64_t>{3, mn.first, k}));
      const at::Tensor Uk = std::get<0>(at::linalg_svd(A.to(at::kDouble), false)).narrow(2, 0, k);
      EXPECT_LT(max_abs_diff(P.transpose(1, 2).matmul(P), at::eye(k).expand({3, k, k})), kTol) << mn.first << "x"
                                                                                                << mn.second;
      EXPECT_LT(max_abs_diff(projector(P), projector(Uk)), kTol) << mn.first << "x" << mn.second << " k=" << k;
    }
  }
  // One unbatched matrix gives one [m, k] result; fp64 stays fp64.
  const at::Tensor A2 = planted(1, 8, 5, 3)[0].to(at::kDouble);
  const at::Tensor P2 = linalg::top_left_singular_vectors(A2, 2);
  EXPECT_EQ(P2.sizes().vec(), (std::vector<int64_t>{8, 2}));
  EXPECT_EQ(P2.scalar_type(), at::kDouble);
}

TEST(Svd, LeftSingularBasisIsCompleteAndOrdered) {
  for (auto mn : std::vector<std::pair<int64_t, int64_t>>{{5, 8}, {8, 5}, {6, 6}}) {
    const int64_t m = mn.first;
    const at::Tensor A = planted(2, m, mn.second, 5);
    const at::Tensor U = linalg::left_singular_basis(A);
    ASSERT_EQ(U.sizes().vec(), (std::vector<int64_t>{2, m, m}));
    EXPECT_LT(max_abs_diff(U.transpose(1, 2).matmul(U), at::eye(m).expand({2, m, m})), kTol) << m << "x" << mn.second;
    // Energy of A along u_j, ‖u_jᵀA‖², is non-increasing in j (the singular values squared).
    const at::Tensor energy = U.transpose(1, 2).matmul(A).pow(2).sum(2);  // [2, m]
    const at::Tensor steps = energy.narrow(1, 1, m - 1) - energy.narrow(1, 0, m - 1);
    EXPECT_LE(steps.max().item<double>(), kTol) << m << "x" << mn.second << "\n" << energy;
  }
}

TEST(Svd, RandomizedSvdIsExactWhenTheSketchCoversTheRank) {
  // A has rank 3; a sketch of width 5 spans its range for almost every Ω.
  const at::Tensor A = randn({2, 20, 3}, 7).matmul(randn({2, 3, 15}, 8));
  const at::Tensor Omega = randn({2, 15, 5}, 9);
  for (int64_t q : {0, 2}) {
    const at::Tensor P = linalg::randomized_left_singular_vectors(A, Omega, 3, q);
    ASSERT_EQ(P.sizes().vec(), (std::vector<int64_t>{2, 20, 3}));
    const double scale = A.abs().max().item<double>();
    EXPECT_LT(max_abs_diff(projector(P).matmul(A.to(at::kDouble)), A), kTol * scale) << "q=" << q;
    const at::Tensor Y = linalg::randomized_range(A, Omega, q);
    EXPECT_LT(max_abs_diff(Y.transpose(1, 2).matmul(Y), at::eye(5).expand({2, 5, 5})), kTol) << "q=" << q;
  }
}

TEST(Svd, BadArgumentsNameTheProblem) {
  const at::Tensor A = randn({6, 4}, 1);
  auto message = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "no error";
  };
  std::string msg = message([&] { linalg::top_left_singular_vectors(A, 5); });
  EXPECT_NE(msg.find("got 5"), std::string::npos) << msg;
  msg = message([&] { linalg::randomized_range(A, randn({5, 2}, 2), 1); });
  EXPECT_NE(msg.find("n = 4"), std::string::npos) << msg;
  msg = message([&] { linalg::randomized_range(A, randn({4, 6}, 2), 1); });
  EXPECT_NE(msg.find("got 6"), std::string::npos) << msg;
  msg = message([&] { linalg::left_singular_basis(randn({6}, 3)); });
  EXPECT_NE(msg.find("[m, n] or [b, m, n]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lowrank
