#include "lowrank/train/launcher.h"

#include <arpa/inet.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <algorithm>
#include <limits>
#include <set>
#include <sstream>

extern char** environ;

namespace lowrank {
namespace train {
namespace {

// How often the launcher polls its children.
constexpr useconds_t kPollMicros = 20000;
constexpr const char* kErrorMagic = "lowrank-error v1";

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

// Installs the forwarding handlers for the lifetime of one launch and restores the old ones.
class SignalScope {
 public:
  SignalScope() {
    g_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~SignalScope() {
    for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &old_[i], nullptr);
  }

 private:
  static constexpr std::array<int, 3> kSignals{SIGINT, SIGTERM, SIGHUP};
  std::array<struct sigaction, 3> old_{};
};
constexpr std::array<int, 3> SignalScope::kSignals;

struct Child {
  int rank = 0;
  pid_t pid = -1;
  bool running = false;
  bool stopped_by_us = false;  // we sent it a signal before it exited
  uint64_t sent_signals = 0;   // bit s: we sent it signal s
  int status = 0;
  int64_t exit_ns = 0;         // when the launcher saw it exit
  std::string error;           // its report, parsed
  int64_t error_ns = -1;       // timestamp in its report
  int pipe_read = -1;          // read end of its error pipe
  int pipe_write = -1;         // write end (the child's fd kErrorFd), closed here after fork
  std::string raw;             // bytes read from the pipe so far
};

// The fd a worker writes its error report to (LOWRANK_ERROR_FD). A pipe, not a file: nothing is
// left behind when the launcher itself is killed.
constexpr int kErrorFd = 3;

bool is_launcher_variable(const std::string& key) {
  static const std::set<std::string> vars = {
      "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
      "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", kWorkerEnv, kErrorFdEnv};
  return vars.count(key) > 0;
}

// Reads what the child has written to its error pipe so far (non-blocking).
void drain_pipe(Child& c) {
  if (c.pipe_read < 0) return;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(c.pipe_read, buf, sizeof(buf));
    if (n > 0) {
      if (c.raw.size() < (1u << 20)) c.raw.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
      ::close(c.pipe_read);  // EOF: every writer is gone
      c.pipe_read = -1;
    }
    if (n < 0 && errno == EINTR) continue;
    return;
  }
}

void parse_error_report(Child& c) {
  std::string text = c.raw;
  const std::string head = std::string(kErrorMagic) + "\n";
  if (text.rfind(head, 0) == 0) {
    text = text.substr(head.size());
    const auto nl = text.find('\n');
    c.error_ns = std::strtoll(text.substr(0, nl).c_str(), nullptr, 10);
    text = nl == std::string::npos ? "" : text.substr(nl + 1);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  c.error = text;
}

// Killed by a signal the launcher did not send (kill -9 by hand, the OOM killer, a segfault).
bool died_abruptly(const Child& c) {
  return WIFSIGNALED(c.status) && !(c.sent_signals & (uint64_t(1) << WTERMSIG(c.status)));
}

// How much later than the earliest error report an abrupt death may be seen and still count as
// the cause (the launcher polls every kPollMicros; a peer reports the lost connection at once).
constexpr int64_t kAbruptSlackNs = 500000000;

std::string describe_status(const Child& c) {
  std::ostringstream os;
  if (WIFEXITED(c.status)) {
    os << "exit code " << WEXITSTATUS(c.status);
  } else if (WIFSIGNALED(c.status)) {
    os << "killed by signal " << WTERMSIG(c.status) << " (" << strsignal(WTERMSIG(c.status)) << ")";
  } else {
    os << "status " << c.status;
  }
  return os.str();
}

bool failed(const Child& c) {
  const bool ok = WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0;
  if (ok) return false;
  // A worker we stopped failed only if it reported an error of its own.
  return !c.stopped_by_us || !c.error.empty();
}

void signal_all(std::vector<Child>& children, int sig) {
  for (auto& c : children) {
    if (!c.running) continue;
    ::kill(c.pid, sig);
    c.stopped_by_us = true;
    c.sent_signals |= uint64_t(1) << sig;
  }
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

void LaunchOptions::validate() const {
  TORCH_CHECK(nproc() >= 1, "nproc must be >= 1, got ", nproc());
  TORCH_CHECK(!executable().empty(), "executable must not be empty");
  TORCH_CHECK(!master_addr().empty(), "master_addr must not be empty");
  TORCH_CHECK(master_port() >= 0 && master_port() < 65536, "master_port must lie in [0, 65535] (0 = pick a free one), got ",
              master_port());
  TORCH_CHECK(std::isfinite(grace_seconds()) && grace_seconds() >= 0, "grace_seconds must be >= 0, got ",
              grace_seconds());
}

int find_free_port(const std::string& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TORCH_CHECK(fd >= 0, "cannot create a socket to find a free port: ", std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = 0;
  TORCH_CHECK(::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr) == 1, "find_free_port: '", addr,
              "' is not an IPv4 address");
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    const int err = errno;
    ::close(fd);
    TORCH_CHECK(false, "cannot bind a socket on ", addr, " to find a free port: ", std::strerror(err));
  }
  socklen_t len = sizeof(sa);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  ::close(fd);
  return ntohs(sa.sin_port);
}

void check_port_free(const std::string& addr, int port) {
  TORCH_CHECK(port > 0 && port < 65536, "port ", port, " is outside [1, 65535]");
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TORCH_CHECK(fd >= 0, "cannot create a socket to check port ", port, ": ", std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // as the rendezvous store does
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);  // the store listens on every interface
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 && ::listen(fd, 1) == 0;
  const int err = errno;
  ::close(fd);
  TORCH_CHECK(ok, "port ", port, " on ", addr, " is already in use (", std::strerror(err),
              "): rank 0 could not host the rendezvous there; choose another --master-port, or omit it to let ",
              "the launcher pick a free one");
}

std::vector<std::string> own_argv() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  TORCH_CHECK(f.good(), "cannot read /proc/self/cmdline to restart this program as workers");
  std::vector<std::string> out;
  std::string arg;
  while (std::getline(f, arg, '\0')) out.push_back(arg);
  TORCH_CHECK(!out.empty(), "/proc/self/cmdline is empty");
  return out;
}

bool started_by_launcher() {
  const char* v = std::getenv(kWorkerEnv);
  return v && *v;
}

bool report_error_to_launcher(const std::string& message) {
  const char* v = std::getenv(kErrorFdEnv);
  if (!v || !*v) return false;
  const int fd = std::atoi(v);
  if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) return false;
  const std::string text = std::string(kErrorMagic) + "\n" + std::to_string(monotonic_ns()) + "\n" + message + "\n";
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

int launch_local(const LaunchOptions& o) {
  o.validate();
  int port = o.master_port();
  if (port == 0) {
    port = find_free_port(o.master_addr());
  } else {
    check_port_free(o.master_addr(), port);
  }
  const std::vector<std::string> argv_s = o.argv().empty() ? own_argv() : o.argv();

  // Everything the children need is built before fork(): after it, only async-signal-safe calls.
  std::vector<std::string> base_env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    if (!is_launcher_variable(kv.substr(0, kv.find('=')))) base_env.push_back(kv);
  }
  for (const auto& kv : o.env()) base_env.push_back(kv.first + "=" + kv.second);
  std::vector<char*> argv_c;
  for (const auto& a : argv_s) argv_c.push_back(const_cast<char*>(a.c_str()));
  argv_c.push_back(nullptr);

