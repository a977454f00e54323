#pragma once
// "noop": communicates nothing; every rank keeps its own gradient (PyTorch's noop_hook). It is
// the headroom baseline of the benchmarks: a step with noop costs what training costs without any
// gradient exchange, so step_ms(X) / step_ms(noop) is the price of compressor X. Training with it
// is not data-parallel training (the ranks' weights drift apart), so `lowrank train` skips its
// end-of-run weight agreement check for it. Wire cost: 0 floats.
#include "lowrank/compressors/compressor_base.h"

namespace lowrank {

class NoOp : public CompressorBase<NoOp, NoOptions> {
 public:
  static constexpr const char* kName = "noop";
  explicit NoOp(NoOptions options = {}) : CompressorBase(options) {}

  Traits traits() const override {
    Traits t;
    t.compresses = false;
    t.communicates = false;
    t.default_error_feedback = false;
    return t;
  }
  double size_test_bytes(int64_t, int64_t) const override { return 0; }
  int64_t wire_bytes(int64_t, int64_t, int64_t, at::ScalarType) const override { return 0; }
  void compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) override;
};

}  // namespace lowrank
