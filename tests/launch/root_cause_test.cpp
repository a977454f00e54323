// The root cause of a failed launch (launch/root_cause.h) as a pure function: every order of the
// launcher's children, every timing of the reports, without starting a process (issue 15, M6).
#include "lowrank/launch/root_cause.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "lowrank/comm/agreement.h"
#include "lowrank/comm/communicator.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

launch::WorkerOutcome exited(int rank, int code, const std::string& error = "", int64_t error_ns = -1,
                            int64_t exit_ns = 1000) {
  launch::WorkerOutcome w;
  w.rank = rank;
  w.status = code << 8;  // as waitpid reports exit(code)
  w.error = error;
  w.error_ns = error_ns;
  w.exit_ns = exit_ns;
  return w;
}

launch::WorkerOutcome signalled(int rank, int sig, bool by_launcher, const std::string& error = "",
                               int64_t error_ns = -1, int64_t exit_ns = 1000) {
  launch::WorkerOutcome w = exited(rank, 0, error, error_ns, exit_ns);
  w.status = sig;  // as waitpid reports a death by `sig`
  if (by_launcher) w.sent_signals = uint64_t(1) << sig;
  return w;
}

// Every order of `ws`: the choice must not depend on the order the launcher lists its children in.
std::vector<std::vector<launch::WorkerOutcome>> orders(std::vector<launch::WorkerOutcome> ws) {
  std::sort(ws.begin(), ws.end(), [](const auto& a, const auto& b) { return a.rank < b.rank; });
  std::vector<std::vector<launch::WorkerOutcome>> out;
  std::vector<size_t> idx(ws.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  do {
    out.emplace_back();
    for (size_t i : idx) out.back().push_back(ws[i]);
  } while (std::next_permutation(idx.begin(), idx.end()));
  return out;
}

int root_rank(const std::vector<launch::WorkerOutcome>& ws) {
  const int i = launch::choose_root_cause(ws);
  return i < 0 ? -1 : ws[i].rank;
}

const std::string kShardError = "checkpoint /c/step-00000004: shard rank1.pt is damaged (SHA-256 mismatch)";
const std::string kSecondary =
    "rank 0: rank 1 failed while loading checkpoint /c/step-00000004 (see its error); every rank stopped";

TEST(RootCause, AReportBlamingARankNeverWinsOverThatRanksOwn) {
  // The flaky case: rank 1 has the damaged shard; rank 0's run_together report points at it
  // and arrives first with the earlier timestamp; rank 1 reports later, and the launcher's SIGTERM
  // may reach it while it exits. Every timing and order: rank 1 is the cause.
  for (const int64_t secondary_ns : {100, 300}) {
    for (const bool term_after_report : {false, true}) {
      const auto own = term_after_report ? signalled(1, SIGTERM, /*by_launcher=*/true, kShardError, 200, 400)
                                         : exited(1, 1, kShardError, 200, 400);
      for (const auto& ws : orders({exited(0, 1, kSecondary, secondary_ns, 150), own})) {
        EXPECT_EQ(root_rank(ws), 1) << secondary_ns << " " << term_after_report;
        const std::string msg = launch::launch_failure_message(ws, 2);
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

TEST(RootCause, ARankTheLauncherStoppedIsNeverTheCause) {
  // Rank 1 was stopped by the launcher before it could report: it did not fail; rank 0's report,
  // even though it points at rank 1, is all there is. Rank 2 ended by our SIGKILL after the grace.
  const auto ws = std::vector<launch::WorkerOutcome>{exited(0, 1, kSecondary, 300, 400),
                                                    signalled(1, SIGTERM, true, "", -1, 100),
                                                    signalled(2, SIGKILL, true, "", -1, 50)};
  for (const auto& order : orders(ws)) EXPECT_EQ(root_rank(order), 0);
  const std::string msg = launch::launch_failure_message(ws, 3);
  EXPECT_EQ(msg.rfind("worker rank 0 of 3 failed (exit code 1): " + kSecondary, 0), 0u) << msg;
  EXPECT_NE(msg.find("the launcher stopped ranks 1, 2"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("out of memory"), std::string::npos) << msg;  // the SIGKILL was the launcher's
  // Among secondary reports only, the rank another report blames comes first, whatever the times.
  const std::string from1 = "rank 1: rank 2 failed while writing checkpoint /c (see its error); every rank stopped";
  const std::string from2 = "rank 2: allreduce #3 failed (collective timeout 300 s): Connection reset by peer";
  for (const auto& order : orders({exited(1, 1, from1, 10), exited(2, 1, from2, 20), signalled(0, SIGTERM, true)}))
    EXPECT_EQ(root_rank(order), 2);
  EXPECT_EQ(launch::choose_root_cause({exited(0, 0), signalled(1, SIGTERM, true)}), -1);
  EXPECT_EQ(launch::launch_failure_message({exited(0, 0), exited(1, 0)}, 2), "");
}

TEST(RootCause, TheEarliestOwnReportIsTheCauseAndTiesGoToTheLowerRank) {
  for (const auto& ws : orders({exited(0, 1, "out of memory", 200), exited(1, 1, "bad shard", 100),
                                exited(2, 1, kSecondary, 50)}))
    EXPECT_EQ(root_rank(ws), 1);
  for (const auto& ws : orders({exited(0, 1, "a", 100), exited(1, 1, "b", 100)})) EXPECT_EQ(root_rank(ws), 0);
}

TEST(RootCause, BlameIsReadFromRunTogethersRealMessage) {
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
  const auto b = launch::parse_blame(got[0]);
  EXPECT_TRUE(b.secondary) << got[0];
  EXPECT_EQ(b.failed, (std::vector<int>{1, 2})) << got[0];
  EXPECT_FALSE(launch::parse_blame(got[1]).secondary) << got[1];
  // A failed collective (comm/process_group_communicator.cpp's FailureReport).
  const auto c = launch::parse_blame(
      "rank 2: allreduce #5 failed (collective timeout 4 s): Timed out\n  ranks 0, 3 have stopped answering (hung, "
      "died, or far behind): they did not report this failure within 3 s more");
  EXPECT_TRUE(c.secondary);
  EXPECT_EQ(c.silent, (std::vector<int>{0, 3}));
  EXPECT_EQ(launch::parse_blame("rank 1: broadcast #2 failed (collective timeout 4 s): x\n  the rendezvous store hosted "
                               "by rank 0 does not answer either (y): rank 0 has probably stopped or died")
                .silent,
            std::vector<int>{0});
  EXPECT_TRUE(launch::parse_blame("rank 1: all_gather #1 failed (collective timeout 9 s): z\n  every other rank failed "
                                 "in the same collective (a peer died, or the network failed)")
                  .secondary);
  for (const std::string own : {"injected failure at step 2 (LOWRANK_TEST_FAIL_RANK=1)", "rank 1: ranks disagree on "
                                "the run's settings.", "corrupt IDX file x: truncated", ""})
    EXPECT_FALSE(launch::parse_blame(own).secondary) << own;
}

TEST(RootCause, AnOutsideSigkillSuggestsOutOfMemory) {
  const std::string msg =
      launch::launch_failure_message({exited(0, 1, "Connection closed by peer", 10), signalled(1, SIGKILL, false)}, 2);
  EXPECT_EQ(msg.rfind("worker rank 1 of 2 failed (killed by signal 9 (Killed)) without an error message", 0), 0u)
      << msg;
  EXPECT_NE(msg.find("out of memory? The launcher did not send this SIGKILL"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dmesg"), std::string::npos) << msg;
  const std::string segv = launch::launch_failure_message({signalled(0, SIGSEGV, false)}, 1);
  EXPECT_EQ(segv.find("out of memory"), std::string::npos) << segv;
}

}  // namespace
}  // namespace lowrank
