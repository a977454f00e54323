#pragma once
// The root cause of a failed local launch: which worker's failure the launcher's error names, and
// the error itself. Pure functions of what the launcher knows once every worker has exited (exit
// status, the signals it sent, each worker's report), so that every ordering and timing of a
// failure can be tested without starting a process.
//
// The hard case: when one rank fails, the others fail too, with reports that blame it ("rank 1
// failed while ... (see its error)", "Connection closed by peer"), often before its own report
// arrives. choose_root_cause reads who blames whom (parse_blame) so that a rank's own report or
// death always wins over a report that blames it.
#include <cstdint>
#include <string>
#include <vector>

namespace lowrank {
namespace launch {

/// What the launcher knows of one worker once it has exited: the input of choose_root_cause.
struct WorkerOutcome {
  int rank = 0;
  /// Its waitpid status.
  int status = 0;
  /// Bit s set: the launcher sent it signal s (SIGTERM, then SIGKILL, while stopping the job).
  uint64_t sent_signals = 0;
  /// Its error report (LOWRANK_ERROR_FD) without the header; "" when it left none.
  std::string error;
  /// The report's CLOCK_MONOTONIC timestamp in ns; -1 when it left none.
  int64_t error_ns = -1;
  /// When the launcher saw it exit (CLOCK_MONOTONIC ns).
  int64_t exit_ns = 0;
};

/// What one error report says about other ranks, read from the messages of run_together
/// (comm/agreement.h) and of a failed collective (comm/process_group_communicator.cpp).
struct ReportBlame {
  /// A consequence of another rank's failure: it names other ranks as failed or silent, or says
  /// that a collective or a connection failed ("collective timeout", "Connection closed by peer").
  bool secondary = false;
  /// Ranks it says failed with an error of their own ("rank 1 failed while ... (see its error)").
  std::vector<int> failed;
  /// Ranks it says stopped answering (hung or died), or rank 0 when its store does not answer.
  std::vector<int> silent;
};
/// Reads a worker's error report (see ReportBlame).
ReportBlame parse_blame(const std::string& report);

/// True when the worker counts as failed: it exited non-zero or died of a signal, and either the
/// launcher never signalled it or it left an error report (a worker the launcher stopped without
/// a report of its own was stopped, not failed).
bool worker_failed(const WorkerOutcome& w);
/// Killed by a signal the launcher did not send (kill -9 by hand, the OOM killer, a crash).
bool killed_from_outside(const WorkerOutcome& w);

/// Index into `workers` of the root cause of a failed launch, -1 when none failed. Deterministic
/// in the reports' contents; times only order reports of the same kind:
///  1. Only failed workers (worker_failed) count; a rank the launcher stopped is never the cause
///     unless it left a report of its own.
///  2. Primary failures win over secondary ones: a report that does not blame another rank (see
///     parse_blame), a death by a signal the launcher did not send, or a non-zero exit without a
///     report. A report blaming rank X therefore never wins over X's own report or death.
///  3. Among primaries: a worker killed from outside, seen at most 0.5 s after the earliest primary
///     report (its peers may report before the launcher's poll sees the death); else the earliest
///     (report timestamp, or exit time without one).
///  4. Among secondaries only: a rank blamed by another failed rank's report first, then the
///     earliest.
int choose_root_cause(const std::vector<WorkerOutcome>& workers);
/// How the worker ended, for the launcher's error: "exit code 1", "killed by signal 9 (Killed)",
/// or, for a worker that died of the launcher's own signal after it reported, "stopped by the
/// launcher with signal 15 (Terminated) after it reported its error".
std::string describe_outcome(const WorkerOutcome& w);
/// The launcher's error for these outcomes of an `nproc`-worker launch ("" when none failed):
/// "worker rank R of N failed (<status>): <its report>", a line per other failed rank, the ranks
/// the launcher stopped, and for a SIGKILL the launcher did not send the hint that the kernel's
/// out-of-memory killer sends one.
std::string launch_failure_message(const std::vector<WorkerOutcome>& workers, int nproc);

}  // namespace launch
}  // namespace lowrank
