// `lowrank train` under faults and hostile input (issue 10): real processes of the built binary.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "lowrank/data/fashion_mnist.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/launch/launcher.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using nlohmann::json;
using testing::CommandResult;
using testing::run_command;
using testing::TempDir;
using testing::expect_contains;
using testing::have_dataset;
using testing::train_cmd;

// How long a rendezvous or collective may take in these tests before failing, and the slack on
// top of it that a failure may take to be reported.
constexpr int kShortTimeout = 4;
constexpr double kReportSlackSeconds = 8.0;



double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

json summary_of(const std::string& dir) { return json::parse(testing::read_text(dir + "/summary.json")); }

// The columns of metrics.csv that must be equal between an interrupted-and-resumed run and an
// uninterrupted one (not the timings).
std::vector<std::string> stable_columns(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(testing::read_text(path));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::istringstream ls(line);
    for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
    if (cells.size() < 14) continue;
    // step, epoch, train_loss, lr, floats_sent, ..., test_accuracy, skipped_steps
    out.push_back(cells[0] + "," + cells[1] + "," + cells[2] + "," + cells[3] + "," + cells[5] + "," + cells[11] +
                  "," + cells[13]);
  }
  return out;
}

// The closing scenario of the issue: a worker is SIGKILLed mid-run; the launcher names it; the
// run resumes from the last complete checkpoint and ends with the weights of a run never
// interrupted, and the same metrics rows.
TEST(Reliability, AKilledWorkerIsNamedAndResumeGivesTheUninterruptedWeights) {
  REQUIRE_DATASET();
  TempDir dir("rel");
  const std::string common = "--nproc 2 --steps 14 --metrics-every 2 --checkpoint-every 4 --eval-examples 500 ";
  const CommandResult whole = run_command(train_cmd(common + "--checkpoint-dir " + (dir / "a-ckpt") + " --out " + (dir / "a")));
  ASSERT_EQ(whole.exit_code, 0) << whole.output;

  const CommandResult killed = run_command(train_cmd(common + "--checkpoint-dir " + (dir / "b-ckpt") + " --out " + (dir / "b"),
                                                     "LOWRANK_TEST_KILL_RANK=1 LOWRANK_TEST_KILL_STEP=10"));
  EXPECT_EQ(killed.exit_code, 1) << killed.output;
  expect_contains(killed, "lowrank: error: worker rank 1 of 2 failed (killed by signal 9");
  EXPECT_FALSE(testing::file_exists(dir / "b/summary.json"));
  EXPECT_EQ(train::find_checkpoint(dir / "b-ckpt").step, 8);

  const CommandResult resumed = run_command(train_cmd(common + "--resume " + (dir / "b-ckpt") + " --out " + (dir / "b")));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  expect_contains(resumed, "resumed from step 8 of 14");
  const json a = summary_of(dir / "a"), b = summary_of(dir / "b");
  EXPECT_EQ(b.at("weights_sha256"), a.at("weights_sha256"));
  EXPECT_EQ(b.at("weights_checksum"), a.at("weights_checksum"));
  EXPECT_EQ(b.at("final_train_loss"), a.at("final_train_loss"));
  EXPECT_EQ(b.at("bytes_sent_per_worker"), a.at("bytes_sent_per_worker"));
  EXPECT_EQ(b.at("resumed_from_step"), 8);
  EXPECT_EQ(stable_columns(dir / "b/metrics.csv"), stable_columns(dir / "a/metrics.csv"));
  EXPECT_EQ(stable_columns(dir / "a/metrics.csv").size(), 1u + 7u);
}

TEST(Reliability, ANanOnOneRankIsSkippedEverywhereAndTheLimitAborts) {
  REQUIRE_DATASET();
  TempDir dir("rel");
  const std::string env = "LOWRANK_TEST_NAN_RANK=1 LOWRANK_TEST_NAN_STEP=2";
  const CommandResult r = run_command(train_cmd("--nproc 2 --steps 6 --eval-examples 200 --out " + (dir / "a"), env));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r, "step 2 skipped: non-finite gradient on rank 1 (1 skipped so far)");
  const json s = summary_of(dir / "a");
  EXPECT_EQ(s.at("skipped_steps"), 1);
  EXPECT_EQ(s.at("weights_agree"), true);
  EXPECT_NE(testing::read_text(dir / "a/metrics.csv").find("skipped_steps"), std::string::npos);

  const CommandResult strict =
      run_command(train_cmd("--nproc 2 --steps 6 --max-skipped-steps 0 --out " + (dir / "b"), env));
  EXPECT_EQ(strict.exit_code, 1) << strict.output;
  expect_contains(strict, "step 2: non-finite gradient on rank 1; 1 steps skipped, more than --max-skipped-steps 0");
}

