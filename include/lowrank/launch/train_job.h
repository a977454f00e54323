#pragma once
// run_train_job: what `lowrank train` does after parsing its options.
//
//   * LOWRANK_WORKER is set (a child of the local launcher), or --nproc was not given and a
//     torchrun/mpirun/srun environment is present: this process is one worker of that job
//     (comm/launch_env.h reads rank, world size and rendezvous address from the environment).
//   * otherwise nproc (default 2) > 1: the local launcher (launcher.h) starts nproc workers of this
//     binary over 127.0.0.1 and waits; nproc = 1 trains in this process alone.
// Before launching, the options are validated and the dataset is read once, so bad input fails
// before any process is started or any file written. A worker (worker.h) connects (rendezvous
// first, so a failing rank makes the others fail fast instead of waiting for it), loads the data,
// trains (train/trainer.h) and, with --out, writes metrics.csv and summary.json (rank 0) and
// rank<r>.json (every rank).
//
// Intra-op threads per worker: worker_threads.h. Outputs: outputs.h (a non-empty --out is refused
// unless --overwrite or --resume; the directories are locked for the run's life). Resuming a
// finished run does nothing.
//
// Test hooks, to exercise fault handling end to end: the worker whose rank equals
// LOWRANK_TEST_FAIL_RANK throws at the start of step LOWRANK_TEST_FAIL_STEP (default 0); the one
// whose rank equals LOWRANK_TEST_KILL_RANK sends itself SIGKILL at the start of step
// LOWRANK_TEST_KILL_STEP, or SIGSTOP (it hangs) at LOWRANK_TEST_HANG_STEP when its rank equals
// LOWRANK_TEST_HANG_RANK; the one whose rank equals LOWRANK_TEST_NAN_RANK plants a NaN in its
// first gradient after backward() at step LOWRANK_TEST_NAN_STEP; the one whose rank equals
// LOWRANK_TEST_FAIL_OUTPUTS_RANK fails writing its outputs after training.
//
// LOWRANK_CHECK_ONLY=1 validates the options (and the compressor's) and returns 0 without reading
// data or touching a file: `lowrank compare` checks every configuration that way first.
#include "lowrank/launch/job_options.h"
#include "lowrank/launch/outputs.h"
#include "lowrank/launch/run_messages.h"
#include "lowrank/launch/worker_threads.h"
#include "lowrank/train/train_options.h"

namespace lowrank {
namespace launch {

/// Runs the job as described above. Returns the exit code: 0, or 128 + signal when the local
/// launcher was interrupted (130 for Ctrl-C, 143 for SIGTERM); errors throw c10::Error. In a
/// launched worker an error is left for the launcher (which reports it) and 1 is returned.
int run_train_job(const train::TrainOptions& options, const JobOptions& job);

}  // namespace launch
}  // namespace lowrank
