#pragma once
// One worker of a `lowrank train` job, as a sequence of steps: join (read the launch environment,
// set the threads), rendezvous (first, so a failing rank makes the others fail fast instead of
// waiting for it), check the outputs (an external job's rank 0 does it here; a local launch did it
// before starting the workers), load the data, build the trainer (and resume), print the start
// lines, train, and with --out write metrics.csv and summary.json (rank 0) and rank<r>.json
// (every rank). Each step that can fail on one rank runs through run_together, so every rank
// stops with an error naming that rank instead of hanging.
#include "lowrank/launch/job_options.h"
#include "lowrank/train/train_options.h"

namespace lowrank {
namespace launch {

/// Runs this process as one worker: of a local launch or an external job, or `alone` (world size
/// 1, no rendezvous). Returns 0; errors throw c10::Error, except in a worker the local launcher
/// started, where the error goes to the launcher (report_error_to_launcher) and 1 is returned.
int run_worker(const train::TrainOptions& options, const JobOptions& job, bool alone);

}  // namespace launch
}  // namespace lowrank
