#include "lowrank/train/launcher.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <set>
#include <sstream>

#include "lowrank/comm/communicator.h"
#include "lowrank/reducer/agreement.h"
#include "support/multi_rank.h"
#include "train_test_support.h"

namespace lowrank {
namespace {

using testing::Listener;

// Stopping a worker that sleeps is immediate; anything near the workers' own 60 s sleep means the
// launcher waited for them instead of stopping them.
constexpr double kMaxStopSeconds = 20.0;

train::LaunchOptions sh(int nproc, const std::string& script) {
  train::LaunchOptions o;
  o.nproc(nproc).executable("/bin/sh").argv({"sh", "-c", script}).grace_seconds(2);
  return o;
}

std::string error_of(const train::LaunchOptions& o) {
  try {
    train::launch_local(o);
  } catch (const c10::Error& e) {
    return e.msg();
  } catch (const train::LaunchInterrupted& e) {
    return e.what();
  }
  return "";
}

// The /tmp/lowrank-launch-* directories that exist now.
std::set<std::string> launch_dirs() {
  std::set<std::string> out;
  const auto r = testing::run_command("ls -d /tmp/lowrank-launch-* 2>/dev/null");
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.insert(line);
  return out;
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

TEST(Launcher, EveryWorkerGetsItsRankAndTheRendezvous) {
  testing::TempDir dir("launch");
  auto o = sh(3, "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT $LOWRANK_WORKER "
                 "${OMPI_COMM_WORLD_RANK:-none}\" > " + dir.path() + "/$RANK.txt");
  ::setenv("OMPI_COMM_WORLD_RANK", "7", 1);  // inherited launcher variables must not reach the workers
  const int port = train::launch_local(o);
  ::unsetenv("OMPI_COMM_WORLD_RANK");
  for (int r = 0; r < 3; ++r) {
    const std::string want = std::to_string(r) + " 3 " + std::to_string(r) + " 3 127.0.0.1 " + std::to_string(port) +
                             " 1 none\n";
    EXPECT_EQ(testing::read_text(dir / (std::to_string(r) + ".txt")), want) << "rank " << r;
  }
}

TEST(Launcher, AFailedWorkerIsNamedAndTheOthersAreStopped) {
  testing::TempDir dir("launch");
  const std::string d = dir.path();
  // Ranks 0 and 2 record their pid and sleep; rank 1 waits until both are up, then fails.
  const std::string script =
      "if [ $RANK = 1 ]; then for i in $(seq 200); do [ -s " + d + "/0.pid ] && [ -s " + d +
      "/2.pid ] && break; sleep 0.05; done; echo 'boom: bad shard' >&$LOWRANK_ERROR_FD; exit 3; fi; "
      "echo $$ > " + d + "/$RANK.tmp && mv " + d + "/$RANK.tmp " + d + "/$RANK.pid; exec sleep 60";
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of(sh(3, script));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(msg.find("worker rank 1 of 3 failed (exit code 3): boom: bad shard"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the launcher stopped ranks 0, 2"), std::string::npos) << msg;
  EXPECT_LT(seconds, kMaxStopSeconds);
  for (int r : {0, 2}) {
    const pid_t pid = std::atoi(testing::read_text(dir / (std::to_string(r) + ".pid")).c_str());
    ASSERT_GT(pid, 0) << "rank " << r << " never started";
    EXPECT_FALSE(process_alive(pid)) << "rank " << r << " (pid " << pid << ") outlived the launcher";
  }
}

TEST(Launcher, TheEarliestReportedErrorIsTheRootCause) {
  // Rank 0 exits first but reports a later timestamp (200) than rank 1 (100), which ignores the
  // launcher's SIGTERM long enough to report: rank 1 is the cause, rank 0 a consequence.
  testing::TempDir dir("launch");
  const std::string ready = dir / "ready";
  const std::string script =
      "if [ $RANK = 1 ]; then trap '' TERM; touch " + ready + "; sleep 0.3; "
      "printf 'lowrank-error v1\\n100\\nout of memory\\n' >&$LOWRANK_ERROR_FD; "
      "else for i in $(seq 200); do [ -e " + ready + " ] && break; sleep 0.05; done; "
      "printf 'lowrank-error v1\\n200\\nconnection closed by peer\\n' >&$LOWRANK_ERROR_FD; fi; exit 1";
  const std::string msg = error_of(sh(2, script).grace_seconds(5));
  EXPECT_EQ(msg.rfind("worker rank 1 of 2 failed (exit code 1): out of memory", 0), 0u) << msg;
  EXPECT_NE(msg.find("rank 0 also failed (exit code 1): connection closed by peer"), std::string::npos) << msg;
}

TEST(Launcher, AWorkerKilledFromOutsideIsTheRootCauseNotThePeerThatLostIt) {
  // Rank 1 is SIGKILLed by hand; rank 0 notices at once (as gloo does: "connection closed"),
  // reports that (timestamped on CLOCK_MONOTONIC, as workers do) and exits, ignoring the launcher's
  // SIGTERM long enough to do so. The headline must name rank 1, every time.
  for (int trial = 0; trial < 5; ++trial) {
    testing::TempDir dir("launch");
    const std::string d = dir.path();
    const std::string script =
        "if [ $RANK = 1 ]; then echo $$ > " + d + "/1.pid; sleep 0.2; kill -KILL $$; fi; "
        "trap '' TERM; for i in $(seq 400); do [ -s " + d + "/1.pid ] && ! kill -0 $(cat " + d + "/1.pid) 2>/dev/null && break; "
        "sleep 0.005; done; ts=$(python3 -c \"import time; print(time.monotonic_ns())\"); "
        "printf \"lowrank-error v1\\n$ts\\nConnection closed by peer\\n\" >&$LOWRANK_ERROR_FD; exit 1";
    const std::string msg = error_of(sh(2, script));
    EXPECT_EQ(msg.rfind("worker rank 1 of 2 failed (killed by signal 9", 0), 0u) << "trial " << trial << ": " << msg;
    EXPECT_NE(msg.find("rank 0 also failed (exit code 1): Connection closed by peer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("out of memory?"), std::string::npos) << msg;  // a SIGKILL the launcher did not send
  }
}

TEST(Launcher, NothingIsLeftInTmp) {
  const auto before = launch_dirs();
  EXPECT_NE(error_of(sh(2, "printf 'lowrank-error v1\\n1\\nboom\\n' >&$LOWRANK_ERROR_FD; exit 2")).find("boom"),
            std::string::npos);
  EXPECT_EQ(launch_dirs(), before);
}

TEST(Launcher, ADeathBySignalIsReported) {
  const std::string msg = error_of(sh(2, "if [ $RANK = 1 ]; then kill -USR1 $$; fi; exec sleep 60"));
  EXPECT_NE(msg.find("worker rank 1 of 2 failed (killed by signal 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("without an error message"), std::string::npos) << msg;
}

TEST(Launcher, ASignalToTheLauncherStopsEveryWorker) {
  testing::TempDir dir("launch");
  // Rank 0 sends SIGTERM to its parent, the launcher (this process: the handler is installed for
  // the duration of launch_local), then sleeps like rank 1.
  const std::string script = "echo $$ > " + dir.path() + "/$RANK.pid; if [ $RANK = 0 ]; then kill -TERM $PPID; fi; "
                             "exec sleep 60";
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of(sh(2, script));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), kMaxStopSeconds);
  EXPECT_NE(msg.find("interrupted by signal 15"), std::string::npos) << msg;
  try {
    train::launch_local(sh(1, "kill -INT $PPID; exec sleep 60"));
    ADD_FAILURE() << "no LaunchInterrupted";
  } catch (const train::LaunchInterrupted& e) {
    EXPECT_EQ(e.signal(), SIGINT);  // lowrank train exits 128 + 2 = 130
  }
  EXPECT_NE(msg.find("stopped all 2 workers"), std::string::npos) << msg;
  for (int r : {0, 1}) {
    const pid_t pid = std::atoi(testing::read_text(dir / (std::to_string(r) + ".pid")).c_str());
    if (pid > 0) EXPECT_FALSE(process_alive(pid)) << "rank " << r << " (pid " << pid << ") outlived the launcher";
  }
}

TEST(Launcher, AGivenPortThatIsInUseFailsBeforeStartingAnything) {
  testing::TempDir dir("launch");
  Listener busy;
  auto o = sh(2, "touch " + dir.path() + "/$RANK.started");
  o.master_port(busy.port);
  const std::string msg = error_of(o);
  EXPECT_NE(msg.find("port " + std::to_string(busy.port) + " on 127.0.0.1 is already in use"), std::string::npos)
      << msg;
  EXPECT_FALSE(testing::file_exists(dir / "0.started"));
}

TEST(Launcher, FreePortsCanBeBoundAndOptionsAreChecked) {
  const int port = train::find_free_port();
  EXPECT_GT(port, 0);
  EXPECT_NO_THROW(train::check_port_free("127.0.0.1", port));
  EXPECT_NE(error_of(sh(0, "true")).find("nproc must be >= 1, got 0"), std::string::npos);
  EXPECT_NE(error_of(sh(1, "true").master_port(70000)).find("got 70000"), std::string::npos);
  EXPECT_EQ(train::own_argv().empty(), false);
}


// --- The root cause as a pure function (issue 15, M6) ---

train::WorkerOutcome exited(int rank, int code, const std::string& error = "", int64_t error_ns = -1,
                            int64_t exit_ns = 1000) {
  train::WorkerOutcome w;
  w.rank = rank;
  w.status = code << 8;  // as waitpid reports exit(code)
  w.error = error;
  w.error_ns = error_ns;
  w.exit_ns = exit_ns;
  return w;
}

train::WorkerOutcome signalled(int rank, int sig, bool by_launcher, const std::string& error = "",
                               int64_t error_ns = -1, int64_t exit_ns = 1000) {
  train::WorkerOutcome w = exited(rank, 0, error, error_ns, exit_ns);
  w.status = sig;  // as waitpid reports a death by `sig`
  if (by_launcher) w.sent_signals = uint64_t(1) << sig;
  return w;
}

// Every order of `ws`: the choice must not depend on the order the launcher lists its children in.
std::vector<std::vector<train::WorkerOutcome>> orders(std::vector<train::WorkerOutcome> ws) {
  std::sort(ws.begin(), ws.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  std::vector<std::vector<train::WorkerOutcome>> out;
  std::vector<size_t> idx(ws.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  do {
    out.emplace_back();
    for (size_t i : idx) out.back().push_back(ws[i]);
  } while (std::next_permutation(idx.begin(), idx.end()));
  return out;
}

int root_rank(const std::vector<train::WorkerOutcome>& ws) {
  const int i = train::choose_root_cause(ws);
  return i < 0 ? -1 : ws[i].rank;
}

const std::string kShardError = "checkpoint /c/step-00000004: shard rank1.pt is damaged (SHA-256 mismatch)";
const std::string kSecondary =
    "rank 0: rank 1 failed while loading checkpoint /c/step-00000004 (see its error); every rank stopped";

TEST(Launcher, AReportBlamingARankNeverWinsOverThatRanksOwn) {
  // The flaky case: rank 1 has the damaged shard; rank 0's run_together report points at it
  // and arrives first with the earlier timestamp; rank 1 reports later, and the launcher's SIGTERM
  // may reach it while it exits. Every timing and order: rank 1 is the cause.
  for (const int64_t secondary_ns : {100, 300}) {
    for (const bool term_after_report : {false, true}) {
      const auto own = term_after_report ? signalled(1, SIGTERM, /*by_launcher=*/true, kShardError, 200, 400)
                                         : exited(1, 1, kShardError, 200, 400);
      for (const auto& ws : orders({exited(0, 1, kSecondary, secondary_ns, 150), own})) {
        EXPECT_EQ(root_rank(ws), 1) << secondary_ns << " " << term_after_report;
        const std::string msg = train::launch_failure_message(ws, 2);
        const std::string status =
            term_after_report ? "stopped by the launcher with signal 15 (Terminated) after it reported its error"
                              : "exit code 1";
        EXPECT_EQ(msg.rfind("worker rank 1 of 2 failed (" + status + "): " + kShardError, 0), 0u) << msg;
        EXPECT_NE(msg.find("\n  rank 0 also failed (exit code 1): " + kSecondary), std::string::npos) << msg;
        EXPECT_EQ(msg.find("killed by signal 15"), std::string::npos) << msg;
      }
    }
  }
  // A rank killed from outside beats a peer's "has stopped answering" report about it, however early.
  const std::string silent = "rank 0: all_gather #27 failed (collective timeout 4 s): Connection closed by peer\n"
                             "  rank 1 has stopped answering (hung, died, or far behind): it did not report this "
                             "failure within 3 s more";
  for (const auto& ws : orders({exited(0, 1, silent, 0, 100), signalled(1, SIGKILL, false, "", -1, 5000000000)}))
    EXPECT_EQ(root_rank(ws), 1);
}

TEST(Launcher, ARankTheLauncherStoppedIsNeverTheCause) {
  // Rank 1 was stopped by the launcher before it could report: it did not fail; rank 0's report,
  // even though it points at rank 1, is all there is. Rank 2 ended by our SIGKILL after the grace.
  const auto ws = std::vector<train::WorkerOutcome>{exited(0, 1, kSecondary, 300, 400),
                                                    signalled(1, SIGTERM, true, "", -1, 100),
                                                    signalled(2, SIGKILL, true, "", -1, 50)};
  for (const auto& order : orders(ws)) EXPECT_EQ(root_rank(order), 0);
  const std::string msg = train::launch_failure_message(ws, 3);
  EXPECT_EQ(msg.rfind("worker rank 0 of 3 failed (exit code 1): " + kSecondary, 0), 0u) << msg;
  EXPECT_NE(msg.find("the launcher stopped ranks 1, 2"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("out of memory"), std::string::npos) << msg;  // the SIGKILL was the launcher's
  // Among secondary reports only, the rank another report blames comes first, whatever the times.
  const std::string from1 = "rank 1: rank 2 failed while writing checkpoint /c (see its error); every rank stopped";
  const std::string from2 = "rank 2: allreduce #3 failed (collective timeout 300 s): Connection reset by peer";
  for (const auto& order : orders({exited(1, 1, from1, 10), exited(2, 1, from2, 20), signalled(0, SIGTERM, true)}))
    EXPECT_EQ(root_rank(order), 2);
  EXPECT_EQ(train::choose_root_cause({exited(0, 0), signalled(1, SIGTERM, true)}), -1);
  EXPECT_EQ(train::launch_failure_message({exited(0, 0), exited(1, 0)}, 2), "");
}

TEST(Launcher, TheEarliestOwnReportIsTheCauseAndTiesGoToTheLowerRank) {
  for (const auto& ws : orders({exited(0, 1, "out of memory", 200), exited(1, 1, "bad shard", 100),
                                exited(2, 1, kSecondary, 50)}))
    EXPECT_EQ(root_rank(ws), 1);
  for (const auto& ws : orders({exited(0, 1, "a", 100), exited(1, 1, "b", 100)})) EXPECT_EQ(root_rank(ws), 0);
}

TEST(Launcher, BlameIsReadFromRunTogethersRealMessage) {
  // The message run_together (reducer/agreement.cpp) really throws on the ranks that did not fail.
  std::vector<std::string> got(3);
  testing::run_on(comm::make_in_process_group(3), [&](comm::Communicator& c) {
    try {
      run_together(c, "loading checkpoint /c/step-00000004", [&] {
        if (c.rank() != 0) throw std::runtime_error("shard of rank " + std::to_string(c.rank()) + " is damaged");
      });
    } catch (const std::exception& e) {
      got[c.rank()] = e.what();
    }
  });
  const auto b = train::parse_blame(got[0]);
  EXPECT_TRUE(b.secondary) << got[0];
  EXPECT_EQ(b.failed, (std::vector<int>{1, 2})) << got[0];
  EXPECT_FALSE(train::parse_blame(got[1]).secondary) << got[1];
  // A failed collective (comm/process_group_communicator.cpp's FailureReport).
  const auto c = train::parse_blame(
      "rank 2: allreduce #5 failed (collective timeout 4 s): Timed out\n  ranks 0, 3 have stopped answering (hung, "
      "died, or far behind): they did not report this failure within 3 s more");
  EXPECT_TRUE(c.secondary);
  EXPECT_EQ(c.silent, (std::vector<int>{0, 3}));
  EXPECT_EQ(train::parse_blame("rank 1: broadcast #2 failed (collective timeout 4 s): x\n  the rendezvous store hosted "
                               "by rank 0 does not answer either (y): rank 0 has probably stopped or died")
                .silent,
            std::vector<int>{0});
  EXPECT_TRUE(train::parse_blame("rank 1: all_gather #1 failed (collective timeout 9 s): z\n  every other rank failed "
                                 "in the same collective (a peer died, or the network failed)")
                  .secondary);
  for (const std::string own : {"injected failure at step 2 (LOWRANK_TEST_FAIL_RANK=1)", "rank 1: ranks disagree on "
                                "the run's settings.", "corrupt IDX file x: truncated", ""})
    EXPECT_FALSE(train::parse_blame(own).secondary) << own;
}

TEST(Launcher, AnOutsideSigkillSuggestsOutOfMemory) {
  const std::string msg =
      train::launch_failure_message({exited(0, 1, "Connection closed by peer", 10), signalled(1, SIGKILL, false)}, 2);
  EXPECT_EQ(msg.rfind("worker rank 1 of 2 failed (killed by signal 9 (Killed)) without an error message", 0), 0u)
      << msg;
  EXPECT_NE(msg.find("out of memory? The launcher did not send this SIGKILL"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dmesg"), std::string::npos) << msg;
  const std::string segv = train::launch_failure_message({signalled(0, SIGSEGV, false)}, 1);
  EXPECT_EQ(segv.find("out of memory"), std::string::npos) << segv;
}

TEST(Launcher, ARankSaidToHaveFailedMayReportBeforeItIsStopped) {
  // Real processes, the timing: rank 0's run_together report about rank 1 comes first and
  // rank 0 exits at once; rank 1 is still unwinding (0.4 s) before it reports its own error. Before
  // the fix the launcher sent rank 1 SIGTERM at once: its error was lost and rank 0's report was the
  // headline.
  testing::TempDir dir("launch");
  const std::string ready = dir / "ready";
  const std::string script =
      "if [ $RANK = 1 ]; then touch " + ready + "; sleep 0.4; "
      "printf 'lowrank-error v1\\n200\\n" + kShardError + "\\n' >&$LOWRANK_ERROR_FD; exit 1; fi; "
      "for i in $(seq 200); do [ -e " + ready + " ] && break; sleep 0.01; done; "
      "printf 'lowrank-error v1\\n100\\n" + kSecondary + "\\n' >&$LOWRANK_ERROR_FD; exit 1";
  const std::string msg = error_of(sh(2, script));
  EXPECT_EQ(msg.rfind("worker rank 1 of 2 failed (exit code 1): " + kShardError, 0), 0u) << msg;
  EXPECT_NE(msg.find("rank 0 also failed (exit code 1): " + kSecondary), std::string::npos) << msg;
}

// --- Addresses (L13) and memory (L5) ---

bool has_ipv6_loopback() {
  return testing::read_text("/proc/net/if_inet6").find("00000000000000000000000000000001") != std::string::npos;
}

TEST(Launcher, LocalhostAndTheIpv6LoopbackAreAccepted) {
  EXPECT_GT(train::find_free_port("localhost"), 0);
  if (has_ipv6_loopback()) EXPECT_GT(train::find_free_port("::1"), 0);
  testing::TempDir dir("launch");
  for (const std::string addr : {"localhost", "::1"}) {
    if (addr == "::1" && !has_ipv6_loopback()) continue;
    auto o = sh(2, "echo \"$MASTER_ADDR $MASTER_PORT\" > " + dir.path() + "/$RANK.txt");
    const int port = train::launch_local(o.master_addr(addr));
    EXPECT_EQ(testing::read_text(dir / "1.txt"), addr + " " + std::to_string(port) + "\n");
  }
  // An address of another machine cannot host a local launch's rendezvous (192.0.2.0/24: TEST-NET).
  const std::string msg = error_of(sh(2, "true").master_addr("192.0.2.1"));
  EXPECT_NE(msg.find("cannot bind a socket on 192.0.2.1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--master-addr 127.0.0.1, localhost or ::1"), std::string::npos) << msg;
}

TEST(Launcher, AvailableMemoryIsReadFromProcMeminfo) {
  EXPECT_EQ(train::parse_mem_available("MemTotal:       24576000 kB\nMemFree:        20000000 kB\n"
                                       "MemAvailable:   21000000 kB\nBuffers: 1 kB\n"),
            int64_t(21000000) * 1024);
  EXPECT_EQ(train::parse_mem_available("MemTotal: 1 kB\n"), -1);
  EXPECT_EQ(train::parse_mem_available(""), -1);
  const int64_t before = train::parse_mem_available(testing::read_text("/proc/meminfo"));
  const int64_t avail = train::available_memory_bytes();
  const int64_t after = train::parse_mem_available(testing::read_text("/proc/meminfo"));
  EXPECT_GT(avail, int64_t(16) << 20);  // this machine runs the tests: it has more than 16 MiB free
  EXPECT_LE(avail, std::max(before, after) + (int64_t(64) << 20));  // never above MemAvailable
}

}  // namespace
}  // namespace lowrank