  std::vector<Child> children(o.nproc());
  std::vector<std::vector<std::string>> envs(o.nproc());
  std::vector<std::vector<char*>> envs_c(o.nproc());
  for (int r = 0; r < o.nproc(); ++r) {
    children[r].rank = r;
    int fds[2];
    TORCH_CHECK(::pipe2(fds, O_CLOEXEC) == 0, "cannot create the error pipe of worker rank ", r, ": ",
                std::strerror(errno));
    ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
    children[r].pipe_read = fds[0];
    children[r].pipe_write = fds[1];
    envs[r] = base_env;
    for (const auto& kv : std::vector<std::pair<std::string, std::string>>{
             {"RANK", std::to_string(r)},
             {"WORLD_SIZE", std::to_string(o.nproc())},
             {"LOCAL_RANK", std::to_string(r)},
             {"LOCAL_WORLD_SIZE", std::to_string(o.nproc())},
             {"MASTER_ADDR", o.master_addr()},
             {"MASTER_PORT", std::to_string(port)},
             {kWorkerEnv, "1"},
             {kErrorFdEnv, std::to_string(kErrorFd)}})
      envs[r].push_back(kv.first + "=" + kv.second);
    for (auto& s : envs[r]) envs_c[r].push_back(const_cast<char*>(s.c_str()));
    envs_c[r].push_back(nullptr);
  }

