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
  int64_t size_test_floats(int64_t m, int64_t n) const override { return m * n; }
  int64_t wire_floats(int64_t m, int64_t n, int64_t) const override { return m * n; }
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;
};

}  // namespace lowrank
