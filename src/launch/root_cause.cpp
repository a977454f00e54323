#include "lowrank/launch/root_cause.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>
#include <limits>
#include <regex>
#include <sstream>
#include <tuple>

namespace lowrank {
namespace launch {
namespace {

// How much later than the earliest primary error report a death by an outside signal may be seen
// and still count as the cause (the launcher polls every 20 ms; a peer may report at once).
constexpr int64_t kAbruptSlackNs = 500000000;

bool sent(const WorkerOutcome& w, int sig) { return (w.sent_signals & (uint64_t(1) << sig)) != 0; }

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

bool contains(const std::vector<int>& ranks, int rank) {
  return std::find(ranks.begin(), ranks.end(), rank) != ranks.end();
}

// When a worker's failure happened: its report's timestamp, else the time the launcher saw it exit.
int64_t failed_at(const WorkerOutcome& w) { return w.error_ns >= 0 ? w.error_ns : w.exit_ns; }

// The index in `among` with the smallest (key, failed_at, rank): the rank breaks ties, so the
// choice never depends on the order of `ws`. -1 when `among` is empty.
int pick(const std::vector<WorkerOutcome>& ws, const std::vector<int>& among, const std::function<int(int)>& key) {
  int best = -1;
  for (int i : among) {
    if (best < 0) best = i;
    if (std::make_tuple(key(i), failed_at(ws[i]), ws[i].rank) <
        std::make_tuple(key(best), failed_at(ws[best]), ws[best].rank))
      best = i;
  }
  return best;
}

// Rule 3 of choose_root_cause.
int pick_primary(const std::vector<WorkerOutcome>& ws, const std::vector<int>& primary) {
  int64_t first_report = std::numeric_limits<int64_t>::max();
  for (int i : primary)
    if (ws[i].error_ns >= 0) first_report = std::min(first_report, ws[i].error_ns);
  return pick(ws, primary, [&](int i) {
    const bool outside_first = killed_from_outside(ws[i]) && (first_report == std::numeric_limits<int64_t>::max() ||
                                                              ws[i].exit_ns <= first_report + kAbruptSlackNs);
    return outside_first ? 0 : 1;
  });
}

// Rule 4 of choose_root_cause.
int pick_secondary(const std::vector<WorkerOutcome>& ws, const std::vector<int>& secondary,
                   const std::vector<ReportBlame>& blame) {
  return pick(ws, secondary, [&](int i) {
    for (int j : secondary)
      if (j != i && (contains(blame[j].failed, ws[i].rank) || contains(blame[j].silent, ws[i].rank))) return 0;
    return 1;
  });
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
  return primary.empty() ? pick_secondary(ws, secondary, blame) : pick_primary(ws, primary);
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

}  // namespace launch
}  // namespace lowrank
