#include "lowrank/compressors/flat_buffer.h"

namespace lowrank {

FlatBuffer FlatBuffer::zeros(const std::vector<std::vector<int64_t>>& shapes, at::TensorOptions options) {
  int64_t total = 0;
  for (const auto& s : shapes) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    total += n;
  }
  FlatBuffer b;
  b.flat = at::zeros({total}, options);
  int64_t off = 0;
  for (const auto& s : shapes) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    b.views.push_back(b.flat.narrow(0, off, n).view(s));
    off += n;
  }
  return b;
}

}  // namespace lowrank
