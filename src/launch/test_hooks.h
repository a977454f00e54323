#pragma once
// Test hooks of `lowrank train` (train_job.h lists them), to exercise fault handling end to end:
// a failure, a SIGKILL, a hang (SIGSTOP) or a NaN gradient at a given step of a given rank, and a
// failure writing the outputs. Read from LOWRANK_TEST_* environment variables. Private to
// src/launch.
#include "lowrank/train/trainer.h"

namespace lowrank {
namespace launch {

/// Installs on `trainer` the step and gradient hooks the environment asks of rank `rank`.
void install_test_hooks(train::Trainer& trainer, int rank);

/// The rank LOWRANK_TEST_FAIL_OUTPUTS_RANK names; -1 when unset.
int fail_outputs_rank();
/// Throws the injected failure writing the outputs when `rank` is `fail_rank`.
void fail_outputs_if(int fail_rank, int rank);

}  // namespace launch
}  // namespace lowrank
