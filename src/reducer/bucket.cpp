#include "lowrank/reducer/bucket.h"

#include <c10/util/Exception.h>
#include <c10/util/strides.h>

#include <map>

namespace lowrank {
namespace {

// `sizes` elements of `flat` from `offset` on, as a tensor that shares flat's storage without being
// an autograd view of it: LibTorch's Optimizer::zero_grad() calls detach_() on every gradient, which
// views refuse.
at::Tensor alias(const at::Tensor& flat, int64_t offset, at::IntArrayRef sizes) {
  at::Tensor t = at::empty({0}, flat.options());
  t.set_(flat.storage(), flat.storage_offset() + offset, sizes, c10::contiguous_strides(sizes));
  return t;
}

// Members into the dense list or a shape group (same-shape matrices share one when batching).
void assign_members(Bucket& b, std::vector<ParamState>& params, size_t index, bool batch_same_shape,
                    int64_t* next_ordinal) {
  std::map<std::pair<int64_t, int64_t>, size_t> group_of;
  for (size_t i : b.members) {
    ParamState& p = params[i];
    TORCH_CHECK(p.work_dtype == b.dtype, "Bucket::build: mixed dtypes in one bucket");
    p.bucket = index;
    b.bytes += p.param.numel() * static_cast<int64_t>(c10::elementSize(p.work_dtype));
    if (!p.compressed) {
      b.dense.push_back(i);
      continue;
    }
    auto it = group_of.find({p.m, p.n});
    if (batch_same_shape && it != group_of.end()) {
      b.groups[it->second].members.push_back(i);
    } else {
      group_of[{p.m, p.n}] = b.groups.size();
      BucketGroup g;
      g.members.push_back(i);
      g.shape.ordinal = (*next_ordinal)++;
      g.shape.m = p.m;
      g.shape.n = p.n;
      b.groups.push_back(std::move(g));
    }
  }
}

// The flat gradient and error buffers: dense members first, then the groups.
void allocate_buffers(Bucket& b, const std::vector<ParamState>& params, const ErrorFeedback& ef, int64_t* dense_numel) {
  int64_t total = 0;
  *dense_numel = 0;
  for (size_t i : b.dense) *dense_numel += params[i].param.numel();
  total = *dense_numel;
  for (const auto& g : b.groups) total += static_cast<int64_t>(g.members.size()) * g.shape.m * g.shape.n;

  const auto opts = at::TensorOptions().dtype(b.dtype);
  b.grads = at::zeros({total}, opts);
  b.dense_grads = b.grads.narrow(0, 0, *dense_numel);
  const bool any_compressed_ef = ef.on() && !b.groups.empty();
  const bool dense_ef = ef.dense() && *dense_numel > 0;
  if (any_compressed_ef || dense_ef) b.errors = at::zeros({total}, opts);
  if (dense_ef) {
    b.dense_errors = b.errors.narrow(0, 0, *dense_numel);
    if (ef.beta() > 0) b.dense_scratch = at::empty({*dense_numel}, opts);
  }
}

// Every member's gradient (and error buffer) as a view into the flat buffers; the groups' stacked
// [b, m, n] views and, for a compressor that cannot work in place, their scratch buffers.
void bind_views(Bucket& b, std::vector<ParamState>& params, const ErrorFeedback& ef, bool in_place, bool dense_ef) {
  const auto opts = at::TensorOptions().dtype(b.dtype);
  int64_t off = 0;
  for (size_t i : b.dense) {
    ParamState& p = params[i];
    const int64_t n = p.param.numel();
    p.grad_view = alias(b.grads, off, p.param.sizes());
    if (dense_ef) p.ef_view = b.errors.narrow(0, off, n).view(p.param.sizes());
    off += n;
  }
  for (auto& g : b.groups) {
    const int64_t cnt = static_cast<int64_t>(g.members.size()), m = g.shape.m, n = g.shape.n;
    g.G = b.grads.narrow(0, off, cnt * m * n).view({cnt, m, n});
    if (ef.on()) g.E = b.errors.narrow(0, off, cnt * m * n).view({cnt, m, n});
    for (int64_t j = 0; j < cnt; ++j) {
      ParamState& p = params[g.members[j]];
      g.shape.names.push_back(p.name);
      g.shape.states.push_back(&p.compressor_state);
      p.grad_view = alias(b.grads, off + j * m * n, p.param.sizes());
      if (ef.on()) p.ef_view = g.E[j].view(p.param.sizes());
    }
    if (!in_place) {
      if (ef.on()) g.D = at::empty({cnt, m, n}, opts);
      g.R = at::empty({cnt, m, n}, opts);
      g.O = at::empty({cnt, m, n}, opts);
    }
    off += cnt * m * n;
  }
}

}  // namespace

Bucket Bucket::build(std::vector<ParamState>& params, const std::vector<size_t>& members, size_t index,
                     const ErrorFeedback& ef, const Compressor& compressor, bool batch_same_shape,
                     int64_t* next_ordinal) {
  Bucket b;
  b.members = members;
  TORCH_CHECK(!members.empty(), "Bucket::build: empty bucket");
  b.dtype = params[members[0]].work_dtype;
  assign_members(b, params, index, batch_same_shape, next_ordinal);
  int64_t dense_numel = 0;
  allocate_buffers(b, params, ef, &dense_numel);
  bind_views(b, params, ef, ef.in_place(compressor.traits()), ef.dense() && dense_numel > 0);
  return b;
}

}  // namespace lowrank
