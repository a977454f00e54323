#pragma once
// Seeded test inputs: a hash of several integers into one seed, and N(0, 1) draws from it.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <initializer_list>

namespace lowrank {
namespace testing {

/// FNV-1a over the words: one seed from (seed, rank, step, ...).
inline uint64_t mix(std::initializer_list<uint64_t> xs) {
  uint64_t h = 1469598103934665603ULL;
  for (uint64_t x : xs) h = (h ^ x) * 1099511628211ULL;
  return h;
}

/// N(0, 1) of `sizes` in `dtype` from a CPU generator seeded with `seed`.
inline at::Tensor randn_seeded(at::IntArrayRef sizes, uint64_t seed, at::ScalarType dtype) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randn(sizes, gen, at::TensorOptions().dtype(dtype));
}

}  // namespace testing
}  // namespace lowrank
