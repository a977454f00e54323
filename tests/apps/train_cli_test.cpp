// End-to-end tests of `lowrank train`: the built binary (LOWRANK_BINARY), real processes.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>

#include "lowrank/data/fashion_mnist.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/launch/launcher.h"
#include "lowrank/launch/train_job.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::Listener;

using nlohmann::json;
using testing::CommandResult;
using testing::run_command;
using testing::TempDir;
using testing::expect_contains;
using testing::have_dataset;
using testing::train_cmd;

// summary.json stores the ratio as a double; Σ dense / Σ sent recomputed from its integer fields
// agrees to rounding.
constexpr double kRatioTol = 1e-9;
// Parameters of the default CNN (include/lowrank/models/cnn.h).
constexpr int64_t kCnnParameters = 215370;


std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}


TEST(TrainCli, TwoWorkersWriteTheirFilesAndTheSameSeedGivesTheSameWeights) {
  REQUIRE_DATASET();
  TempDir dir("cli");
  const std::string args = "--nproc 2 --steps 12 --metrics-every 5 --log-every 0.5 --out ";
  const CommandResult a = run_command(train_cmd(args + (dir / "a")));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  expect_contains(a, "config: model=cnn dataset=fashion-mnist");
  expect_contains(a, "reducer: powersgd(rank=4");
  expect_contains(a, "done: 12 steps");

  const json s = json::parse(testing::read_text(dir / "a/summary.json"));
  for (const char* key : {"compressor", "rank", "world_size", "model", "dataset", "steps", "epochs", "final_train_loss",
                          "test_accuracy", "floats_sent_per_worker", "dense_floats_per_worker", "compression_ratio",
                          "wall_seconds", "config"})
    EXPECT_TRUE(s.contains(key)) << key;
  EXPECT_EQ(s.at("compressor"), "powersgd");
  EXPECT_EQ(s.at("rank"), 4);
  EXPECT_EQ(s.at("world_size"), 2);
  EXPECT_EQ(s.at("model"), "cnn");
  EXPECT_EQ(s.at("dataset"), "fashion-mnist");
  EXPECT_EQ(s.at("steps"), 12);
  EXPECT_EQ(s.at("epochs"), 1);
  EXPECT_GE(s.at("test_accuracy").get<double>(), 0.0);
  EXPECT_LE(s.at("test_accuracy").get<double>(), 1.0);
  EXPECT_TRUE(std::isfinite(s.at("final_train_loss").get<double>()));
  EXPECT_EQ(s.at("dense_floats_per_worker"), 12 * kCnnParameters);
  const double sent = s.at("floats_sent_per_worker").get<double>();
  EXPECT_GT(sent, 0);
  EXPECT_NEAR(s.at("compression_ratio").get<double>(), 12.0 * kCnnParameters / sent, kRatioTol);
  EXPECT_GT(s.at("compression_ratio").get<double>(), 10.0);  // rank 4 on this CNN: about 23x
  EXPECT_GT(s.at("wall_seconds").get<double>(), 0.0);
  EXPECT_EQ(s.at("config").at("world_size"), 2);
  EXPECT_EQ(s.at("config").at("launch"), "launcher");
  EXPECT_EQ(s.at("weights_checksums").at(0), s.at("weights_checksums").at(1));
  for (int r = 0; r < 2; ++r) {
    const json rec = json::parse(testing::read_text(dir / ("a/rank" + std::to_string(r) + ".json")));
    EXPECT_EQ(rec.at("weights_checksum"), s.at("weights_checksum")) << "rank " << r;
  }

  const auto rows = lines_of(testing::read_text(dir / "a/metrics.csv"));
  ASSERT_EQ(rows.size(), 4u) << testing::read_text(dir / "a/metrics.csv");  // header, steps 5, 10, 12
  EXPECT_EQ(rows[1].substr(0, 4), "5,1,");
  EXPECT_EQ(rows[2].substr(0, 5), "10,1,");
  EXPECT_EQ(rows[3].substr(0, 5), "12,1,");
  EXPECT_FALSE(testing::file_exists(dir / "a/metrics.csv.partial"));

  const CommandResult b = run_command(train_cmd(args + (dir / "b")));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_EQ(json::parse(testing::read_text(dir / "b/summary.json")).at("weights_checksum"), s.at("weights_checksum"));
}

