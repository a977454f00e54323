#include "lowrank/train/launcher.h"

#include <arpa/inet.h>
#include <c10/util/Exception.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

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
  WorkerOutcome out;           // rank, status, signals sent, report, times
  pid_t pid = -1;
  bool running = false;
  int64_t term_at = 0;         // deferred SIGTERM (a rank said to have failed may report first); 0 = none
  int64_t kill_at = 0;         // SIGKILL after the grace period; 0 = none
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
  c.out.error_ns = -1;
  const std::string head = std::string(kErrorMagic) + "\n";
  if (text.rfind(head, 0) == 0) {
    text = text.substr(head.size());
    const auto nl = text.find('\n');
    c.out.error_ns = std::strtoll(text.substr(0, nl).c_str(), nullptr, 10);
    text = nl == std::string::npos ? "" : text.substr(nl + 1);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  c.out.error = text;
}

// How much later than the earliest primary error report a death by an outside signal may be seen
// and still count as the cause (the launcher polls every kPollMicros; a peer may report at once).
constexpr int64_t kAbruptSlackNs = 500000000;

bool sent(const WorkerOutcome& w, int sig) { return (w.sent_signals & (uint64_t(1) << sig)) != 0; }

void signal_child(Child& c, int sig) {
  if (!c.running) return;
  ::kill(c.pid, sig);
  c.out.sent_signals |= uint64_t(1) << sig;
}

void signal_all(std::vector<Child>& children, int sig) {
  for (auto& c : children) signal_child(c, sig);
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// The integers of "1, 2, 3".
std::vector<int> rank_list(const std::string& s) {
  std::vector<int> out;
  std::istringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::atoi(item.c_str()));
  return out;
}

void append_matches(const std::string& text, const std::regex& re, std::vector<int>& out) {
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    for (int r : rank_list((*it)[1].str()))
      if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
}

bool contains_icase(const std::string& text, const std::string& needle) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return std::tolower(ch); });
    return s;
  };
  return lower(text).find(lower(needle)) != std::string::npos;
}

// Every address `addr` resolves to (a numeric IPv4 or IPv6 address, or a host name).
std::vector<sockaddr_storage> resolve_addresses(const std::string& addr, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::vector<sockaddr_storage> out;
  const int rc = ::getaddrinfo(addr.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    *error = ::gai_strerror(rc);
    return out;
  }
  for (addrinfo* a = res; a; a = a->ai_next) {
    if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    out.push_back(ss);
  }
  ::freeaddrinfo(res);
  return out;
}

}  // namespace

ReportBlame parse_blame(const std::string& report) {
  // run_together: "rank 0: rank 1 failed while loading ... (see its error); every rank stopped"
  static const std::regex failed_re("ranks? ((?:[0-9]+, )*[0-9]+) failed while");
  // a failed collective: "rank 1 has stopped answering", "ranks 1, 2 have stopped answering"
  static const std::regex silent_re("ranks? ((?:[0-9]+, )*[0-9]+) (?:has|have) stopped answering");
  static const std::regex store_re("store hosted by rank ([0-9]+) does not answer");
  static const std::regex collective_re("#[0-9]+ failed \\(collective timeout");
  ReportBlame b;
  append_matches(report, failed_re, b.failed);
  append_matches(report, silent_re, b.silent);
  append_matches(report, store_re, b.silent);
  b.secondary = !b.failed.empty() || !b.silent.empty() || std::regex_search(report, collective_re) ||
                report.find("failed in the same collective") != std::string::npos ||
                contains_icase(report, "connection closed by peer") ||
                contains_icase(report, "connection reset by peer");
  return b;
}

bool worker_failed(const WorkerOutcome& w) {
  const bool ok = WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0;
  if (ok) return false;
  // A worker we stopped failed only if it reported an error of its own.
  return w.sent_signals == 0 || !w.error.empty();
}

bool killed_from_outside(const WorkerOutcome& w) { return WIFSIGNALED(w.status) && !sent(w, WTERMSIG(w.status)); }

