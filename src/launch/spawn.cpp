#include "spawn.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lowrank/launch/error_report.h"
#include "lowrank/launch/worker_env.h"

namespace lowrank {
namespace launch {
namespace {

// A NULL-terminated array of pointers into `strings` (which must outlive it), for execve.
std::vector<char*> c_array(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (const auto& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// In the forked child: only async-signal-safe calls from here on.
[[noreturn]] void exec_worker(pid_t parent, int pipe_write, bool quiet, const char* exe, char* const* argv,
                              char* const* envp) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(127);
  // Its error pipe becomes fd kErrorFd, open across execve (dup2 clears FD_CLOEXEC).
  if (pipe_write == kErrorFd) ::fcntl(kErrorFd, F_SETFD, 0);
  else ::dup2(pipe_write, kErrorFd);
  if (quiet) {
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);
  }
  ::execve(exe, argv, envp);
  const char msg[] = "lowrank launcher: execve failed for the worker program\n";
  (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
  ::_exit(127);
}

}  // namespace

std::vector<WorkerProcess> open_error_pipes(int nproc) {
  std::vector<WorkerProcess> workers(nproc);
  for (int r = 0; r < nproc; ++r) {
    workers[r].out.rank = r;
    int fds[2];
    TORCH_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "cannot create the error pipe of worker rank ", r, ": ",
                std::strerror(errno));
    ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
    workers[r].pipe_read = fds[0];
    workers[r].pipe_write = fds[1];
  }
  return workers;
}

std::string spawn_workers(std::vector<WorkerProcess>& workers, const std::string& executable,
                          const std::vector<std::string>& argv, const std::vector<std::vector<std::string>>& envs,
                          bool quiet_workers) {
  TORCH_INTERNAL_ASSERT(envs.size() == workers.size(), "one environment per worker");
  std::vector<char*> argv_c = c_array(argv);
  std::vector<std::vector<char*>> envs_c;
  for (const auto& env : envs) envs_c.push_back(c_array(env));
  const pid_t parent = ::getpid();
  const char* exe = executable.c_str();
  std::string spawn_error;
  for (size_t r = 0; r < workers.size(); ++r) {
    const int pipe_write = workers[r].pipe_write;
    const bool quiet = quiet_workers && r != 0;
    char* const* envp = envs_c[r].data();
    const pid_t pid = ::fork();
    if (pid == 0) exec_worker(parent, pipe_write, quiet, exe, argv_c.data(), envp);
    if (pid < 0) {
      spawn_error = std::string("cannot start worker rank ") + std::to_string(r) + ": fork failed: " + std::strerror(errno);
      break;
    }
    workers[r].pid = pid;
    workers[r].running = true;
  }
  for (auto& w : workers) {
    ::close(w.pipe_write);
    w.pipe_write = -1;
  }
  return spawn_error;
}

void drain_pipe(WorkerProcess& w) {
  if (w.pipe_read < 0) return;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(w.pipe_read, buf, sizeof(buf));
    if (n > 0) {
      if (w.raw.size() < (1u << 20)) w.raw.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
      ::close(w.pipe_read);  // EOF: every writer is gone
      w.pipe_read = -1;
    }
    if (n < 0 && errno == EINTR) continue;
    return;
  }
}

void read_report(WorkerProcess& w) {
  drain_pipe(w);
  const ErrorReport report = parse_error_report(w.raw);
  w.out.error = report.error;
  w.out.error_ns = report.error_ns;
}

void signal_worker(WorkerProcess& w, int sig) {
  if (!w.running) return;
  ::kill(w.pid, sig);
  w.out.sent_signals |= uint64_t(1) << sig;
}

}  // namespace launch
}  // namespace lowrank