TEST(Reliability, RanksStartedWithDifferentSettingsFailAtOnceNamingThem) {
  REQUIRE_DATASET();
  TempDir dir("rel");
  const int port = launch::find_free_port();
  const std::vector<std::string> flags = {"--batch-size 64 --lr 0.05", "--batch-size 32 --lr 0.1"};
  std::string script;
  for (int r = 0; r < 2; ++r) {
    const std::string rs = std::to_string(r);
    script += "(" + train_cmd("--steps 50 --timeout 60 " + flags[r],
                              "RANK=" + rs + " WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port)) +
              " > " + dir.path() + "/log" + rs + " 2>&1; echo $? > " + dir.path() + "/rc" + rs + ") & ";
  }
  const double seconds = seconds_of([&] { run_command("sh -c '" + script + "wait'"); });
  EXPECT_LT(seconds, 30.0) << "the mismatch was not caught at start-up";
  for (int r = 0; r < 2; ++r) {
    const std::string log = testing::read_text(dir / ("log" + std::to_string(r)));
    EXPECT_EQ(testing::read_text(dir / ("rc" + std::to_string(r))), "1\n") << log;
    EXPECT_NE(log.find("ranks disagree on the run's settings"), std::string::npos) << log;
    EXPECT_NE(log.find("batch_size=64"), std::string::npos) << log;
    EXPECT_NE(log.find("batch_size=32"), std::string::npos) << log;
    EXPECT_NE(log.find("lr=0.1"), std::string::npos) << log;
    EXPECT_EQ(log.find("Exception raised from"), std::string::npos) << "a C++ backtrace:\n" << log;
  }
}

TEST(Reliability, ARendezvousWithoutPeersSaysWhomItWaitsForAndFailsAfterTheTimeout) {
  const int port = launch::find_free_port();
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2 RANK=";
  const std::string args = "--steps 1 --timeout " + std::to_string(kShortTimeout);
  CommandResult r0;
  const double t0 = seconds_of([&] { r0 = run_command(train_cmd(args, env + "0")); });
  EXPECT_NE(r0.exit_code, 0) << r0.output;
  EXPECT_EQ(r0.output.rfind("lowrank train: joining a torchrun job as rank 0 of 2", 0), 0u) << r0.output;
  expect_contains(r0, "rank 0: waiting for 1 more rank (1) at 127.0.0.1:" + std::to_string(port) + " (timeout " +
                          std::to_string(kShortTimeout) + " s)");
  expect_contains(r0, "rank 1 of 2 never came");
  EXPECT_EQ(r0.output.find("Exception raised from"), std::string::npos) << r0.output;
  EXPECT_GE(t0, kShortTimeout - 0.5);
  EXPECT_LT(t0, kShortTimeout + kReportSlackSeconds);

  CommandResult r1;
  const double t1 = seconds_of([&] { r1 = run_command(train_cmd(args, env + "1")); });
  EXPECT_NE(r1.exit_code, 0) << r1.output;
  expect_contains(r1, "rank 1: connecting to rank 0 at 127.0.0.1:" + std::to_string(port));
  expect_contains(r1, "rank 0 never answered");
  EXPECT_EQ(r1.output.find("Exception raised from"), std::string::npos) << r1.output;
  EXPECT_LT(t1, kShortTimeout + kReportSlackSeconds);
}

// A rank that hangs mid-run (SIGSTOP) is named by the others when their collective times out.
TEST(Reliability, ARankThatStopsAnsweringIsNamedWhenTheCollectiveTimesOut) {
  REQUIRE_DATASET();
  TempDir dir("rel");
  const int port = launch::find_free_port();
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " ";
  // A longer timeout than the rendezvous tests: start-up on a loaded machine must not trip it.
  const std::string args = " train --steps 200 --timeout 10 --eval-examples 100";
  // Rank 1 runs without `timeout` so that its pid is known; it is killed once rank 0 has given up.
  const std::string script = env + "RANK=1 LOWRANK_TEST_HANG_RANK=1 LOWRANK_TEST_HANG_STEP=3 " +
                             testing::lowrank_binary() + args + " > " + (dir / "log1") + " 2>&1 & p1=$!; " + env +
                             "RANK=0 timeout 120 " + testing::lowrank_binary() + args + " > " + (dir / "log0") +
                             " 2>&1; echo rc0=$?; kill -KILL $p1";
  CommandResult r;
  const double seconds = seconds_of([&] { r = run_command("sh -c '" + script + "'"); });
  const std::string log0 = testing::read_text(dir / "log0");
  EXPECT_NE(r.output.find("rc0=1"), std::string::npos) << r.output << log0;
  const std::string log1 = testing::read_text(dir / "log1");
  EXPECT_NE(log1.find("lowrank test hook: stopping (SIGSTOP) at step 3"), std::string::npos) << log1;
  EXPECT_NE(log0.find("rank 1 has stopped answering (hung, died, or far behind)"), std::string::npos) << log0;
  EXPECT_NE(log0.find("(collective timeout 10 s)"), std::string::npos) << log0;
  EXPECT_EQ(log0.find("Exception raised from"), std::string::npos) << log0;
  EXPECT_LT(seconds, 90.0);
}

TEST(Reliability, ANonEmptyOutputDirectoryIsRefusedUnlessOverwrite) {
  REQUIRE_DATASET();
  TempDir dir("rel");
  const std::string out = dir / "out";
  ASSERT_EQ(run_command("mkdir -p " + out + " && echo old > " + out + "/rank2.json && echo x > " + out +
                        "/summary.json").exit_code, 0);
  const CommandResult refused = run_command(train_cmd("--nproc 2 --steps 2 --out " + out));
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  expect_contains(refused, "output directory " + out + " is not empty (rank2.json, summary.json): pass --overwrite");
  EXPECT_EQ(refused.output.find("starting 2 worker processes"), std::string::npos) << "refused after starting workers";

  const CommandResult ok = run_command(train_cmd("--nproc 2 --steps 2 --eval-examples 100 --overwrite --out " + out));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_FALSE(testing::file_exists(out + "/rank2.json")) << "a stale file of an earlier run survived";
  EXPECT_TRUE(testing::file_exists(out + "/rank1.json"));

  ASSERT_EQ(run_command("echo mine > " + out + "/notes.txt").exit_code, 0);
  const CommandResult foreign = run_command(train_cmd("--nproc 2 --steps 2 --overwrite --out " + out));
  EXPECT_EQ(foreign.exit_code, 1) << foreign.output;
  expect_contains(foreign, "holds files lowrank did not write (notes.txt)");
  EXPECT_TRUE(testing::file_exists(out + "/notes.txt"));

  // A checkpoint directory that already holds checkpoints is refused the same way.
  const std::string ck = dir / "ck";
  ASSERT_EQ(run_command(train_cmd("--nproc 1 --steps 2 --eval-examples 100 --checkpoint-dir " + ck)).exit_code, 0);
  const CommandResult again = run_command(train_cmd("--nproc 1 --steps 2 --checkpoint-dir " + ck));
  EXPECT_EQ(again.exit_code, 1) << again.output;
  expect_contains(again, "checkpoint directory " + ck + " already holds checkpoints (newest: step 2)");
}

TEST(Reliability, SuspiciousSettingsAreRefusedOrWarnedAbout) {
  REQUIRE_DATASET();
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"--seed -1", "--seed"},
      {"--lr 0", "--lr"},
      {"--lr -0.1", "--lr"},
      {"--start-iter -2", "--start-iter"},
      {"--uncompressed-names fc9", "pattern 'fc9' matches no parameter of model cnn"},
      {"--uncompressed-names 'fc[' ", "pattern 'fc[' matches no parameter"},
      {"--checkpoint-every 5", "needs a checkpoint directory (--checkpoint-dir)"},
  };
  for (const auto& c : refused) {
    const CommandResult r = run_command(train_cmd("--nproc 1 --steps 1 --eval-examples 10 " + c.first));
    EXPECT_NE(r.exit_code, 0) << c.first << "\n" << r.output;
    expect_contains(r, c.second);
  }
  const CommandResult high = run_command(train_cmd("--nproc 1 --steps 1 --eval-examples 10 --rank 100000"));
  EXPECT_EQ(high.exit_code, 0) << high.output;
  expect_contains(high, "warning: compressor powersgd");
  expect_contains(high, "compresses none of the parameters");
  expect_contains(high, "at rank 100000");
  const CommandResult late = run_command(train_cmd("--nproc 1 --steps 3 --eval-examples 10 --start-iter 3"));
  EXPECT_EQ(late.exit_code, 0) << late.output;
  expect_contains(late, "warning: --start-iter 3 >= the run's 3 steps: compression never starts");
  const CommandResult help = run_command(testing::lowrank_binary() + " train --help");
  for (const std::string& flag : {"--resume", "--checkpoint-dir", "--overwrite", "--max-skipped-steps", "--stop-after"})
    expect_contains(help, flag);
}

