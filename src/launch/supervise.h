#pragma once
// Waiting for the local launcher's workers (launch_local's third step). Private to src/launch.
//
// supervise polls every 20 ms. It reaps every worker that has exited before acting on any failure:
// a worker killed from outside and the peer that lost its connection to it are then seen together,
// and the launcher's own SIGTERM is never mistaken for the cause. On the first failure, a failed
// spawn, or a signal to the launcher it stops every worker: SIGTERM now, SIGKILL grace_seconds
// later. A rank that a failed worker's report says failed with an error of its own (run_together)
// is still unwinding towards its report: it gets grace_seconds to report and exit before its
// SIGTERM, so that the launcher names its error, not the report pointing at it.
#include <signal.h>

#include <array>
#include <vector>

#include "spawn.h"

namespace lowrank {
namespace launch {

/// While alive, SIGINT, SIGTERM and SIGHUP to this process are caught (for supervise to forward to
/// the workers) instead of ending it; the old handlers come back on destruction. One at a time.
class SignalScope {
 public:
  SignalScope();
  ~SignalScope();
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;
  /// The last signal caught since construction; 0 = none.
  static int received();

 private:
  std::array<struct sigaction, 3> old_{};
};

/// Waits until every worker has exited, stopping them all as described above (at once when
/// `stop_now`, after a failed spawn). Forwards a signal the SignalScope caught: SIGINT as SIGINT,
/// SIGTERM or SIGHUP as SIGTERM. Returns that signal, 0 when none came.
int supervise(std::vector<WorkerProcess>& workers, double grace_seconds, bool stop_now);

/// Once every worker has exited: reads the rest of each error pipe, closes it, and returns the
/// outcomes in rank order.
std::vector<WorkerOutcome> collect_outcomes(std::vector<WorkerProcess>& workers);

}  // namespace launch
}  // namespace lowrank
