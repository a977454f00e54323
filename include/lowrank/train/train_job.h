#pragma once
// run_train_job: what `lowrank train` does after parsing its options.
//
//   * LOWRANK_WORKER is set (a child of the local launcher), or --nproc was not given and a
//     torchrun/mpirun/srun environment is present: this process is one worker of that job
//     (comm/launch_env.h reads rank, world size and rendezvous address from the environment).
//   * otherwise nproc (default 2) > 1: the local launcher (launcher.h) starts nproc workers of this
//     binary over 127.0.0.1 and waits; nproc = 1 trains in this process alone.
// Before launching, the options are validated and the dataset is read once, so bad input fails
// before any process is started or any file written. A worker connects (rendezvous first, so a
// failing rank makes the others fail fast instead of waiting for it), loads the data, trains
// (train/trainer.h) and, with --out, writes metrics.csv and summary.json (rank 0) and
// rank<r>.json (every rank).
//
// Intra-op threads per worker: threads if given, else max(1, cores available / processes on this
// machine), the latter from LOCAL_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_SIZE or SLURM_NTASKS_PER_NODE.
//
// Outputs: a non-empty --out directory (or a --checkpoint-dir that already holds checkpoints) is
// refused before any worker starts, unless --overwrite (which removes lowrank's own files there
// and nothing else) or --resume (which continues the files) says otherwise. The directories are
// locked for the run's life (by the local launcher, or by rank 0 of an external job), so a second
// run on one of them is refused naming the first. Resuming a finished run does nothing.
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
#include <torch/arg.h>

#include <optional>
#include <string>
#include <vector>

#include "lowrank/files.h"
#include "lowrank/train/train_options.h"

namespace lowrank {
namespace train {

struct JobOptions {
  /// Local worker processes; nullopt = not given (join an external job, else 2). Default nullopt.
  TORCH_ARG(std::optional<int>, nproc) = std::nullopt;
  /// Rendezvous address; "" = MASTER_ADDR, else 127.0.0.1. Default "".
  TORCH_ARG(std::string, master_addr) = "";
  /// Rendezvous port; 0 = MASTER_PORT (external job) or a free port (local launcher). Default 0.
  TORCH_ARG(int, master_port) = 0;
  /// Address of this machine for gloo's transport (CommOptions::hostname); "" = derived. Default "".
  TORCH_ARG(std::string, hostname) = "";
  /// Seconds before a rendezvous or collective fails instead of hanging. Default 300.
  TORCH_ARG(double, timeout_seconds) = 300.0;
  /// Intra-op threads per worker; 0 = max(1, cores / local processes). Default 0.
  TORCH_ARG(int, threads) = 0;
  /// Let a non-empty --out (and a --checkpoint-dir with checkpoints) be reused: lowrank's own files
  /// there are removed first. Default false.
  TORCH_ARG(bool, overwrite) = false;

 public:
  void validate() const;
};

/// Runs the job as described above. Returns the exit code: 0, or 128 + signal when the local
/// launcher was interrupted (130 for Ctrl-C, 143 for SIGTERM); errors throw c10::Error. In a
/// launched worker an error is left for the launcher (which reports it) and 1 is returned.
int run_train_job(const TrainOptions& options, const JobOptions& job);

/// Locks held on the directories a run writes, for its life (files.h, DirectoryLock).
using OutputLocks = std::vector<DirectoryLock>;

/// Checks and prepares the output and checkpoint directories as described above; throws naming
/// the directory and what is in it. Validates --resume first (a complete checkpoint must exist),
/// then locks --out and the checkpoint root (a second run on either is refused, naming the first),
/// and only then removes anything: with --overwrite, lowrank's own files in --out and the old
/// checkpoints of a --checkpoint-dir that is not the one resumed from (paths are compared as files,
/// so "ck", "ck/" and "./ck" are one directory). A resumed run removes nothing here.
OutputLocks prepare_outputs(const TrainOptions& options, bool overwrite);
/// After a resumed run's checkpoint has loaded: removes the summary.json and rank<r>.json of `out`
/// (the run writes new ones when it finishes; stale ones must not sit beside its partial metrics).
void remove_finished_outputs(const std::string& out);

/// Lines of "warning: ..." for settings that are legal but almost certainly not meant (a rank so
/// high that nothing is compressed, warm-up longer than the run, ...).
std::vector<std::string> start_warnings(const TrainOptions& options, const GradientReducer& reducer,
                                        int64_t total_steps);

/// CPUs this process may run on (sched_getaffinity), at least 1.
int cores_available();
/// Processes of this job on this machine, from the launchers' variables; 1 when none is set.
int local_processes();
/// requested if > 0, else max(1, cores / processes).
int choose_threads(int requested, int cores, int processes);

}  // namespace train
}  // namespace lowrank
