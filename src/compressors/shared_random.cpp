#include "lowrank/compressors/shared_random.h"

#include <ATen/CPUGeneratorImpl.h>

namespace lowrank {

uint64_t stream_seed(uint64_t base_seed, int64_t step, uint64_t sid) {
  return splitmix64(splitmix64(splitmix64(base_seed) ^ static_cast<uint64_t>(step)) ^ sid);
}

at::Generator shared_generator(uint64_t base_seed, int64_t step, uint64_t sid) {
  return at::detail::createCPUGenerator(stream_seed(base_seed, step, sid));
}

at::Tensor shared_randn(at::IntArrayRef sizes, uint64_t base_seed, int64_t step, uint64_t sid,
                        at::ScalarType dtype) {
  auto gen = shared_generator(base_seed, step, sid);
  return at::randn(sizes, gen, at::TensorOptions().dtype(dtype));
}

}  // namespace lowrank
