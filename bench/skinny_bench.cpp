// Kernel benchmark: the thin-factor products of a PowerSGD step, ATen's bmm (BLAS) against the
// kernels of linalg/skinny.h, on the largest ResNet-18 shape group (3 x 512 x 4608) at rank 4.
// Compare the pairs' times in the same run:
//   build/bench/lowrank_bench --benchmark_filter=Skinny --benchmark_repetitions=5
#include <benchmark/benchmark.h>

#include "lowrank/linalg/skinny.h"

namespace {

constexpr int64_t kB = 3, kM = 512, kN = 4608;

void BM_SkinnyAX(benchmark::State& state, bool kernel) {
  const int64_t k = state.range(0);
  at::manual_seed(0);
  const at::Tensor A = at::randn({kB, kM, kN}), X = at::randn({kB, kN, k});
  at::Tensor Y = at::empty({kB, kM, k});
  for (auto _ : state) {
    if (kernel) lowrank::linalg::skinny_matmul_out(Y, A, X);
    else at::bmm_out(Y, A, X);
    benchmark::DoNotOptimize(Y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * A.nbytes());
}

void BM_SkinnyATX(benchmark::State& state, bool kernel) {
  const int64_t k = state.range(0);
  at::manual_seed(0);
  const at::Tensor A = at::randn({kB, kM, kN}), X = at::randn({kB, kM, k});
  at::Tensor Y = at::empty({kB, kN, k});
  for (auto _ : state) {
    if (kernel) lowrank::linalg::skinny_matmul_t_out(Y, A, X);
    else at::bmm_out(Y, A.transpose(1, 2), X);
    benchmark::DoNotOptimize(Y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * A.nbytes());
}

void BM_SkinnyExpand(benchmark::State& state, bool kernel) {
  const int64_t k = state.range(0);
  at::manual_seed(0);
  const at::Tensor P = at::randn({kB, kM, k}), S = at::randn({kB, kN, k});
  at::Tensor O = at::empty({kB, kM, kN});
  for (auto _ : state) {
    if (kernel) lowrank::linalg::skinny_expand_out(O, P, S);
    else at::bmm_out(O, P, S.transpose(1, 2));
    benchmark::DoNotOptimize(O.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * O.nbytes());
}

// The floor these are measured against: one copy of A.
void BM_SkinnyCopyFloor(benchmark::State& state) {
  const at::Tensor A = at::randn({kB, kM, kN});
  at::Tensor B = at::empty_like(A);
  for (auto _ : state) {
    B.copy_(A);
    benchmark::DoNotOptimize(B.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * 2 * A.nbytes());
}

BENCHMARK_CAPTURE(BM_SkinnyAX, bmm, false)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK_CAPTURE(BM_SkinnyAX, kernel, true)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK_CAPTURE(BM_SkinnyATX, bmm, false)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK_CAPTURE(BM_SkinnyATX, kernel, true)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK_CAPTURE(BM_SkinnyExpand, bmm, false)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK_CAPTURE(BM_SkinnyExpand, kernel, true)->Arg(1)->Arg(4)->Arg(16);
BENCHMARK(BM_SkinnyCopyFloor);

}  // namespace
