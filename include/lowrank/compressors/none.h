#pragma once
// "none": dense mean all-reduce of every gradient (the baseline). Wire cost: m·n floats per
// matrix per step, in the reducer's one dense buffer.
#include "lowrank/compressors/compressor_base.h"

namespace lowrank {

class NoCompression : public CompressorBase<NoCompression, NoOptions> {
 public:
  static constexpr const char* kName = "none";
  explicit NoCompression(NoOptions options = {}) : CompressorBase(options) {}

  Traits traits() const override {
    Traits t;
    t.compresses = false;
    t.default_error_feedback = false;
    return t;
  }
  double size_test_bytes(int64_t m, int64_t n) const override { return 4.0 * static_cast<double>(m * n); }
  int64_t wire_bytes(int64_t m, int64_t n, int64_t, at::ScalarType work) const override {
    return m * n * static_cast<int64_t>(c10::elementSize(work));
  }
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;
};

}  // namespace lowrank
