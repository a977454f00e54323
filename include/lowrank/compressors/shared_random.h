#pragma once
// Random numbers that agree across ranks (docs/algorithms.md §1.7): counter-based streams.
// Stream `sid` at compressed step s is seeded with sm(sm(sm(base) ^ s) ^ sid), sm being the
// SplitMix64 finalizer. Draws happen on a CPU generator, so they are bit-identical on every rank
// and need no saved generator state to resume.
#include <ATen/ATen.h>

#include <cstdint>

#include "lowrank/util/hash.h"  // splitmix64

namespace lowrank {

enum class Stream : uint64_t {
  kInitQ = 1,      ///< PowerSGD's initial / redrawn Q
  kInitP = 2,      ///< alternating PowerSGD's initial P
  kProbe = 3,      ///< GreedyLore's score probes
  kSketch = 4,     ///< randomized-SVD test matrices
  kSelect = 5,     ///< random index choices
  kPositions = 6,  ///< randomk's shared positions
  kRounding = 7,   ///< per-rank stochastic rounding (qsgd): with rank_stream_id, differs between ranks
  kEnergyProbe = 8,  ///< rank=auto's probes of the energy a sketch leaves out (distributed_rsvd.h)
};

uint64_t stream_seed(uint64_t base_seed, int64_t step, uint64_t stream_id);
/// Stream id of `purpose` for shape group `ordinal`.
inline uint64_t stream_id(Stream purpose, int64_t ordinal) {
  return (static_cast<uint64_t>(purpose) << 40) ^ static_cast<uint64_t>(ordinal);
}
/// Stream id of `purpose` for shape group `ordinal` on rank `rank` only: a stream that differs between
/// ranks (and between groups and steps) yet needs no saved state to resume.
inline uint64_t rank_stream_id(Stream purpose, int64_t ordinal, int rank) {
  return stream_id(purpose, ordinal) ^ (static_cast<uint64_t>(rank) + 1) << 24;
}
/// A CPU generator seeded for (base_seed, step, stream_id).
at::Generator shared_generator(uint64_t base_seed, int64_t step, uint64_t stream_id);
/// N(0, 1) draw of `sizes` in `dtype` from the shared stream.
at::Tensor shared_randn(at::IntArrayRef sizes, uint64_t base_seed, int64_t step, uint64_t stream_id,
                        at::ScalarType dtype = at::kFloat);

}  // namespace lowrank
