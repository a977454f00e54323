#pragma once
// Local launcher: `lowrank train --nproc N` starts N worker processes on this machine and waits.
//
// Each worker is `executable argv...` (by default this very binary with this process's own
// arguments, re-read from /proc/self/cmdline) with the torchrun-style environment RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT plus LOWRANK_WORKER=1 (so the
// child acts as a worker even though its arguments say --nproc) and LOWRANK_ERROR_FD=3, the write
// end of a pipe where the worker leaves its error message before exiting non-zero
// (report_error_to_launcher). Pipes leave nothing behind, even when the launcher is SIGKILLed.
// Any mpirun/srun rank variables inherited from the caller are removed.
//
// Rank 0 keeps stdout and stderr; the other ranks keep stderr (quiet_workers). If any worker exits
// non-zero or dies of a signal, the launcher sends SIGTERM to the others, SIGKILL after
// grace_seconds, reaps every child, and throws c10::Error naming the failed rank, its exit status
// and its message. A rank that another rank's report says failed with an error of its own
// (run_together's "rank 1 failed while ... (see its error)") gets grace_seconds to report that
// error before it is stopped. When several failed, choose_root_cause picks the headline (see
// there): a rank's own report or death always wins over a report that blames it. Workers also get
// PR_SET_PDEATHSIG, so they do not outlive a launcher that is killed outright; SIGINT/SIGTERM/SIGHUP
// to the launcher are forwarded to the workers.
#include <torch/arg.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lowrank {
namespace train {

constexpr const char* kWorkerEnv = "LOWRANK_WORKER";
constexpr const char* kErrorFdEnv = "LOWRANK_ERROR_FD";

/// Thrown by launch_local when the launcher itself got SIGINT/SIGTERM/SIGHUP (after stopping every
/// worker); `lowrank train` exits with 128 + signal, as shells expect.
class LaunchInterrupted : public std::runtime_error {
 public:
  LaunchInterrupted(int signal, const std::string& what) : std::runtime_error(what), signal_(signal) {}
  int signal() const { return signal_; }

 private:
  int signal_;
};

/// Extra environment variables: (name, value) pairs.
using EnvList = std::vector<std::pair<std::string, std::string>>;

struct LaunchOptions {
  /// Worker processes (ranks 0..nproc-1). Default 2.
  TORCH_ARG(int, nproc) = 2;
  /// Program each worker runs. Default "/proc/self/exe" (this binary).
  TORCH_ARG(std::string, executable) = "/proc/self/exe";
  /// The workers' argv, argv[0] included; empty = this process's own. Default empty.
  TORCH_ARG(std::vector<std::string>, argv) = {};
  /// Rendezvous address handed to the workers. Default "127.0.0.1".
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// Rendezvous port; 0 = a free port the launcher picks. A given port must be free. Default 0.
  TORCH_ARG(int, master_port) = 0;
  /// Seconds between SIGTERM and SIGKILL when stopping workers; also how long a rank that another
  /// rank's report says failed may take to report its own error before it is stopped. Default 5.
  TORCH_ARG(double, grace_seconds) = 5.0;
  /// Send the stdout of ranks > 0 to /dev/null. Default true.
  TORCH_ARG(bool, quiet_workers) = true;
  /// Extra environment variables for every worker. Default empty.
  TORCH_ARG(EnvList, env) = {};

 public:
  void validate() const;
};

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
/// (reducer/agreement.h) and of a failed collective (comm/process_group_communicator.cpp).
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

/// Starts the workers and waits for all of them. Returns the rendezvous port when every worker
/// exited 0; otherwise stops the rest and throws (see above).
int launch_local(const LaunchOptions& options);

/// A TCP port that is free on `addr` right now (bound to port 0, then released). `addr` is an IPv4
/// or IPv6 address or a host name ("localhost"); throws naming it when it does not resolve to an
/// address of this machine.
int find_free_port(const std::string& addr = "127.0.0.1");
/// Throws "port <p> on <addr> is already in use ..." when a listening socket cannot bind it.
void check_port_free(const std::string& addr, int port);
/// This process's arguments as /proc/self/cmdline lists them.
std::vector<std::string> own_argv();

/// Bytes of memory this machine can still give a new process: /proc/meminfo's MemAvailable,
/// lowered to the room left under the cgroup memory limit in /sys/fs/cgroup (v2 or v1) when there
/// is one; -1 when neither can be read.
int64_t available_memory_bytes();
/// MemAvailable of a /proc/meminfo text, in bytes; -1 when it has none.
int64_t parse_mem_available(const std::string& meminfo);

/// True in a process started by launch_local (LOWRANK_WORKER is set).
bool started_by_launcher();
/// In a launched worker: writes `message` to the launcher's pipe (LOWRANK_ERROR_FD) and returns
/// true; returns false when there is no such file to write.
bool report_error_to_launcher(const std::string& message);

}  // namespace train
}  // namespace lowrank
