#include "supervise.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <set>

#include "lowrank/launch/error_report.h"

namespace lowrank {
namespace launch {
namespace {

// How often the launcher polls its children.
constexpr useconds_t kPollMicros = 20000;

constexpr std::array<int, 3> kForwardedSignals{SIGINT, SIGTERM, SIGHUP};

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

// One supervise() call: the workers and what the launcher has decided about them so far.
class Supervisor {
 public:
  Supervisor(std::vector<WorkerProcess>& workers, double grace_seconds)
      : workers_(workers), grace_ns_(int64_t(grace_seconds * 1e9)) {}

  int run(bool stop_now) {
    stopping_ = stop_now;
    if (stopping_) stop_all({});
    for (;;) {
      // Checked before reaping, so workers killed by the same signal (Ctrl-C reaches them too)
      // are not reported as failures.
      forward_signal();
      const bool any_running = reap();
      if (read_new_failures()) stop_for_failure();
      if (!any_running) break;
      fire_timers();
      ::usleep(kPollMicros);
    }
    return interrupted_by_;
  }

 private:
  // SIGTERM now and SIGKILL after the grace period, except for the ranks in `wait_for`: their
  // SIGTERM comes after the grace period. Workers already being stopped keep their timers.
  void stop_all(const std::set<int>& wait_for) {
    const int64_t now = monotonic_ns();
    for (auto& w : workers_) {
      if (!w.running || w.kill_at != 0 || w.term_at != 0) continue;
      if (wait_for.count(w.out.rank)) {
        w.term_at = now + grace_ns_;
        continue;
      }
      signal_worker(w, SIGTERM);
      w.kill_at = now + grace_ns_;
    }
  }

  void forward_signal() {
    const int sig = SignalScope::received();
    if (sig == 0 || interrupted_by_ != 0) return;
    interrupted_by_ = sig;
    stopping_ = true;
    for (auto& w : workers_) signal_worker(w, sig == SIGINT ? SIGINT : SIGTERM);
    for (auto& w : workers_) {
      w.term_at = 0;
      w.kill_at = monotonic_ns() + grace_ns_;
    }
  }

  // Reaps every worker that has exited; true while any still runs.
  bool reap() {
    bool any_running = false;
    for (auto& w : workers_) {
      drain_pipe(w);
      if (!w.running) continue;
      int status = 0;
      const pid_t got = ::waitpid(w.pid, &status, WNOHANG);
      if (got == w.pid || (got < 0 && errno == ECHILD)) {
        w.running = false;
        w.out.status = got == w.pid ? status : 0;
        w.out.exit_ns = monotonic_ns();
      } else {
        any_running = true;
      }
    }
    return any_running;
  }

  // Reads the reports of the exited workers; true when one failed and nothing is being stopped yet.
  bool read_new_failures() {
    bool failure = false;
    for (auto& w : workers_) {
      if (w.running || w.out.exit_ns == 0) continue;
      read_report(w);
      if (!stopping_ && worker_failed(w.out)) failure = true;
    }
    return failure;
  }

  void stop_for_failure() {
    stopping_ = true;
    std::set<int> said_failed;
    for (const auto& w : workers_)
      if (!w.running && w.out.exit_ns != 0 && worker_failed(w.out) && !w.out.error.empty())
        for (int r : parse_blame(w.out.error).failed) said_failed.insert(r);
    stop_all(said_failed);
  }

  void fire_timers() {
    const int64_t now = monotonic_ns();
    for (auto& w : workers_) {
      if (!w.running) continue;
      if (w.term_at != 0 && now >= w.term_at) {
        signal_worker(w, SIGTERM);
        w.term_at = 0;
        w.kill_at = now + grace_ns_;
      } else if (w.kill_at != 0 && now >= w.kill_at) {
        signal_worker(w, SIGKILL);
      }
    }
  }

  std::vector<WorkerProcess>& workers_;
  const int64_t grace_ns_;
  bool stopping_ = false;
  int interrupted_by_ = 0;
};

}  // namespace

SignalScope::SignalScope() {
  g_signal = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < kForwardedSignals.size(); ++i) sigaction(kForwardedSignals[i], &sa, &old_[i]);
}

SignalScope::~SignalScope() {
  for (size_t i = 0; i < kForwardedSignals.size(); ++i) sigaction(kForwardedSignals[i], &old_[i], nullptr);
}

int SignalScope::received() { return g_signal; }

int supervise(std::vector<WorkerProcess>& workers, double grace_seconds, bool stop_now) {
  return Supervisor(workers, grace_seconds).run(stop_now);
}

std::vector<WorkerOutcome> collect_outcomes(std::vector<WorkerProcess>& workers) {
  std::vector<WorkerOutcome> outcomes;
  for (auto& w : workers) {
    read_report(w);
    if (w.pipe_read >= 0) ::close(w.pipe_read);
    w.pipe_read = -1;
    outcomes.push_back(w.out);
  }
  return outcomes;
}

}  // namespace launch
}  // namespace lowrank
