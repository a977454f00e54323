#pragma once
// Bucket: the parameters that are reduced together, with every buffer they need, allocated once.
//
// One flat gradient buffer per bucket holds, in this order, the dense members' gradients and then
// each shape group's stacked [b, m, n] block; every member's gradient is a view into it
// (ParamState::grad_view, attached as p.grad() where the dtypes match, as PyTorch DDP's
// gradient_as_bucket_view), so backward() accumulates straight into it, the dense part is
// all-reduced in place and the compressor's output is written straight back. The error buffer,
// where error feedback keeps one, has the same layout. Scratch buffers of the general EF path
// (reducer/error_feedback.h) exist only where that path runs.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "lowrank/compressors/compressor.h"
#include "lowrank/reducer/error_feedback.h"
#include "lowrank/reducer/param_state.h"

namespace lowrank {

struct BucketGroup {
  std::vector<size_t> members;  ///< indices into the reducer's params, ascending
  ShapeGroup shape;             ///< what the compressor sees; its tensors are set per step
  at::Tensor G, E;              ///< [b, m, n] views of the bucket's gradient and error buffers
  at::Tensor D, R, O;           ///< general EF path only: Δ, residual, ĝ scratch
};

struct Bucket {
  std::vector<size_t> members;  ///< every parameter of the bucket, ascending
  std::vector<size_t> dense;    ///< the dense ones, ascending
  at::ScalarType dtype{};       ///< working dtype of every member
  at::Tensor grads;             ///< flat [dense | group 0 | group 1 | ...]
  at::Tensor dense_grads;       ///< the dense part of grads
  at::Tensor errors;            ///< flat, same layout; undefined when no member keeps an error
  at::Tensor dense_errors;      ///< undefined unless dense tensors keep an error (global residual)
  at::Tensor dense_scratch;     ///< dense EMA scratch (global residual with β > 0)
  std::vector<BucketGroup> groups;
  int64_t bytes = 0;            ///< Σ members' gradient bytes
  // Guarded steps (reducer/reduction_engine.h): what reduce_bucket() changes, as it was before.
  at::Tensor errors_backup;                ///< same layout as errors; allocated on first use
  std::vector<TensorDict> state_backup;    ///< per compressed member (groups' order), deep copies
  std::vector<uint8_t> ef_valid_backup;    ///< per member

  /// Builds the bucket of `members` (ascending), sets each member's views and bucket index, and
  /// numbers its shape groups from `*next_ordinal` on. Groups follow first-seen order of
  /// (m, n) among the compressed members (or one group per member when batch_same_shape is off).
  static Bucket build(std::vector<ParamState>& params, const std::vector<size_t>& members, size_t index,
                      const ErrorFeedback& ef, const Compressor& compressor, bool batch_same_shape,
                      int64_t* next_ordinal);
};

}  // namespace lowrank
