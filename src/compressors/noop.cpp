#include "lowrank/compressors/noop.h"

#include <c10/util/Exception.h>

namespace lowrank {

void NoOp::compress(std::vector<ShapeGroup>& groups, const StepContext&) {
  // traits().compresses is false, so the reducer hands no matrix here; traits().communicates is false, so it
  // sends no dense buffer either.
  TORCH_INTERNAL_ASSERT(groups.empty(), "'noop' was handed compressed matrices");
}

}  // namespace lowrank