int choose_root_cause(const std::vector<WorkerOutcome>& ws) {
  const int n = static_cast<int>(ws.size());
  std::vector<ReportBlame> blame(n);
  std::vector<int> primary, secondary;
  for (int i = 0; i < n; ++i) {
    if (!worker_failed(ws[i])) continue;
    if (!ws[i].error.empty()) blame[i] = parse_blame(ws[i].error);
    (blame[i].secondary ? secondary : primary).push_back(i);
  }
  auto when = [&](int i) { return ws[i].error_ns >= 0 ? ws[i].error_ns : ws[i].exit_ns; };
  // The smallest (rank_key, when, rank): the rank breaks ties, so the choice never depends on order.
  auto pick = [&](const std::vector<int>& among, const std::function<int(int)>& key) {
    int best = -1;
    for (int i : among) {
      if (best < 0) best = i;
      if (std::make_tuple(key(i), when(i), ws[i].rank) < std::make_tuple(key(best), when(best), ws[best].rank)) best = i;
    }
    return best;
  };
  if (!primary.empty()) {
    int64_t first_report = std::numeric_limits<int64_t>::max();
    for (int i : primary)
      if (ws[i].error_ns >= 0) first_report = std::min(first_report, ws[i].error_ns);
    return pick(primary, [&](int i) {
      const bool outside_first = killed_from_outside(ws[i]) && (first_report == std::numeric_limits<int64_t>::max() ||
                                                                ws[i].exit_ns <= first_report + kAbruptSlackNs);
      return outside_first ? 0 : 1;
    });
  }
  return pick(secondary, [&](int i) {
    for (int j : secondary) {
      if (j == i) continue;
      const auto& f = blame[j].failed;
      const auto& s = blame[j].silent;
      if (std::find(f.begin(), f.end(), ws[i].rank) != f.end() || std::find(s.begin(), s.end(), ws[i].rank) != s.end())
        return 0;
    }
    return 1;
  });
}

std::string describe_outcome(const WorkerOutcome& w) {
  std::ostringstream os;
  if (WIFEXITED(w.status)) {
    os << "exit code " << WEXITSTATUS(w.status);
  } else if (WIFSIGNALED(w.status)) {
    const int sig = WTERMSIG(w.status);
    if (sent(w, sig)) {
      os << "stopped by the launcher with signal " << sig << " (" << strsignal(sig) << ")";
      if (!w.error.empty()) os << " after it reported its error";
    } else {
      os << "killed by signal " << sig << " (" << strsignal(sig) << ")";
    }
  } else {
    os << "status " << w.status;
  }
  return os.str();
}

std::string launch_failure_message(const std::vector<WorkerOutcome>& ws, int nproc) {
  const int root_index = choose_root_cause(ws);
  if (root_index < 0) return "";
  const WorkerOutcome& root = ws[root_index];
  auto oom = [](const WorkerOutcome& w) { return killed_from_outside(w) && WTERMSIG(w.status) == SIGKILL; };
  std::ostringstream msg;
  msg << "worker rank " << root.rank << " of " << nproc << " failed (" << describe_outcome(root) << ")";
  msg << (root.error.empty() ? std::string(" without an error message; its stderr is above") : ": " + root.error);
  if (oom(root))
    msg << "\n  out of memory? The launcher did not send this SIGKILL; the kernel's out-of-memory killer does (see "
           "`dmesg` or `journalctl -k`): lower the batch size, --seq-len or the model size, or run fewer workers";
  std::vector<int> stopped;
  for (size_t i = 0; i < ws.size(); ++i) {
    const WorkerOutcome& c = ws[i];
    if (static_cast<int>(i) == root_index) continue;
    if (worker_failed(c)) {
      msg << "\n  rank " << c.rank << " also failed (" << describe_outcome(c) << ")";
      if (oom(c)) msg << " (out of memory? a SIGKILL the launcher did not send)";
      msg << (c.error == root.error && !c.error.empty() ? std::string(" with the same error")
                                                        : (c.error.empty() ? "" : ": " + first_line(c.error)));
    } else if (c.sent_signals != 0) {
      stopped.push_back(c.rank);
    }
  }
  if (!stopped.empty()) {
    msg << "\n  the launcher stopped rank" << (stopped.size() > 1 ? "s" : "");
    for (size_t i = 0; i < stopped.size(); ++i) msg << (i ? ", " : " ") << stopped[i];
  }
  return msg.str();
}

int64_t parse_mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream ls(line.substr(13));
    int64_t kb = -1;
    std::string unit;
    if (!(ls >> kb) || kb < 0) return -1;
    ls >> unit;
    return unit == "kB" || unit.empty() ? kb * 1024 : -1;
  }
  return -1;
}