// Quantized factors as summary.json counts them: at the same rank, bf16 factors send half and int8
// factors a quarter (plus one fp32 scale per column) of fp32 factors' bytes; the dense tensors
// (biases) are the same in all three runs, which `lowrank inspect --json` says.
TEST(TrainCli, QuantizedFactorsHalveAndQuarterTheSummarysBytes) {
  REQUIRE_DATASET();
  TempDir dir("cli");
  const std::string shared = " --model mlp --compressor powersgd --rank 2 --min-compression-rate 0";
  const CommandResult plan = run_command("timeout 60 " + testing::lowrank_binary() + " inspect --json" + shared);
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  int64_t dense_per_step = 0, columns = 0;  // bytes of the dense tensors; factor columns (k per factor)
  const json planned = json::parse(plan.output);
  for (const auto& p : planned.at("parameters")) {
    if (!p.at("compressed").get<bool>()) dense_per_step += p.at("bytes_per_step").get<int64_t>();
    else columns += 2 * 2;  // P and Q, k = 2 each
  }
  ASSERT_GT(columns, 0);
  const int64_t steps = 3;
  std::map<std::string, int64_t> factor_bytes;  // per worker, all steps, compressed matrices only
  for (const char* dtype : {"fp32", "bf16", "int8"}) {
    const std::string out = dir / dtype;
    const CommandResult r = run_command(train_cmd("--nproc 2 --steps " + std::to_string(steps) + shared +
                                                  " --opt factor_dtype=" + dtype + " --out " + out));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const json s = json::parse(testing::read_text(out + "/summary.json"));
    factor_bytes[dtype] = s.at("bytes_sent_per_worker").get<int64_t>() - steps * dense_per_step;
  }
  EXPECT_GT(factor_bytes["fp32"], 0);
  EXPECT_EQ(2 * factor_bytes["bf16"], factor_bytes["fp32"]);
  EXPECT_EQ(4 * (factor_bytes["int8"] - steps * 4 * columns), factor_bytes["fp32"]);
}

