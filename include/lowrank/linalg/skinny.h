#pragma once
// Products of a batch of large matrices with thin factors (k columns, k small), the kernels that
// dominate PowerSGD-style compressors. Pure functions on tensors.
//
// BLAS gemm packs the large operand into panels before multiplying, an extra pass over it that
// costs more than the product itself when k is small: on ResNet-18's gradients at rank 4, ΔQ and
// ΔᵀP take ~3x the time of reading the matrices once, and P̂Qᵀ into a fresh output ~3 passes (BLAS
// zeroes the output, then accumulates into it). (The rank-k update Δ − P Qᵀ, where the large
// matrix is the output, BLAS does at memory speed; a fused hand-written version measured slower.) These kernels read
// each large matrix exactly once, vectorized over the long dimension with the thin factor kept in
// cache. bench/skinny_bench.cpp compares them with
// bmm (docs/performance.md): at k = 4 on 3×512×4608 they take about half its time or less; at
// k = 16 BLAS is as fast, hence kMaxSkinnyRank. Results equal the plain bmm up to rounding (the
// summation order differs); tests/linalg/skinny_test.cpp checks each against it.
//
// Every function takes fp32 or fp64 tensors of one dtype, [b, ·, ·] batched (2-D is taken as
// b = 1); the large operand and the output must be contiguous (the thin factor may be strided), or
// it falls back to ATen's bmm, as it does when k exceeds kMaxSkinnyRank.
#include <ATen/ATen.h>

#include <cstdint>

namespace lowrank {
namespace linalg {

/// Largest k the kernels handle themselves.
constexpr int64_t kMaxSkinnyRank = 8;

/// Y = A X: A [b, m, n], X [b, n, k], Y [b, m, k] (overwritten).
void skinny_matmul_out(at::Tensor& Y, const at::Tensor& A, const at::Tensor& X);

/// A ← A + G, then Y = A X, in one pass over A (A and G [b, m, n], must not overlap): forms
/// Δ = e + g inside the error buffer and multiplies it with the thin factor at once.
void skinny_add_matmul_out(at::Tensor& Y, at::Tensor& A, const at::Tensor& G, const at::Tensor& X);

/// Y = Aᵀ X: A [b, m, n], X [b, m, k], Y [b, n, k] (overwritten).
void skinny_matmul_t_out(at::Tensor& Y, const at::Tensor& A, const at::Tensor& X);

/// Out = P Sᵀ: P [b, m, k], S [b, n, k], Out [b, m, n] (overwritten; each element written once).
void skinny_expand_out(at::Tensor& Out, const at::Tensor& P, const at::Tensor& S);

}  // namespace linalg
}  // namespace lowrank