  SignalScope signals;
  const pid_t parent = ::getpid();
  const char* exe = o.executable().c_str();
  std::string spawn_error;
  for (int r = 0; r < o.nproc(); ++r) {
    const bool quiet = o.quiet_workers() && r != 0;
    const int pipe_write = children[r].pipe_write;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      // Its error pipe becomes fd kErrorFd, open across execve (dup2 clears FD_CLOEXEC).
      if (pipe_write == kErrorFd) ::fcntl(kErrorFd, F_SETFD, 0);
      else ::dup2(pipe_write, kErrorFd);
      if (quiet) {
        const int devnull = ::open("/dev/null", O_WRONLY);
        if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);
      }
      ::execve(exe, argv_c.data(), envs_c[r].data());
      const char msg[] = "lowrank launcher: execve failed for the worker program\n";
      (void)!::write(STDERR_FILENO, msg, sizeof(msg) - 1);
      ::_exit(127);
    }
    if (pid < 0) {
      spawn_error = std::string("cannot start worker rank ") + std::to_string(r) + ": fork failed: " + std::strerror(errno);
      break;
    }
    children[r].pid = pid;
    children[r].running = true;
  }
  for (auto& c : children) {
    ::close(c.pipe_write);
    c.pipe_write = -1;
  }

  // Wait; on the first failure (or a signal to us, or a failed spawn) stop everyone.
  bool stopping = !spawn_error.empty();
  int64_t kill_at = 0;
  if (stopping) {
    signal_all(children, SIGTERM);
    kill_at = monotonic_ns() + int64_t(o.grace_seconds() * 1e9);
  }
  int interrupted_by = 0;
  for (;;) {
    // A signal to the launcher (Ctrl-C reaches the workers too) stops the job; check it before
    // reaping, so workers killed by the same signal are not reported as failures.
    if (g_signal != 0 && interrupted_by == 0) {
      interrupted_by = g_signal;
      stopping = true;
      signal_all(children, g_signal == SIGINT ? SIGINT : SIGTERM);
      kill_at = monotonic_ns() + int64_t(o.grace_seconds() * 1e9);
    }
    // Reap every child that has exited before acting on any failure: a worker killed from outside
    // and the peer that lost its connection to it are then seen together, and the launcher's own
    // SIGTERM is not mistaken for the cause.
    bool any_running = false;
    bool new_failure = false;
    for (auto& c : children) {
      drain_pipe(c);
      if (!c.running) continue;
      int status = 0;
      const pid_t got = ::waitpid(c.pid, &status, WNOHANG);
      if (got == c.pid || (got < 0 && errno == ECHILD)) {
        c.running = false;
        c.status = got == c.pid ? status : 0;
        c.exit_ns = monotonic_ns();
      } else {
        any_running = true;
      }
    }
    for (auto& c : children) {
      if (c.running || c.exit_ns == 0) continue;
      drain_pipe(c);
      parse_error_report(c);
      if (!stopping && failed(c)) new_failure = true;
    }
    if (new_failure) {
      stopping = true;
      signal_all(children, SIGTERM);
      kill_at = monotonic_ns() + int64_t(o.grace_seconds() * 1e9);
    }
    if (!any_running) break;
    if (stopping && monotonic_ns() >= kill_at) signal_all(children, SIGKILL);
    ::usleep(kPollMicros);
  }
  for (auto& c : children) {
    drain_pipe(c);
    parse_error_report(c);
    if (c.pipe_read >= 0) ::close(c.pipe_read);
  }

  TORCH_CHECK(spawn_error.empty(), spawn_error);
  if (interrupted_by != 0) {
    std::ostringstream msg;
    msg << "interrupted by signal " << interrupted_by << " (" << strsignal(interrupted_by) << "); stopped all "
        << o.nproc() << " workers";
    throw LaunchInterrupted(interrupted_by, msg.str());
  }
  const Child* root = nullptr;
  auto when = [](const Child& c) { return c.error_ns >= 0 ? c.error_ns : c.exit_ns; };
  std::vector<int> stopped;
  // The root cause: a worker that died abruptly (its peers then fail with "connection closed"),
  // seen no later than shortly after the earliest error report; else the earliest report.
  int64_t first_report = std::numeric_limits<int64_t>::max();
  for (const auto& c : children)
    if (failed(c) && c.error_ns >= 0) first_report = std::min(first_report, c.error_ns);
  auto is_cause = [&](const Child& c) {
    return died_abruptly(c) &&
           (first_report == std::numeric_limits<int64_t>::max() || c.exit_ns <= first_report + kAbruptSlackNs);
  };
  for (const auto& c : children) {
    if (failed(c)) {
      const bool earlier = !root || (is_cause(c) != is_cause(*root) ? is_cause(c) : when(c) < when(*root));
      if (earlier) root = &c;
    } else if (c.stopped_by_us) {
      stopped.push_back(c.rank);
    }
  }
  if (!root) return port;
  std::ostringstream msg;
  msg << "worker rank " << root->rank << " of " << o.nproc() << " failed (" << describe_status(*root) << ")";
  msg << (root->error.empty() ? std::string(" without an error message; its stderr is above") : ": " + root->error);
  for (const auto& c : children)
    if (&c != root && failed(c)) {
      msg << "\n  rank " << c.rank << " also failed (" << describe_status(c) << ")";
      msg << (c.error == root->error && !c.error.empty() ? std::string(" with the same error")
                                                           : (c.error.empty() ? "" : ": " + first_line(c.error)));
    }
  if (!stopped.empty()) {
    msg << "\n  the launcher stopped rank" << (stopped.size() > 1 ? "s" : "");
    for (size_t i = 0; i < stopped.size(); ++i) msg << (i ? ", " : " ") << stopped[i];
  }
  TORCH_CHECK(false, msg.str());
}

}  // namespace train
}  // namespace lowrank
