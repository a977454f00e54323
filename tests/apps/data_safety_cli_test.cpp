// Nothing lost (issue 15): what `lowrank train` and `lowrank compare` may delete, overwrite or
// lock, with real processes of the built binary. Every path that removes or replaces a file is
// checked with a user's file (or a finished run) next to it.
#include <gtest/gtest.h>

#include <string>

#include "lowrank/util/files.h"
#include "lowrank/train/checkpoint.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::CommandResult;
using testing::expect_contains;
using testing::file_exists;
using testing::read_text;
using testing::run_command;
using testing::TempDir;
using testing::train_cmd;

const std::string kSmall = "--nproc 1 --steps 4 --eval-examples 100 --checkpoint-every 2 --keep-checkpoints 5 ";

// H3, L7, H1 and L1: a finished run's summary survives every refused or pointless resume; a
// resume that names its checkpoint directory in another spelling (with --overwrite) keeps it.
TEST(DataSafety, ResumeValidatesBeforeTouchingAFinishedRunAndKeepsItsCheckpoints) {
  REQUIRE_DATASET();
  TempDir dir("safe");
  const std::string ck = dir / "ck", out = dir / "out";
  const CommandResult first = run_command(train_cmd(kSmall + "--checkpoint-dir " + ck + " --out " + out));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string summary = read_text(out + "/summary.json");
  ASSERT_FALSE(summary.empty());

  const CommandResult typo = run_command(train_cmd(kSmall + "--resume " + dir / "kc" + " --out " + out));
  EXPECT_EQ(typo.exit_code, 1) << typo.output;
  expect_contains(typo, dir / "kc is not a directory");
  EXPECT_EQ(read_text(out + "/summary.json"), summary) << "a typo in --resume cost the finished run's summary";

  const CommandResult other = run_command(train_cmd(kSmall + "--lr 0.3 --resume " + ck + " --out " + out));
  EXPECT_EQ(other.exit_code, 1) << other.output;
  expect_contains(other, "was written by a run with other settings");
  EXPECT_EQ(read_text(out + "/summary.json"), summary) << "a refused resume cost the finished run's summary";

  const CommandResult finished = run_command(train_cmd(kSmall + "--resume " + ck + " --out " + out));
  EXPECT_EQ(finished.exit_code, 0) << finished.output;
  expect_contains(finished, "the run is finished, nothing to do");
  EXPECT_EQ(read_text(out + "/summary.json"), summary) << "resuming a finished run rewrote its summary";

  // A user's file in --out (a `| tee run/train.log`) is left alone by a resume.
  ASSERT_EQ(run_command("echo mine > " + out + "/notes.txt").exit_code, 0);

  // "./ck/" is the "ck" resumed from: --overwrite must not delete it (it did, then failed).
  const CommandResult again = run_command("cd " + dir.path() + " && " +
                                          train_cmd(kSmall + "--resume ck/step-00000002 --checkpoint-dir ./ck/ "
                                                             "--overwrite --out out"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  expect_contains(again, "resumed from step 2 of 4");
  expect_contains(again, "note: checkpoint newer than step 2 moved aside to ");  // L1: it used to print nothing
  EXPECT_TRUE(file_exists(ck + "/abandoned-step-00000004/manifest.json"));
  EXPECT_EQ(train::find_checkpoint(ck).step, 4);
  EXPECT_NE(read_text(out + "/summary.json"), summary) << "the resumed run wrote no new summary";
  EXPECT_EQ(read_text(out + "/notes.txt"), "mine\n");
}

// L8, H4, L10 and L6.
TEST(DataSafety, LocksSharedDirectoriesAndSaysDoneOnlyWhenAllOutputsAreWritten) {
  REQUIRE_DATASET();
  TempDir dir("safe");
  const std::string both = dir / "both";
  // --out and --checkpoint-dir one directory: the second run's --overwrite knows the checkpoints.
  const std::string same = kSmall + "--out " + both + " --checkpoint-dir " + both;
  ASSERT_EQ(run_command(train_cmd(same)).exit_code, 0);
  const CommandResult again = run_command(train_cmd(same + " --overwrite"));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(again.output.find("did not write"), std::string::npos) << again.output;

  // A user's file inside a checkpoint: --overwrite refuses before it removes anything at all.
  const std::string before_refusal = read_text(both + "/summary.json");
  ASSERT_EQ(run_command("echo mine > " + both + "/step-00000004/notes.txt").exit_code, 0);
  const CommandResult inside = run_command(train_cmd(same + " --overwrite"));
  EXPECT_EQ(inside.exit_code, 1) << inside.output;
  expect_contains(inside, "holds files lowrank did not write (" + both + "/step-00000004/notes.txt)");
  EXPECT_EQ(read_text(both + "/summary.json"), before_refusal) << "a refused --overwrite removed the outputs";
  EXPECT_EQ(train::list_checkpoints(both).size(), 2u) << "a refused --overwrite removed checkpoints";
  ASSERT_EQ(std::remove((both + "/step-00000004/notes.txt").c_str()), 0);

  {  // Another run holds the directory: refused, naming the holder, before anything is removed.
    const DirectoryLock held(both, "output directory (--out)");
    const std::string before = read_text(both + "/summary.json");
    const CommandResult locked = run_command(train_cmd(same + " --overwrite"));
    EXPECT_EQ(locked.exit_code, 1) << locked.output;
    expect_contains(locked, both + " is in use by another lowrank run (pid " + std::to_string(::getpid()) + " on ");
    EXPECT_EQ(read_text(both + "/summary.json"), before);
    EXPECT_EQ(train::list_checkpoints(both).size(), 2u);
  }

  // Rank 1 cannot write its outputs: the run fails and never says "done"; a resume from its last
  // checkpoint writes them (the run is not "finished" without them).
  const std::string out = dir / "fail", ckf = dir / "ckf";
  const std::string failing = "--nproc 2 --steps 2 --eval-examples 100 --checkpoint-dir " + ckf + " --out " + out;
  const CommandResult failed = run_command(train_cmd(failing, "LOWRANK_TEST_FAIL_OUTPUTS_RANK=1"));
  EXPECT_EQ(failed.exit_code, 1) << failed.output;
  expect_contains(failed, "injected failure writing the outputs");
  EXPECT_EQ(failed.output.find("done:"), std::string::npos) << failed.output;
  EXPECT_FALSE(file_exists(out + "/summary.json"));
  const CommandResult recovered =
      run_command(train_cmd("--nproc 2 --steps 2 --eval-examples 100 --resume " + ckf + " --out " + out));
  EXPECT_EQ(recovered.exit_code, 0) << recovered.output;
  expect_contains(recovered, "has no summary.json (the run failed writing its outputs): writing them now");
  EXPECT_TRUE(file_exists(out + "/summary.json"));
  EXPECT_TRUE(file_exists(out + "/rank1.json"));

  // The last step skipped: no stale loss passes for the final one, and the skips are counted.
  const CommandResult nan = run_command(train_cmd("--nproc 1 --steps 3 --eval-examples 100 --max-skipped-steps -1",
                                                  "LOWRANK_TEST_NAN_RANK=0 LOWRANK_TEST_NAN_STEP=2"));
  EXPECT_EQ(nan.exit_code, 0) << nan.output;
  expect_contains(nan, "final train loss not finite (the last step was skipped); 1 step skipped");
}

// L5: --seq-len 100000 once took the machine down (the attention's activations grow with its
// square); now it is refused before a process starts or the text is read.
TEST(DataSafety, ActivationsThatCannotFitAreRefusedBeforeAnyWorkerStarts) {
  const CommandResult r = run_command(train_cmd("--model llama --seq-len 100000 --nproc 2 --steps 1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "--seq-len 100000 at --batch-size 16 needs about ");
  expect_contains(r, "lower --seq-len or --batch-size");
  EXPECT_EQ(r.output.find("starting 2 worker processes"), std::string::npos) << r.output;
}

// M1: compare's --out follows train's rule, and every config is checked before the first runs.
TEST(DataSafety, CompareRefusesAUsersDirectoryAndChecksEveryConfigFirst) {
  REQUIRE_DATASET();
  TempDir dir("safe");
  const std::string bin = "timeout 120 " + testing::lowrank_binary() + " compare ";
  const std::string out = dir / "cmp";
  ASSERT_EQ(run_command("mkdir -p " + out + " && echo good > " + out + "/compare.md && echo mine > " + out +
                        "/notes.txt").exit_code, 0);
  const CommandResult refused = run_command(bin + "--out " + out + " --configs none -- --nproc 1 --steps 1");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  expect_contains(refused, "output directory " + out + " is not empty (compare.md, notes.txt): pass --overwrite");
  const CommandResult foreign = run_command(bin + "--out " + out + " --overwrite --configs none -- --nproc 1 --steps 1");
  EXPECT_EQ(foreign.exit_code, 1) << foreign.output;
  expect_contains(foreign, "holds files compare did not write for these configs (notes.txt)");
  EXPECT_EQ(read_text(out + "/compare.md"), "good\n") << "a refused compare replaced the report";
  EXPECT_EQ(read_text(out + "/notes.txt"), "mine\n");

  const std::string fresh = dir / "fresh";
  const CommandResult typo =
      run_command(bin + "--out " + fresh + " --configs 'none; nosuch --rank 2' -- --nproc 1 --steps 1");
  EXPECT_EQ(typo.exit_code, 1) << typo.output;
  expect_contains(typo, "config 'nosuch-r2' (nosuch --rank 2) is refused by lowrank train");
  expect_contains(typo, "nosuch");
  EXPECT_FALSE(file_exists(fresh + "/none")) << "config 1 ran before config 2 was checked";
}

}  // namespace
}  // namespace lowrank
