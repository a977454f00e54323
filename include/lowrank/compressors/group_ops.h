#pragma once
// Steps that the low-rank compressors all take on a bucket's shape groups: the mean all-reduce of a
// flat buffer (the "AR_sum(·) / W" of every walk-through), the dense mean of all groups in one
// buffer (a refresh or restart), and the per-member state they keep (compressor_keys).
#include <ATen/ATen.h>

#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/compressor.h"
#include "lowrank/compressors/flat_buffer.h"

namespace lowrank {

/// The dtype of the groups' tensors: delta's of the first group; fp32 when there is none.
at::ScalarType group_dtype(const std::vector<ShapeGroup>& groups);

/// flat = AR_sum(flat) / W in place: sums, then divides (no division on one rank). Not
/// Communicator::all_reduce_mean_, which divides first: the compressors' bits depend on the order.
void all_reduce_average_(comm::Communicator& comm, const at::Tensor& flat);

/// The mean over ranks of `member` ([b, m, n], e.g. &ShapeGroup::delta) of every group, in one flat
/// buffer: views[i] = AR_sum(groups[i].*member) / W. One collective of Σ b·m·n floats.
FlatBuffer all_reduce_average(comm::Communicator& comm, const std::vector<ShapeGroup>& groups,
                           at::Tensor ShapeGroup::*member);

/// Whether every member of `group` holds state `key`.
bool has_state(const ShapeGroup& group, const char* key);
/// State `key` of every member of `group`, stacked [b, ...]; every member must hold it.
at::Tensor stacked_state(const ShapeGroup& group, const char* key);
/// stacked_state() of state that a refresh creates: throws "<missing> for '<member>' at compressed
/// step <step>; a refresh (step % refresh_period == 0) must come first" when a member has none.
at::Tensor refreshed_state(const ShapeGroup& group, const char* key, const char* missing, int64_t step);
/// Stores X[j] (a copy) as state `key` of member j of `group`; X is [b, ...].
void store_state(const ShapeGroup& group, const char* key, const at::Tensor& X);

}  // namespace lowrank
