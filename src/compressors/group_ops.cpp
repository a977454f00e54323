#include "lowrank/compressors/group_ops.h"

#include <c10/util/Exception.h>

namespace lowrank {

at::ScalarType group_dtype(const std::vector<ShapeGroup>& groups) {
  return groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
}

void all_reduce_average_(comm::Communicator& comm, const at::Tensor& flat) {
  at::Tensor t = flat;
  comm.all_reduce_(t);
  if (comm.size() > 1) t.div_(comm.size());
}

FlatBuffer all_reduce_average(comm::Communicator& comm, const std::vector<ShapeGroup>& groups,
                           at::Tensor ShapeGroup::*member) {
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& g : groups) shapes.push_back({g.batch(), g.m, g.n});
  FlatBuffer mean = FlatBuffer::zeros(shapes, group_dtype(groups));
  for (size_t i = 0; i < groups.size(); ++i) mean.views[i].copy_(groups[i].*member);
  all_reduce_average_(comm, mean.flat);
  return mean;
}

bool has_state(const ShapeGroup& group, const char* key) {
  for (const auto* st : group.states)
    if (!st->count(key)) return false;
  return true;
}

at::Tensor stacked_state(const ShapeGroup& group, const char* key) {
  std::vector<at::Tensor> members;
  for (const auto* st : group.states) members.push_back(st->at(key));
  return at::stack(members);
}

at::Tensor refreshed_state(const ShapeGroup& group, const char* key, const char* missing, int64_t step) {
  for (int64_t j = 0; j < group.batch(); ++j)
    TORCH_CHECK(group.states[j]->count(key), missing, " for '", group.names[j], "' at compressed step ", step,
                "; a refresh (step % refresh_period == 0) must come first");
  return stacked_state(group, key);
}

void store_state(const ShapeGroup& group, const char* key, const at::Tensor& X) {
  for (int64_t j = 0; j < group.batch(); ++j) (*group.states[j])[key] = X[j].clone();
}

}  // namespace lowrank
