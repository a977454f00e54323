#include "lowrank/linalg/skinny.h"

#include <gtest/gtest.h>

#include "support/seeded.h"

namespace lowrank {
namespace {

using testing::mix;
using testing::randn_seeded;

struct Shape {
  int64_t b, m, n, k;
};

// Shapes with every tail: n not a multiple of the 16 lanes or the 512-column block, k not a
// multiple of 4, k = 1, a single row, and k beyond kMaxSkinnyRank (the bmm fallback).
const std::vector<Shape> kShapes = {{1, 7, 5, 1},   {3, 16, 33, 4}, {2, 64, 576, 4}, {1, 1, 1031, 3},
                                    {2, 9, 1100, 7}, {1, 40, 17, 16}, {1, 70, 80, 9}, {1, 30, 40, 65}, {4, 3, 2, 2}};

double tol(at::ScalarType dt) { return dt == at::kDouble ? 1e-12 : 2e-5; }

// Relative to the scale of the result: the kernels sum in another order than BLAS.
void expect_close(const at::Tensor& got, const at::Tensor& want, at::ScalarType dt, const std::string& what) {
  const double scale = std::max(1.0, want.abs().max().item<double>());
  EXPECT_LE((got - want).abs().max().item<double>(), tol(dt) * scale * 10) << what;
}

TEST(Skinny, MatmulEqualsBmm) {
  for (auto dt : {at::kFloat, at::kDouble})
    for (const auto& s : kShapes) {
      const std::string what = "b" + std::to_string(s.b) + " " + std::to_string(s.m) + "x" + std::to_string(s.n) +
                               " k" + std::to_string(s.k) + (dt == at::kDouble ? " fp64" : " fp32");
      const at::Tensor A = randn_seeded({s.b, s.m, s.n}, mix({1, uint64_t(s.m), uint64_t(s.n)}), dt);
      const at::Tensor X = randn_seeded({s.b, s.n, s.k}, mix({2, uint64_t(s.k)}), dt);
      const at::Tensor Xm = randn_seeded({s.b, s.m, s.k}, mix({3, uint64_t(s.k)}), dt);
      at::Tensor Y = at::full({s.b, s.m, s.k}, 7.0, dt);  // overwritten, not accumulated into
      linalg::skinny_matmul_out(Y, A, X);
      expect_close(Y, at::bmm(A, X), dt, "A X " + what);
      at::Tensor Yt = at::full({s.b, s.n, s.k}, 7.0, dt);
      linalg::skinny_matmul_t_out(Yt, A, Xm);
      expect_close(Yt, at::bmm(A.transpose(1, 2), Xm), dt, "A^T X " + what);
    }
}

TEST(Skinny, AddMatmulAddsThenMultiplies) {
  for (auto dt : {at::kFloat, at::kDouble})
    for (const auto& s : kShapes) {
      const std::string what = std::to_string(s.m) + "x" + std::to_string(s.n) + " k" + std::to_string(s.k);
      const at::Tensor A0 = randn_seeded({s.b, s.m, s.n}, mix({11, uint64_t(s.n)}), dt);
      const at::Tensor G = randn_seeded({s.b, s.m, s.n}, mix({12, uint64_t(s.m)}), dt);
      const at::Tensor X = randn_seeded({s.b, s.n, s.k}, mix({13, uint64_t(s.k)}), dt);
      at::Tensor A = A0.clone(), Y = at::full({s.b, s.m, s.k}, 7.0, dt);
      linalg::skinny_add_matmul_out(Y, A, G, X);
      EXPECT_TRUE(at::equal(A, A0 + G)) << "A + G " << what;  // the same sum, element by element
      expect_close(Y, at::bmm(A0 + G, X), dt, "(A + G) X " + what);
    }
}

TEST(Skinny, ExpandEqualsBmm) {
  for (auto dt : {at::kFloat, at::kDouble})
    for (const auto& s : kShapes) {
      const std::string what = std::to_string(s.m) + "x" + std::to_string(s.n) + " k" + std::to_string(s.k);
      const at::Tensor P = randn_seeded({s.b, s.m, s.k}, mix({5, uint64_t(s.k)}), dt);
      const at::Tensor S = randn_seeded({s.b, s.n, s.k}, mix({7, uint64_t(s.k)}), dt);
      at::Tensor Out = at::full({s.b, s.m, s.n}, 3.0, dt);  // overwritten, not accumulated into
      linalg::skinny_expand_out(Out, P, S);
      expect_close(Out, at::bmm(P, S.transpose(1, 2)), dt, "P S^T " + what);
    }
}

// 2-D operands are one matrix; non-contiguous ones take the bmm path and give the same result.
TEST(Skinny, TwoDimensionalAndNonContiguousOperands) {
  const at::Tensor A = randn_seeded({12, 40}, 8, at::kFloat), X = randn_seeded({40, 3}, 9, at::kFloat);
  at::Tensor Y = at::empty({12, 3});
  linalg::skinny_matmul_out(Y, A, X);
  expect_close(Y, A.matmul(X), at::kFloat, "2-D");
  const at::Tensor At = randn_seeded({1, 40, 12}, 10, at::kFloat).transpose(1, 2);  // [1, 12, 40], strided
  at::Tensor Y3 = at::empty({1, 12, 3});
  linalg::skinny_matmul_out(Y3, At, X.unsqueeze(0));
  expect_close(Y3, at::bmm(At, X.unsqueeze(0)), at::kFloat, "non-contiguous");
}

TEST(Skinny, BadShapesAreErrors) {
  at::Tensor A = at::zeros({1, 4, 5}), Y = at::zeros({1, 4, 2});
  EXPECT_THROW(linalg::skinny_matmul_out(Y, A, at::zeros({1, 6, 2})), c10::Error);
  EXPECT_THROW(linalg::skinny_matmul_t_out(Y, A, at::zeros({1, 4, 2})), c10::Error);  // Y must be [1, 5, 2]
}

}  // namespace
}  // namespace lowrank