// Ctrl-C and SIGTERM to the launcher stop every worker and exit 130 and 143, as shells expect.
TEST(Reliability, SignalsToTheLauncherGiveTheShellsExitCodes) {
  REQUIRE_DATASET();
  for (const auto& sig : std::vector<std::pair<std::string, int>>{{"INT", 130}, {"TERM", 143}}) {
    const std::string tag = "LOWRANK_TEST_TAG=sig" + std::to_string(::getpid()) + sig.first;
    // The signal is sent once rank 0 has printed its first line: the launcher is then waiting
    // with its handlers installed.
    TempDir dir("rel");
    const std::string log = dir / "log";
    const std::string cmd = "sh -c '" + tag + " " + testing::lowrank_binary() +
                            " train --nproc 2 --steps 100000 --log-every 100 > " + log + " 2>&1 & pid=$!; "
                            "for i in $(seq 1200); do grep -q \"2 workers (launcher)\" " + log + " && break; sleep 0.1; done; "
                            "kill -" + sig.first + " $pid; wait $pid; echo rc=$?'";
    const CommandResult r = run_command("timeout 200 " + cmd);
    expect_contains(r, "rc=" + std::to_string(sig.second));
    const std::string text = testing::read_text(log);
    EXPECT_NE(text.find("interrupted by signal"), std::string::npos) << text;
    EXPECT_EQ(testing::processes_with_tag(tag), std::vector<int>{}) << "workers outlived the launcher";
  }
}

}  // namespace
}  // namespace lowrank
