// Kernel benchmark: Gram–Schmidt vs Householder orthogonalization of a batch of tall factors.
// Verifies QᵀQ ≈ I before timing; compare the two variants' medians in the same run:
//   build/bench/lowrank_bench --benchmark_filter=Orth --benchmark_repetitions=5
#include <benchmark/benchmark.h>

#include "lowrank/linalg/orthogonalize.h"

namespace {

void BM_Orth(benchmark::State& state, lowrank::linalg::OrthMethod method) {
  const int64_t b = 8, m = state.range(0), k = state.range(1);
  at::manual_seed(0);
  const at::Tensor X = at::randn({b, m, k});
  at::Tensor check = lowrank::linalg::orthogonalize(X, 1e-16, lowrank::linalg::OrthEpsMode::kMax, method);
  const double err = (at::bmm(check.transpose(1, 2), check) - at::eye(k).expand({b, k, k})).abs().max().item<double>();
  if (err > 1e-4) state.SkipWithError("orthogonalize is wrong: QᵀQ differs from I");
  for (auto _ : state) {
    at::Tensor Y = X.clone();
    lowrank::linalg::orthogonalize_(Y, 1e-16, lowrank::linalg::OrthEpsMode::kMax, method);
    benchmark::DoNotOptimize(Y.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * b * m * k);
}

BENCHMARK_CAPTURE(BM_Orth, gram_schmidt, lowrank::linalg::OrthMethod::kGramSchmidt)
    ->Args({512, 4})->Args({512, 16})->Args({4096, 4});
BENCHMARK_CAPTURE(BM_Orth, householder, lowrank::linalg::OrthMethod::kHouseholder)
    ->Args({512, 4})->Args({512, 16})->Args({4096, 4});

}  // namespace
