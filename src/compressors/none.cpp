#include "lowrank/compressors/none.h"

#include <c10/util/Exception.h>

namespace lowrank {

void NoCompression::compress(std::vector<ShapeGroup>& groups, const StepContext&) {
  // traits().compresses is false, so the reducer sends every tensor in its dense buffer.
  TORCH_INTERNAL_ASSERT(groups.empty(), "'none' was handed compressed matrices");
}

}  // namespace lowrank
