#pragma once
// Where a training step's time goes: StepTimes for one applied step, StepTimings for the run
// (medians of each phase, TrainResult's *_ms fields). Skipped steps are not timed.
#include "lowrank/train/meter.h"

namespace lowrank {
namespace train {

/// One step's phases, in milliseconds.
struct StepTimes {
  double step = 0;              ///< the whole step: data, forward, backward, reduce, optimizer
  double forward_backward = 0;  ///< forward, loss all-gather and backward (overlapped work included)
  double wait = 0;              ///< blocked in reduce(): compression and communication not hidden
  double compress = 0;          ///< the reducer's compute outside collectives (may overlap backward)
  double collective = 0;        ///< the reducer's time blocked in collectives (may overlap backward)
  double optimizer = 0;         ///< optimizer.step()
};

/// Every applied step's phase times; medians() leaves the first step out when there are more.
class StepTimings {
 public:
  void add(const StepTimes& t) {
    step_.add(t.step);
    forward_backward_.add(t.forward_backward);
    wait_.add(t.wait);
    compress_.add(t.compress);
    collective_.add(t.collective);
    optimizer_.add(t.optimizer);
  }
  StepTimes medians() const {
    StepTimes m;
    m.step = step_.value();
    m.forward_backward = forward_backward_.value();
    m.wait = wait_.value();
    m.compress = compress_.value();
    m.collective = collective_.value();
    m.optimizer = optimizer_.value();
    return m;
  }

 private:
  MedianMeter step_, forward_backward_, wait_, compress_, collective_, optimizer_;
};

}  // namespace train
}  // namespace lowrank