int64_t available_memory_bytes() {
  auto read_all = [](const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return f ? ss.str() : std::string();
  };
  auto read_number = [&](const std::string& path) -> int64_t {
    const std::string s = read_all(path);
    if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return -1;  // "max", or no such file
    return std::strtoll(s.c_str(), nullptr, 10);
  };
  int64_t avail = parse_mem_available(read_all("/proc/meminfo"));
  // The room left under a cgroup limit (v2, else v1): a container may have far less than the host.
  // (A cgroup nested below the root one is not followed: /sys/fs/cgroup is the container's own
  // in the usual namespace setup.)
  int64_t limit = read_number("/sys/fs/cgroup/memory.max");
  int64_t used = read_number("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  // v1 reports "no limit" as a huge number (about 2^63 rounded to the page size).
  // The usage counts the page cache, which the kernel reclaims before it kills anything: the
  // inactive file pages (memory.stat: v2 inactive_file, v1 total_inactive_file) are room too.
  auto stat_field = [&](const std::string& path, const std::string& key) -> int64_t {
    std::istringstream in(read_all(path));
    for (std::string k; in >> k;) {
      long long v = 0;
      if (!(in >> v)) break;
      if (k == key) return v;
    }
    return 0;
  };
  int64_t reclaimable = stat_field("/sys/fs/cgroup/memory.stat", "inactive_file");
  if (reclaimable == 0) reclaimable = stat_field("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file");
  if (limit > 0 && limit < (int64_t(1) << 60) && used >= 0) {
    const int64_t room = std::max<int64_t>(0, limit - std::max<int64_t>(0, used - reclaimable));
    avail = avail < 0 ? room : std::min(avail, room);
  }
  return avail;
}

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
  std::string resolve_error;
  const auto addresses = resolve_addresses(addr, &resolve_error);
  TORCH_CHECK(!addresses.empty(), "master address '", addr, "' does not resolve to an IPv4 or IPv6 address (",
              resolve_error.empty() ? std::string("no address") : resolve_error,
              "): give one of this machine's addresses, e.g. --master-addr 127.0.0.1, localhost or ::1");
  std::string bind_error;
  for (const auto& a : addresses) {
    sockaddr_storage sa = a;
    const socklen_t len = sa.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (sa.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port = 0;
    else reinterpret_cast<sockaddr_in*>(&sa)->sin_port = 0;
    const int fd = ::socket(sa.ss_family, SOCK_STREAM, 0);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
      bind_error = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      continue;
    }
    socklen_t got = sizeof(sa);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &got);
    ::close(fd);
    return ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
  }
  TORCH_CHECK(false, "cannot bind a socket on ", addr, " to find a free port: ", bind_error,
              " (a local launch hosts the rendezvous on this machine: give one of its addresses, e.g. --master-addr "
              "127.0.0.1, localhost or ::1)");
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
    children[r].out.rank = r;
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

  // Wait; on the first failure (or a signal to us, or a failed spawn) stop everyone: SIGTERM now and
  // SIGKILL after the grace period. A rank that a failed worker's report says failed with an error
  // of its own (run_together) is still unwinding towards its report: it gets the grace period to
  // report and exit before its SIGTERM, so that the launcher names its error, not the report
  // pointing at it.
  const int64_t grace_ns = int64_t(o.grace_seconds() * 1e9);
  auto stop_all = [&](const std::set<int>& wait_for) {
    const int64_t now = monotonic_ns();
    for (auto& c : children) {
      if (!c.running || c.kill_at != 0 || c.term_at != 0) continue;  // already being stopped
      if (wait_for.count(c.out.rank)) {
        c.term_at = now + grace_ns;
        continue;
      }
      signal_child(c, SIGTERM);
      c.kill_at = now + grace_ns;
    }
  };
  bool stopping = !spawn_error.empty();
  if (stopping) stop_all({});
  int interrupted_by = 0;
  for (;;) {
    // A signal to the launcher (Ctrl-C reaches the workers too) stops the job; check it before
    // reaping, so workers killed by the same signal are not reported as failures.
    if (g_signal != 0 && interrupted_by == 0) {
      interrupted_by = g_signal;
      stopping = true;
      signal_all(children, g_signal == SIGINT ? SIGINT : SIGTERM);
      for (auto& c : children) {
        c.term_at = 0;
        c.kill_at = monotonic_ns() + grace_ns;
      }
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
        c.out.status = got == c.pid ? status : 0;
        c.out.exit_ns = monotonic_ns();
      } else {
        any_running = true;
      }
    }
    for (auto& c : children) {
      if (c.running || c.out.exit_ns == 0) continue;
      drain_pipe(c);
      parse_error_report(c);
      if (!stopping && worker_failed(c.out)) new_failure = true;
    }
    if (new_failure) {
      stopping = true;
      std::set<int> said_failed;
      for (const auto& c : children)
        if (!c.running && c.out.exit_ns != 0 && worker_failed(c.out) && !c.out.error.empty())
          for (int r : parse_blame(c.out.error).failed) said_failed.insert(r);
      stop_all(said_failed);
    }
    if (!any_running) break;
    const int64_t now = monotonic_ns();
    for (auto& c : children) {
      if (!c.running) continue;
      if (c.term_at != 0 && now >= c.term_at) {
        signal_child(c, SIGTERM);
        c.term_at = 0;
        c.kill_at = now + grace_ns;
      } else if (c.kill_at != 0 && now >= c.kill_at) {
        signal_child(c, SIGKILL);
      }
    }
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
  std::vector<WorkerOutcome> outcomes;
  for (const auto& c : children) outcomes.push_back(c.out);
  const std::string failure = launch_failure_message(outcomes, o.nproc());
  TORCH_CHECK(failure.empty(), failure);
  return port;
}

}  // namespace train
}  // namespace lowrank
