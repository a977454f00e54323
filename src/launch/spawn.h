#pragma once
// Starting the local launcher's workers (launch_local's second step), and the launcher's handle on
// each one while it runs. Private to src/launch.
//
// Each worker gets an error pipe: the read end stays here (non-blocking), the write end becomes
// the worker's fd kErrorFd (worker_env.h), open across execve. Everything the children need is
// built before fork(): after it, only async-signal-safe calls.
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/launch/root_cause.h"

namespace lowrank {
namespace launch {

struct WorkerProcess {
  /// Rank, status, signals sent, report, times: what root_cause.h reads once it has exited.
  WorkerOutcome out;
  pid_t pid = -1;
  bool running = false;
  /// Deferred SIGTERM (CLOCK_MONOTONIC ns): a rank said to have failed may report first; 0 = none.
  int64_t term_at = 0;
  /// SIGKILL after the grace period; 0 = none.
  int64_t kill_at = 0;
  /// Read end of its error pipe; -1 once closed.
  int pipe_read = -1;
  /// Write end (the child's kErrorFd); closed here once every worker is forked.
  int pipe_write = -1;
  /// Bytes read from the pipe so far (at most 1 MiB is kept).
  std::string raw;
};

/// One WorkerProcess per rank 0..nproc-1, each with its error pipe open; throws naming the rank
/// when a pipe cannot be made.
std::vector<WorkerProcess> open_error_pipes(int nproc);

/// Forks and execs `executable` with `argv` and envs[rank] for every worker in order; ranks > 0
/// get stdout on /dev/null when `quiet_workers`; each child gets PR_SET_PDEATHSIG (SIGTERM).
/// Stops at the first fork that fails and returns "cannot start worker rank R: fork failed: ...",
/// else "". Closes every write end in this process either way.
std::string spawn_workers(std::vector<WorkerProcess>& workers, const std::string& executable,
                          const std::vector<std::string>& argv, const std::vector<std::vector<std::string>>& envs,
                          bool quiet_workers);

/// Reads what the worker has written to its error pipe so far without blocking; closes the pipe
/// at EOF (every writer is gone).
void drain_pipe(WorkerProcess& w);
/// Drains the pipe and parses what it holds into w.out.error and w.out.error_ns.
void read_report(WorkerProcess& w);
/// Sends `sig` to a running worker and records it in w.out.sent_signals.
void signal_worker(WorkerProcess& w, int sig);

}  // namespace launch
}  // namespace lowrank
