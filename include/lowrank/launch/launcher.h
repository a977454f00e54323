#pragma once
// Local launcher: `lowrank train --nproc N` starts N worker processes on this machine and waits.
//
// launch_local runs four steps, each in its own file:
//   1. the rendezvous port (ports.h) and each rank's environment (worker_environments,
//      worker_env.h): the torchrun-style RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//      MASTER_ADDR, MASTER_PORT plus LOWRANK_WORKER=1 and LOWRANK_ERROR_FD=3, the write end of a
//      pipe where the worker leaves its error message before exiting non-zero
//      (report_error_to_launcher, error_report.h); mpirun/srun rank variables inherited from the
//      caller are removed;
//   2. spawning: each worker is `executable argv...` (by default this very binary with this
//      process's own arguments, re-read from /proc/self/cmdline). Rank 0 keeps stdout and stderr;
//      the other ranks keep stderr (quiet_workers). Workers get PR_SET_PDEATHSIG, so they do not
//      outlive a launcher that is killed outright;
//   3. supervising: if any worker exits non-zero or dies of a signal, the launcher sends SIGTERM to
//      the others, SIGKILL after grace_seconds, and reaps every child. A rank that another rank's
//      report says failed with an error of its own (run_together's "rank 1 failed while ... (see
//      its error)") gets grace_seconds to report that error before it is stopped. SIGINT/SIGTERM/
//      SIGHUP to the launcher are forwarded to the workers;
//   4. the root cause (root_cause.h): the launcher throws c10::Error naming the failed rank, its
//      exit status and its message. When several failed, choose_root_cause picks the headline: a
//      rank's own report or death always wins over a report that blames it.
// Pipes leave nothing behind, even when the launcher is SIGKILLed.
#include <stdexcept>
#include <string>
#include <vector>

#include "lowrank/launch/error_report.h"
#include "lowrank/launch/launch_options.h"
#include "lowrank/launch/ports.h"
#include "lowrank/launch/root_cause.h"
#include "lowrank/launch/worker_env.h"

namespace lowrank {
namespace launch {

/// Thrown by launch_local when the launcher itself got SIGINT/SIGTERM/SIGHUP (after stopping every
/// worker); `lowrank train` exits with 128 + signal, as shells expect.
class LaunchInterrupted : public std::runtime_error {
 public:
  LaunchInterrupted(int signal, const std::string& what) : std::runtime_error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

/// Starts the workers and waits for all of them. Returns the rendezvous port when every worker
/// exited 0; otherwise stops the rest and throws (see above).
int launch_local(const LaunchOptions& options);

/// This process's arguments as /proc/self/cmdline lists them.
std::vector<std::string> own_argv();

}  // namespace launch
}  // namespace lowrank
