// orthogonalize_ (docs/algorithms.md §1.9): orthonormal columns spanning the input, batched matrices
// independent, zero columns handled as documented, bad input rejected.
#include "lowrank/linalg/orthogonalize.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "support/seeded.h"

namespace lowrank {
namespace linalg {
namespace {

using lowrank::testing::randn_seeded;

// ‖QᵀQ − I‖_max and ‖X − QQᵀX‖_max / ‖X‖_max for Gaussian inputs up to 16×16: a few ulps times
// k·m per entry. fp32: ~1e-6 observed; fp64: ~1e-15 observed.
constexpr double kOrthTolFloat = 1e-5;
constexpr double kOrthTolDouble = 1e-12;

const std::vector<OrthMethod> kMethods = {OrthMethod::kGramSchmidt, OrthMethod::kHouseholder, OrthMethod::kAuto};

// [b, m, k] view of X (2-D input is one batch member).
at::Tensor batched(const at::Tensor& X) { return X.dim() == 2 ? X.unsqueeze(0) : X; }

at::Tensor gram(const at::Tensor& Q) {
  at::Tensor B = batched(Q).to(at::kDouble);
  return at::bmm(B.transpose(1, 2), B);  // [b, k, k]
}

double orthogonality_error(const at::Tensor& Q) {
  at::Tensor G = gram(Q);
  return (G - at::eye(G.size(1), at::kDouble)).abs().max().item<double>();
}

// ‖X − QQᵀX‖ / ‖X‖: the columns of Q span those of X.
double span_error(const at::Tensor& X, const at::Tensor& Q) {
  at::Tensor x = batched(X).to(at::kDouble), q = batched(Q).to(at::kDouble);
  return (x - at::bmm(q, at::bmm(q.transpose(1, 2), x))).abs().max().item<double>() / x.abs().max().item<double>();
}

TEST(Orthogonalize, GivesOrthonormalColumnsSpanningTheInput) {
  const std::vector<std::vector<int64_t>> shapes = {
      {1, 1}, {5, 1}, {5, 2}, {16, 4}, {7, 7}, {3, 6, 4}, {2, 5, 5}, {4, 9, 1}, {1, 16, 16},
  };
  for (int seed = 0; seed < 5; ++seed) {
    for (const auto& shape : shapes) {
      for (auto dtype : {at::kFloat, at::kDouble}) {
        const double tol = dtype == at::kFloat ? kOrthTolFloat : kOrthTolDouble;
        at::Tensor X = randn_seeded(shape, 1000 * seed + shape.size() * 10 + shape.back(), dtype);
        for (auto method : kMethods) {
          at::Tensor Q = X.clone();
          orthogonalize_(Q, 1e-16, OrthEpsMode::kMax, method);
          EXPECT_EQ(Q.sizes(), X.sizes());
          EXPECT_EQ(Q.scalar_type(), dtype);
          EXPECT_LT(orthogonality_error(Q), tol)
              << "seed=" << seed << " shape=" << X.sizes() << " dtype=" << dtype << " method=" << to_string(method);
          EXPECT_LT(span_error(X, Q), tol)
              << "seed=" << seed << " shape=" << X.sizes() << " dtype=" << dtype << " method=" << to_string(method);
        }
      }
    }
  }
}

TEST(Orthogonalize, GramSchmidtKeepsTheLeadingColumnsSpan) {
  // Gram–Schmidt is triangular: column j of Q lies in the span of columns 0..j of X, with a positive
  // component along the new direction; the methods agree up to column signs (§1.9).
  for (int seed = 0; seed < 5; ++seed) {
    at::Tensor X = randn_seeded({2, 8, 4}, seed, at::kDouble);
    at::Tensor Q = orthogonalize(X, 1e-16, OrthEpsMode::kMax, OrthMethod::kGramSchmidt);
    at::Tensor H = orthogonalize(X, 1e-16, OrthEpsMode::kMax, OrthMethod::kHouseholder);
    at::Tensor R = at::bmm(Q.transpose(1, 2), X);  // [2, 4, 4], upper triangular with positive diagonal
    EXPECT_LT(at::tril(R, -1).abs().max().item<double>(), kOrthTolDouble) << "seed=" << seed;
    EXPECT_GT(at::diagonal(R, 0, 1, 2).min().item<double>(), 0) << "seed=" << seed;
    at::Tensor signs = at::sign(at::diagonal(at::bmm(Q.transpose(1, 2), H), 0, 1, 2)).unsqueeze(1);
    EXPECT_LT((Q * signs - H).abs().max().item<double>(), kOrthTolDouble) << "seed=" << seed;
  }
}

TEST(Orthogonalize, OutOfPlaceLeavesTheInputAlone) {
  at::Tensor X = randn_seeded({6, 3}, 4, at::kFloat);
  at::Tensor copy = X.clone();
  at::Tensor Q = orthogonalize(X);
  EXPECT_TRUE(at::equal(X, copy));
  EXPECT_LT(orthogonality_error(Q), kOrthTolFloat);
}

TEST(Orthogonalize, ZeroInputStaysZeroWithoutNaN) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    for (const std::vector<int64_t> shape : {std::vector<int64_t>{4, 2}, std::vector<int64_t>{3, 5, 3}}) {
      at::Tensor Z = at::zeros(shape, dtype);
      orthogonalize_(Z);  // defaults: Gram–Schmidt, max(‖x‖, 1e-16)
      EXPECT_TRUE(at::equal(Z, at::zeros(shape, dtype))) << Z;
      at::Tensor H = at::zeros(shape, dtype);
      orthogonalize_(H, 1e-16, OrthEpsMode::kMax, OrthMethod::kHouseholder);
      EXPECT_FALSE(at::isnan(H).any().item<bool>()) << "Householder never gives NaN";
    }
  }
}

TEST(Orthogonalize, ZeroColumnsStayZeroAndOthersStayOrthonormal) {
  at::Tensor X = randn_seeded({2, 6, 3}, 9, at::kFloat);
  X[0].select(1, 1).zero_();  // a zero middle column in member 0
  X[1].zero_();               // member 1 all zero: members are independent
  at::Tensor Q = orthogonalize(X);
  EXPECT_FALSE(at::isnan(Q).any().item<bool>());
  EXPECT_TRUE(at::equal(Q[0].select(1, 1), at::zeros({6})));
  EXPECT_TRUE(at::equal(Q[1], at::zeros({6, 3})));
  at::Tensor kept = at::stack({Q[0].select(1, 0), Q[0].select(1, 2)}, 1);  // [6, 2]
  EXPECT_LT(orthogonality_error(kept), kOrthTolFloat);
  // Additive mode with eps > 0 keeps zero columns zero as well: 0 / (0 + eps) = 0.
  at::Tensor A = orthogonalize(X, 1e-8, OrthEpsMode::kAdditive);
  EXPECT_TRUE(at::equal(A[1], at::zeros({6, 3})));
  EXPECT_TRUE(at::equal(A[0].select(1, 1), at::zeros({6})));
}

TEST(Orthogonalize, AdditiveModeWithZeroEpsGivesNaNOnAZeroColumnLikePyTorch) {
  at::Tensor X = randn_seeded({5, 2}, 3, at::kFloat);
  X.select(1, 0).zero_();
  at::Tensor Q = orthogonalize(X, 0.0, OrthEpsMode::kAdditive);
  EXPECT_TRUE(at::isnan(Q.select(1, 0)).all().item<bool>()) << Q;
  // On full-rank input the two eps modes agree up to rounding.
  at::Tensor Y = randn_seeded({5, 2}, 4, at::kFloat);
  EXPECT_LT((orthogonalize(Y, 0.0, OrthEpsMode::kAdditive) - orthogonalize(Y)).abs().max().item<double>(),
            kOrthTolFloat);
}

TEST(Orthogonalize, RankDeficientInputGivesAProjector) {
  // P = Δ̄Q for a rank-deficient Δ̄ has dependent columns. PowerSGD needs P̂P̂ᵀ to be an orthogonal
  // projector onto a space containing col(X): QᵀQ idempotent, and QQᵀX = X.
  for (int seed = 0; seed < 10; ++seed) {
    at::Tensor a = randn_seeded({8, 1}, seed, at::kFloat);
    at::Tensor b = randn_seeded({8, 1}, 100 + seed, at::kFloat);
    at::Tensor X = at::cat({a, 2 * a, b, a - 3 * b}, 1);  // [8, 4], rank 2
    at::Tensor Q = orthogonalize(X);
    EXPECT_FALSE(at::isnan(Q).any().item<bool>()) << "seed=" << seed;
    at::Tensor G = gram(Q);
    EXPECT_LT((at::bmm(G, G) - G).abs().max().item<double>(), kOrthTolFloat) << "seed=" << seed << " " << G;
    EXPECT_LT(span_error(X, Q), kOrthTolFloat) << "seed=" << seed;
  }
}

TEST(Orthogonalize, RejectsBadInputNamingIt) {
  auto message = [](std::function<void()> f) -> std::string {
    try {
      f();
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "<no error>";
  };
  at::Tensor wide = at::ones({2, 3});
  EXPECT_NE(message([&] { orthogonalize_(wide); }).find("k <= m"), std::string::npos);
  at::Tensor vec = at::ones({3});
  EXPECT_NE(message([&] { orthogonalize_(vec); }).find("[3]"), std::string::npos);
  at::Tensor ok = at::ones({3, 1});
  EXPECT_NE(message([&] { orthogonalize_(ok, -1.0); }).find("-1"), std::string::npos);
  const std::string m1 = message([] { parse_orth_method("svd"); });
  EXPECT_NE(m1.find("'svd'"), std::string::npos) << m1;
  EXPECT_NE(m1.find("householder"), std::string::npos) << m1;
  const std::string m2 = message([] { parse_orth_eps_mode("mul"); });
  EXPECT_NE(m2.find("'mul'"), std::string::npos) << m2;
  EXPECT_NE(m2.find("additive"), std::string::npos) << m2;
  for (auto m : kMethods) EXPECT_EQ(parse_orth_method(to_string(m)), m);
  for (auto m : {OrthEpsMode::kMax, OrthEpsMode::kAdditive}) EXPECT_EQ(parse_orth_eps_mode(to_string(m)), m);
}

}  // namespace
}  // namespace linalg
}  // namespace lowrank
