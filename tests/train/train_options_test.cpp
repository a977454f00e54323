#include "support/train_test_support.h"
#include "lowrank/train/train_options.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include "lowrank/launch/train_job.h"

namespace lowrank {
namespace {

using testing::error_of;

void expect_invalid(const train::TrainOptions& o, const std::string& needle) {
  const std::string msg = error_of([&] { o.validate(); });
  EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
}

TEST(TrainOptions, DefaultsAreValidAndResolved) {
  train::TrainOptions o;
  EXPECT_NO_THROW(o.validate());
  EXPECT_EQ(o.resolved_lr(), 0.05);
  EXPECT_EQ(o.resolved_compressor_config().values(), (std::map<std::string, std::string>{{"rank", "4"}}));
  EXPECT_EQ(o.make_compressor()->name(), "powersgd");
  EXPECT_EQ(o.seed(123).resolved_reducer().seed(), 123u);
}

TEST(TrainOptions, DefaultRankGoesOnlyToCompressorsThatReadIt) {
  train::TrainOptions o;
  o.compressor("none");
  EXPECT_TRUE(o.resolved_compressor_config().values().empty());
  EXPECT_NO_THROW(o.validate());
  o.compressor("powersgd").compressor_config(Config{{"rank", "2"}});
  EXPECT_EQ(o.resolved_compressor_config().values().at("rank"), "2");
  o.compressor_config(Config{{"powersgd_mode", "alternating"}});
  EXPECT_NO_THROW(o.validate());
  EXPECT_EQ(o.resolved_compressor_config().values().size(), 2u);
}

TEST(TrainOptions, EveryBadFieldIsNamedWithItsValue) {
  expect_invalid(train::TrainOptions().model("vgg"), "unknown model 'vgg'; valid: mlp, cnn");
  expect_invalid(train::TrainOptions().dataset("mnist"), "unknown dataset 'mnist'; valid: fashion-mnist");
  expect_invalid(train::TrainOptions().optimizer("rmsprop"), "unknown optimizer 'rmsprop'; valid: sgd, adam, adamw");
  expect_invalid(train::TrainOptions().compressor("top-k"), "unknown compressor 'top-k'; valid: none, noop, powersgd");
  expect_invalid(train::TrainOptions().compressor_config(Config{{"bogus", "1"}}), "bogus=1 do not apply");
  expect_invalid(train::TrainOptions().compressor("none").compressor_config(Config{{"rank", "4"}}),
                 "rank=4 do not apply to compressor 'none'");
  expect_invalid(train::TrainOptions().lr_schedule("step"), "unknown lr schedule 'step'; valid: constant, cosine");
  expect_invalid(train::TrainOptions().batch_size(0), "batch_size must lie in [1, 1000000], got 0");
  expect_invalid(train::TrainOptions().epochs(0), "epochs must lie in [1, 1000000], got 0");
  expect_invalid(train::TrainOptions().steps(-2), "steps must lie in [0, 1000000000] (0 = no limit), got -2");
  expect_invalid(train::TrainOptions().lr(-0.5), "got -0.5");
  expect_invalid(train::TrainOptions().momentum(1.5), "momentum must lie in [0, 1), got 1.5");
  expect_invalid(train::TrainOptions().weight_decay(-1), "weight_decay must be a finite number >= 0, got -1");
  expect_invalid(train::TrainOptions().log_every(0), "log_every must be a number of seconds > 0, got 0");
  expect_invalid(train::TrainOptions().metrics_every(0), "metrics_every must lie in [1, 1000000000], got 0");
  expect_invalid(train::TrainOptions().eval_examples(-5), "eval_examples must lie in [0, 1000000000] (0 = the whole test set), got -5");
  // Counts past their limits (the trainer multiplies them, or casts them to int) are refused here.
  expect_invalid(train::TrainOptions().keep_checkpoints(4294967296), "keep_checkpoints must lie in [1, 1000000], got "
                 "4294967296");
  expect_invalid(train::TrainOptions().epochs(std::numeric_limits<int64_t>::max()), "epochs must lie in [1, 1000000]");
  expect_invalid(train::TrainOptions().batch_size(train::kMaxBatchSize + 1), "batch_size must lie in [1, 1000000]");
  expect_invalid(train::TrainOptions().steps(train::kMaxSteps + 1), "steps must lie in [0, 1000000000]");
  expect_invalid(train::TrainOptions().default_rank(0), "default_rank (--rank) must lie in [1, 1000000], got 0");
  // --rank auto: only the compressors that plan their rank take it (galore reads a numeric rank only).
  for (const char* name : {"galore", "topk", "none"})
    expect_invalid(train::TrainOptions().compressor(name).auto_rank(true), "does not plan its rank");
  // --compressor auto: no option only one candidate takes, a fixed rank >= 4, no resume.
  Config opt;
  opt.set("restart_period", "3");
  expect_invalid(train::TrainOptions().compressor("auto").compressor_config(opt), "got restart_period=3");
  expect_invalid(train::TrainOptions().compressor("auto").default_rank(2), "rank >= 4 (its accuracy guard), got --rank 2");
  expect_invalid(train::TrainOptions().compressor("auto").auto_rank(true), "--compressor auto with --rank auto");
  expect_invalid(train::TrainOptions().compressor("auto").resume("ck"), "--compressor auto with --resume");
  train::TrainOptions().compressor("auto").validate();  // valid as it is
  expect_invalid(train::TrainOptions().model("llama").dataset("kjv").vocab_size(100),
                 "vocab_size (--vocab-size) must lie in [260, 65536] for the SentencePiece tokenizer, got 100");
  expect_invalid(train::TrainOptions().model("llama").dataset("kjv").width(1 << 20), "width must lie in [0, 65536]");
  train::TrainOptions bad_reducer;
  bad_reducer.reducer().min_compression_rate(-1);
  expect_invalid(bad_reducer, "min_compression_rate must be a finite number >= 0, got -1");
}

// The settings a resume and the ranks compare come from the field list (TrainOptions::fields): every
// compared field is there with its exact value, the resolved ones replace what was given, paths
// appear only as whether they are set, and the resume settings are a prefix of the agreement ones.
TEST(TrainOptions, SettingsComeFromTheFieldsExactly) {
  auto find = [](const std::vector<std::pair<std::string, std::string>>& s, const std::string& key) {
    for (const auto& kv : s)
      if (kv.first == key) return kv.second;
    return std::string("<absent>");
  };
  train::TrainOptions o;
  o.momentum(0.9000001).batch_size(32).out_dir("/somewhere").data_dir("/data").metrics_every(7);
  const auto resume = o.settings(true), all = o.settings(false);
  EXPECT_EQ(find(resume, "momentum"), "0.9000001");  // 6 digits would make it equal to 0.9
  EXPECT_EQ(find(resume, "batch_size"), "32");
  EXPECT_EQ(find(resume, "lr"), "0.05");  // resolved: sgd's default
  EXPECT_EQ(find(resume, "compressor_options"), "rank=4");
  EXPECT_EQ(find(resume, "metrics_every"), "<absent>");
  EXPECT_EQ(find(all, "metrics_every"), "7");
  EXPECT_EQ(find(all, "checkpointing"), "off");
  for (const char* path : {"out", "data_dir", "checkpoint_dir", "resume", "cache_dir"})
    EXPECT_EQ(find(all, path), "<absent>") << path;
  ASSERT_LE(resume.size(), all.size());
  EXPECT_TRUE(std::equal(resume.begin(), resume.end(), all.begin()));
  EXPECT_NE(find(resume, "reducer").find("error_feedback=default"), std::string::npos) << find(resume, "reducer");
  EXPECT_EQ(find(resume, "reducer").find("stats_every"), std::string::npos);  // follows metrics_every
}

TEST(JobOptions, BadValuesAreNamed) {
  std::string msg = error_of([] { launch::JobOptions().nproc(0).validate(); });
  EXPECT_NE(msg.find("nproc must be >= 1, got 0"), std::string::npos) << msg;
  msg = error_of([] { launch::JobOptions().threads(-1).validate(); });
  EXPECT_NE(msg.find("threads must lie in [0, 1024]"), std::string::npos) << msg;
  msg = error_of([] { launch::JobOptions().master_port(70000).validate(); });
  EXPECT_NE(msg.find("got 70000"), std::string::npos) << msg;
  msg = error_of([] { launch::JobOptions().timeout_seconds(0).validate(); });
  EXPECT_NE(msg.find("timeout must be a number of seconds"), std::string::npos) << msg;
  msg = error_of([] { launch::JobOptions().timeout_seconds(1e16).validate(); });  // was -9e18 ms (L3)
  EXPECT_NE(msg.find("timeout must be a number of seconds in [0.001, 1e6], got 1e+16"), std::string::npos) << msg;
  msg = error_of([] { launch::JobOptions().threads(100000).validate(); });
  EXPECT_NE(msg.find("threads must lie in [0, 1024]"), std::string::npos) << msg;
  EXPECT_NO_THROW(launch::JobOptions().validate());
}

TEST(JobOptions, ThreadsSplitTheCoresAmongLocalWorkers) {
  EXPECT_EQ(launch::choose_threads(0, 2, 2), 1);
  EXPECT_EQ(launch::choose_threads(0, 16, 3), 5);
  EXPECT_EQ(launch::choose_threads(0, 1, 4), 1);
  EXPECT_EQ(launch::choose_threads(3, 2, 2), 3);
  EXPECT_GE(launch::cores_available(), 1);
}

}  // namespace
}  // namespace lowrank
