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
// and its message. When several failed, the root cause is a worker killed by a signal the launcher
// did not send (kill -9, the OOM killer, a crash: its peers then fail with "connection closed"),
// else the one whose error was reported first (reports carry a CLOCK_MONOTONIC timestamp). Workers also get PR_SET_PDEATHSIG, so they do
// not outlive a launcher that is killed outright; SIGINT/SIGTERM/SIGHUP to the launcher are
// forwarded to the workers.
#include <torch/arg.h>

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
  /// Seconds between SIGTERM and SIGKILL when stopping workers. Default 5.
  TORCH_ARG(double, grace_seconds) = 5.0;
  /// Send the stdout of ranks > 0 to /dev/null. Default true.
  TORCH_ARG(bool, quiet_workers) = true;
  /// Extra environment variables for every worker. Default empty.
  TORCH_ARG(EnvList, env) = {};

 public:
  void validate() const;
};

/// Starts the workers and waits for all of them. Returns the rendezvous port when every worker
/// exited 0; otherwise stops the rest and throws (see above).
int launch_local(const LaunchOptions& options);

/// A TCP port that is free on `addr` right now (bound to port 0, then released).
int find_free_port(const std::string& addr = "127.0.0.1");
/// Throws "port <p> on <addr> is already in use ..." when a listening socket cannot bind it.
void check_port_free(const std::string& addr, int port);
/// This process's arguments as /proc/self/cmdline lists them.
std::vector<std::string> own_argv();

/// True in a process started by launch_local (LOWRANK_WORKER is set).
bool started_by_launcher();
/// In a launched worker: writes `message` to the launcher's pipe (LOWRANK_ERROR_FD) and returns
/// true; returns false when there is no such file to write.
bool report_error_to_launcher(const std::string& message);

}  // namespace train
}  // namespace lowrank