// --compressor auto: the start names what was measured and chosen, every worker trains with the choice
// (summary.json's compressor is none or powersgd), and `rank: auto` or an --opt is refused before any worker starts.
TEST(TrainCli, CompressorAutoMeasuresTheLinkAndSaysWhatItChose) {
  REQUIRE_DATASET();
  TempDir dir("cli");
  const std::string out = dir / "auto";
  const CommandResult r = run_command(train_cmd("--nproc 2 --steps 3 --model mlp --compressor auto --out " + out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("compressor auto: measured "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("; chose "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("compressor auto: measured "), r.output.rfind("compressor auto: measured ")) << r.output;
  const json s = json::parse(testing::read_text(out + "/summary.json"));
  const std::string chosen = s.at("compressor").get<std::string>();
  EXPECT_TRUE(chosen == "none" || chosen == "powersgd") << chosen;
  EXPECT_NE(r.output.find("chose " + std::string(chosen == "none" ? "none" : "powersgd --rank 4")), std::string::npos)
      << r.output;
  const CommandResult bad = run_command(train_cmd("--nproc 2 --steps 3 --model mlp --compressor auto --opt "
                                                  "restart_period=3 --out " + dir / "bad"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("takes no compressor option"), std::string::npos) << bad.output;
}

TEST(TrainCli, HelpListsTheChoicesAndEveryDefault) {
  const CommandResult r = run_command(testing::lowrank_binary() + " train --help");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const auto& name : compressor_names()) expect_contains(r, name);
  for (const char* s : {"--model TEXT=cnn", "Model: mlp, cnn", "--dataset TEXT=fashion-mnist", "--compressor TEXT=powersgd",
                        "--rank INT|auto=4", "--optimizer TEXT=sgd", "sgd, adam, adamw", "--batch-size INT=64",
                        "--epochs INT=1", "--steps INT=0", "--seed UINT=0", "--threads INT=0", "--timeout FLOAT=300",
                        "--log-every FLOAT=5", "--nproc", "(default 2", "--opt KEY=VALUE", "--start-iter INT=0",
                        "--min-compression-rate FLOAT=2", "--no-error-feedback", "--no-warm-start",
                        "--uncompressed-names", "--lr FLOAT=0.05 for sgd", "--momentum FLOAT=0.9", "--lr-schedule TEXT=cosine",
                        "--weight-decay FLOAT=0", "--out DIR", "--data-dir TEXT=/usr/share/datasets/fashion-mnist",
                        "--checkpoint-every INT=0", "--keep-checkpoints INT=2", "--max-skipped-steps INT=10"})
    expect_contains(r, s);
}

TEST(TrainCli, UnknownNamesListTheValidOnesAndWriteNothing) {
  TempDir dir("cli");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--model resnet", "unknown model 'resnet'; valid: mlp, cnn"},
      {"--dataset cifar10", "unknown dataset 'cifar10'; valid: fashion-mnist"},
      {"--optimizer lamb", "unknown optimizer 'lamb'; valid: sgd, adam, adamw"},
      {"--compressor top-k", "unknown compressor 'top-k'; valid: none, noop, powersgd"},
  };
  for (const auto& c : cases) {
    const CommandResult r = run_command(train_cmd(c.first + " --out " + (dir / "out")));
    EXPECT_EQ(r.exit_code, 1) << c.first << "\n" << r.output;
    expect_contains(r, "lowrank: error: " + c.second);
    EXPECT_FALSE(testing::file_exists(dir / "out")) << c.first;
  }
}

TEST(TrainCli, NprocBelowOneIsRejected) {
  const CommandResult r = run_command(train_cmd("--nproc 0"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  expect_contains(r, "lowrank: error: --nproc: must be >= 1, got 0");
}

// Numbers are checked as the command line is parsed, before anything runs or is written: no
// saturation (99999999999999999999 was INT64_MAX), no inf or nan, and the limit in the message.
TEST(TrainCli, NumbersOutOfRangeAreRefusedNamingTheLimit) {
  TempDir dir("cli");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--batch-size 99999999999999999999", "--batch-size: must be <= 1000000, got 99999999999999999999"},
      {"--epochs 9999999999999999999", "--epochs: must be <= 1000000, got 9999999999999999999"},
      {"--steps -1", "--steps: must be >= 0, got -1"},
      {"--steps 1.5", "--steps: '1.5' is not a whole number"},
      {"--timeout 1e16", "--timeout: must be <= 1000000, got 1e16"},
      {"--timeout 1e400", "--timeout: must be <= 1000000, got 1e400"},
      {"--keep-checkpoints 4294967296", "--keep-checkpoints: must be <= 1000000, got 4294967296"},
      {"--lr 0", "--lr: must be > 0, got 0"},
      {"--lr abc", "--lr: 'abc' is not a number"},
      {"--lr nan", "--lr: 'nan' is not a number"},
      {"--momentum 1", "--momentum: must be < 1, got 1"},
      {"--threads 0x10", "--threads: '0x10' is not a number"},
      {"--seed -1", "--seed: must be >= 0, got -1"},
      {"--master-port 70000", "--master-port: must be <= 65535, got 70000"},
      {"--opt orth_eps=1e309", "option orth_eps='1e309' is not a finite number"},
  };
  for (const auto& c : cases) {
    const CommandResult r = run_command(train_cmd(c.first + " --out " + (dir / "out")));
    EXPECT_NE(r.exit_code, 0) << c.first << "\n" << r.output;
    expect_contains(r, "lowrank: error: " + c.second);
    EXPECT_EQ(r.output.find("179769313486"), std::string::npos) << r.output;  // DBL_MAX in 309 digits
    EXPECT_FALSE(testing::file_exists(dir / "out")) << c.first;
  }
}

TEST(TrainCli, LanguageModelFlagsWithAnImageModelGetOneWarning) {
  REQUIRE_DATASET();
  const CommandResult r = run_command(
      train_cmd("--nproc 2 --steps 1 --eval-examples 10 --preset small --width 64 --tokenizer byte"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string warning =
      "warning: --preset, --width, --tokenizer apply to language models (--model llama) only; ignored with --model cnn";
  expect_contains(r, warning);
  EXPECT_EQ(r.output.find(warning), r.output.rfind(warning)) << "printed by every worker:\n" << r.output;
}

TEST(TrainCli, AnEmptyTextIsNamed) {
  TempDir dir("cli");
  {
    std::ofstream(dir / "train.txt") << "";
    std::ofstream(dir / "val.txt") << "some text\n";
  }
  const CommandResult r = run_command(train_cmd("--model llama --dataset text --data-dir " + dir.path() +
                                                " --cache-dir " + (dir / "cache") + " --nproc 1 --steps 1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "lowrank: error: " + (dir / "train.txt") + " is empty (0 bytes, no line with text)");
  EXPECT_EQ(r.output.find("vocab-size"), std::string::npos) << r.output;
}

TEST(TrainCli, MissingDatasetFilesNameThePathAndTheDebianPackage) {
  TempDir dir("cli");
  const CommandResult r = run_command(train_cmd("--data-dir " + (dir / "nothing-here") + " --out " + (dir / "out")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "cannot read " + (dir / "nothing-here/train-images-idx3-ubyte.gz"));
  expect_contains(r, "apt-get install dataset-fashion-mnist");
  EXPECT_FALSE(testing::file_exists(dir / "out"));
}

TEST(TrainCli, CorruptDatasetFilesAreNamed) {
  TempDir dir("cli");
  testing::write_fashion_dir(dir.path(), 20, 10);
  testing::write_gz(dir / "t10k-images-idx3-ubyte.gz",
                    testing::idx_bytes({10, 28, 28}, std::vector<uint8_t>(9 * 28 * 28, 3)));  // one image short
  const CommandResult r = run_command(train_cmd("--data-dir " + dir.path() + " --out " + (dir / "out")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "corrupt IDX file " + (dir / "t10k-images-idx3-ubyte.gz") + ": truncated");
  expect_contains(r, "dataset-fashion-mnist");
  EXPECT_FALSE(testing::file_exists(dir / "out"));
}

TEST(TrainCli, APortInUseIsAClearError) {
  REQUIRE_DATASET();
  Listener busy;
  const std::string port = std::to_string(busy.port);
  // The local launcher checks a given port before starting workers...
  CommandResult r = run_command(train_cmd("--nproc 2 --steps 1 --master-port " + port));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "port " + port + " on 127.0.0.1 is already in use");
  // ... and rank 0 of an external job fails to host the rendezvous store with a hint.
  r = run_command(train_cmd("--steps 1 --timeout 30", "RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + port));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, "rank 0: rendezvous at 127.0.0.1:" + port + " failed");
  expect_contains(r, "Address already in use");
  expect_contains(r, "hint: is the port already in use?");
}

TEST(TrainCli, AFailingWorkerIsNamedAndNoWorkerOutlivesTheLauncher) {
  REQUIRE_DATASET();
  const std::string tag = "LOWRANK_TEST_TAG=cli" + std::to_string(::getpid());
  const CommandResult r = run_command(
      train_cmd("--nproc 2 --steps 50", tag + " LOWRANK_TEST_FAIL_RANK=1 LOWRANK_TEST_FAIL_STEP=2"));
  EXPECT_EQ(r.exit_code, 1) << r.output;  // 124 would mean `timeout` had to stop a hang
  // Rank 1 is named as the cause. Its status may read "exit code 1" or, when the launcher's clean-up
  // SIGTERM reaches it while it is still exiting, "killed by signal 15"; its own message decides.
  expect_contains(r, "lowrank: error: worker rank 1 of 2 failed (");
  expect_contains(r, "): injected failure at step 2 (LOWRANK_TEST_FAIL_RANK=1)");
  EXPECT_EQ(testing::processes_with_tag(tag), std::vector<int>{}) << "worker processes outlived the launcher";
}

TEST(TrainCli, ANonFiniteLossStopsEveryWorkerNamingTheStep) {
  REQUIRE_DATASET();
  TempDir dir("cli");
  // Every step's loss is non-finite after the first update: each is skipped on every rank until
  // --max-skipped-steps (default 10) is exceeded.
  const CommandResult r = run_command(train_cmd("--nproc 2 --lr 1e30 --steps 30 --out " + (dir / "out")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  expect_contains(r, ": non-finite loss on ranks 0 (");
  expect_contains(r, "11 steps skipped, more than --max-skipped-steps 10; every rank stopped");
  EXPECT_FALSE(testing::file_exists(dir / "out/summary.json"));
  EXPECT_FALSE(testing::file_exists(dir / "out/metrics.csv"));
}

TEST(TrainCli, CompressorAndReducerOptionsArePassedThrough) {
  REQUIRE_DATASET();
  TempDir dir("cli");
  const CommandResult ok = run_command(train_cmd("--nproc 1 --steps 3 --rank 2 --opt powersgd_mode=alternating "
                                                 "--uncompressed-names fc1 --start-iter 1 --no-warm-start --no-error-feedback --out " +
                                                 dir.path()));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  const json s = json::parse(testing::read_text(dir / "summary.json"));
  EXPECT_EQ(s.at("rank"), 2);
  EXPECT_EQ(s.at("config").at("compressor_options").at("powersgd_mode"), "alternating");
  EXPECT_EQ(s.at("config").at("uncompressed_names"), json::array({"fc1"}));
  EXPECT_EQ(s.at("config").at("start_iter"), 1);
  EXPECT_EQ(s.at("config").at("compressor_options").at("warm_start"), "false");
  EXPECT_EQ(s.at("config").at("error_feedback"), "off");
  EXPECT_NE(s.at("reducer").get<std::string>().find("| error_feedback=off |"), std::string::npos) << s.at("reducer");
  EXPECT_NE(s.at("reducer").get<std::string>().find("powersgd_mode=alternating"), std::string::npos) << s.at("reducer");
  EXPECT_NE(s.at("reducer").get<std::string>().find("3/8 tensors compressed"), std::string::npos) << s.at("reducer");

  // --error-feedback turns it on where the compressor's default is off (fp16); it excludes --no-error-feedback.
  const CommandResult on = run_command(train_cmd("--nproc 1 --steps 2 --compressor fp16 --error-feedback --out " +
                                                 (dir / "fp16")));
  ASSERT_EQ(on.exit_code, 0) << on.output;
  const json f = json::parse(testing::read_text(dir / "fp16/summary.json"));
  EXPECT_EQ(f.at("config").at("error_feedback"), "on");
  EXPECT_NE(f.at("reducer").get<std::string>().find("| error_feedback=on |"), std::string::npos) << f.at("reducer");
  EXPECT_NE(f.at("reducer").get<std::string>().find("8/8 tensors compressed"), std::string::npos) << f.at("reducer");
  const CommandResult both = run_command(train_cmd("--steps 2 --error-feedback --no-error-feedback --out " + (dir / "both")));
  EXPECT_NE(both.exit_code, 0);
  expect_contains(both, "excludes");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--opt bogus=1", "bogus=1 do not apply to compressor 'powersgd'"},
      {"--rank 2 --opt rank=3", "compressor option 'rank' is given twice (by --rank 2 and by --opt rank=3)"},
      {"--compressor none --opt rank=2", "rank=2 do not apply to compressor 'none'"},
      {"--opt novalue", "--opt 'novalue' is not KEY=VALUE"},
      {"--compressor none --no-warm-start", "warm_start=false do not apply to compressor 'none'"},
  };
  for (const auto& c : bad) {
    const CommandResult r = run_command(train_cmd(c.first + " --nproc 1 --steps 1"));
    EXPECT_EQ(r.exit_code, 1) << c.first << "\n" << r.output;
    expect_contains(r, c.second);
  }
}

TEST(TrainCli, ProcessesStartedByMpirunJoinOneJob) {
  REQUIRE_DATASET();
  TempDir dir("cli");
  const int port = launch::find_free_port();
  std::string script;
  for (int r = 0; r < 2; ++r) {
    const std::string rs = std::to_string(r);
    script += "(" + train_cmd("--steps 4 --timeout 60 --out " + (dir / "out"),
                              "OMPI_COMM_WORLD_RANK=" + rs + " OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_LOCAL_SIZE=2 "
                              "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port)) +
              " > " + dir.path() + "/log" + rs + " 2>&1; echo $? > " + dir.path() + "/rc" + rs + ") & ";
  }
  const CommandResult r = run_command("sh -c '" + script + "wait'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_EQ(testing::read_text(dir / ("rc" + std::to_string(rank))), "0\n")
        << testing::read_text(dir / ("log" + std::to_string(rank)));
  const json s = json::parse(testing::read_text(dir / "out/summary.json"));
  EXPECT_EQ(s.at("world_size"), 2);
  EXPECT_EQ(s.at("config").at("launch"), "mpirun");
  // The cores are split over the 2 local processes (OMPI_COMM_WORLD_LOCAL_SIZE).
  EXPECT_EQ(s.at("config").at("threads"), launch::choose_threads(0, launch::cores_available(), 2));
  EXPECT_EQ(json::parse(testing::read_text(dir / "out/rank1.json")).at("weights_checksum"), s.at("weights_checksum"));
}

}  // namespace
}  // namespace lowrank
