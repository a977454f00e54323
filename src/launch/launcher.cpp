#include "lowrank/launch/launcher.h"

#include <c10/util/Exception.h>
#include <string.h>

#include <fstream>
#include <sstream>

#include "spawn.h"
#include "supervise.h"

namespace lowrank {
namespace launch {
namespace {

// The given port, checked free, or a free one.
int rendezvous_port(const LaunchOptions& o) {
  if (o.master_port() == 0) return find_free_port(o.master_addr());
  check_port_free(o.master_addr(), o.master_port());
  return o.master_port();
}

LaunchInterrupted interrupted(int signal, int nproc) {
  std::ostringstream msg;
  msg << "interrupted by signal " << signal << " (" << strsignal(signal) << "); stopped all " << nproc << " workers";
  return LaunchInterrupted(signal, msg.str());
}

}  // namespace

std::vector<std::string> own_argv() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  TORCH_CHECK(f.good(), "cannot read /proc/self/cmdline to restart this program as workers");
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(f, arg, '\0')) out.push_back(arg);
  TORCH_CHECK(!out.empty(), "/proc/self/cmdline is empty");
  return out;
}

int launch_local(const LaunchOptions& o) {
  o.validate();
  const int port = rendezvous_port(o);
  const std::vector<std::string> argv = o.argv().empty() ? own_argv() : o.argv();
  const auto envs = worker_environments(o, port, own_environment());
  std::vector<WorkerProcess> workers = open_error_pipes(o.nproc());

  const SignalScope signals;  // from before the first fork: a Ctrl-C then reaches supervise
  const std::string spawn_error = spawn_workers(workers, o.executable(), argv, envs, o.quiet_workers());
  const int interrupted_by = supervise(workers, o.grace_seconds(), /*stop_now=*/!spawn_error.empty());
  const std::vector<WorkerOutcome> outcomes = collect_outcomes(workers);

  TORCH_CHECK(spawn_error.empty(), spawn_error);
  if (interrupted_by != 0) throw interrupted(interrupted_by, o.nproc());
  const std::string failure = launch_failure_message(outcomes, o.nproc());
  TORCH_CHECK(failure.empty(), failure);
  return port;
}

}  // namespace launch
}  // namespace lowrank
