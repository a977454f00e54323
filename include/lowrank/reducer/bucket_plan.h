#pragma once
// Bucket planning: which parameters travel together. A pure function of sizes and dtypes, so every
// rank computes the same plan (the set-up agreement check compares it too).
//
// As PyTorch DDP (compute_bucket_assignment_by_size): parameters are taken in reverse registration
// order, which is roughly the order in which backward() produces their gradients, and packed into
// buckets of at least `cap_bytes` (the last one may be smaller); parameters of different dtypes
// never share a bucket. Buckets are returned in launch order (the bucket holding the last
// parameter first); inside a bucket, members are listed in ascending parameter order, so a model
// that fits one bucket is reduced exactly as without bucketing.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "lowrank/reducer/param_state.h"

namespace lowrank {

struct BucketPlanEntry {
  int64_t bytes = 0;                       ///< the gradient's size in its working dtype
  at::ScalarType dtype = at::kFloat;       ///< working dtype (fp32 or fp64)
};

/// Buckets (each a list of indices into `params`, ascending) in launch order. cap_bytes <= 0 puts
/// every parameter of a dtype into one bucket.
std::vector<std::vector<size_t>> plan_buckets(const std::vector<BucketPlanEntry>& params, int64_t cap_bytes);
/// The plan of a reducer's parameters (each gradient's bytes in its working dtype) at `cap_mb` MiB:
/// what GradientReducer and the DDP hook (ddp/comm_hook.h) both reduce.
std::vector<std::vector<size_t>> plan_buckets(const std::vector<ParamState>& params, double cap_mb);

}  // namespace lowrank
