#include "lowrank/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <mutex>
#include <regex>
#include <set>

#include "lowrank/report/metrics_writer.h"
#include "lowrank/train/checkpoint.h"
#include "support/multi_rank.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

// The synthetic task (a bright 4×4 block in one of four quadrants, over uniform noise) is
// separable with a wide margin; an MLP trained for 3 epochs classifies (nearly) all of it.
constexpr double kMinAccuracy = 0.9;
// ... and its training loss ends far below the chance level log(4) = 1.386.
constexpr double kMaxFinalLoss = 0.5;

using testing::quadrants;

train::TrainOptions small_options() {
  train::TrainOptions o;
  o.model("mlp").compressor("powersgd").default_rank(2).batch_size(16).epochs(3).lr(0.05).metrics_every(5);
  return o;
}

template <typename F>
std::vector<std::string> errors_on_ranks(int W, F body) {
  std::vector<std::string> errors(W);
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    try {
      body(c);
    } catch (const c10::Error& e) {
      errors[c->rank()] = e.msg();
    }
  });
  return errors;
}

TEST(Trainer, RanksEndWithIdenticalWeightsAndLearn) {
  const auto train_set = quadrants(384, 1, "quadrants/train"), test_set = quadrants(96, 2, "quadrants/test");
  for (int W : {1, 2, 3}) {
    std::vector<train::TrainResult> results(W);
    std::vector<int64_t> expected_floats(W);
    testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
      train::Trainer t(small_options(), train_set, test_set, c);
      results[c->rank()] = t.run();
      expected_floats[c->rank()] = t.reducer().expected_bytes(0) / 4;
    });
    const int64_t per_rank = 384 / W, steps = 3 * ((per_rank + 15) / 16);
    for (int r = 0; r < W; ++r) {
      const auto& res = results[r];
      SCOPED_TRACE("W=" + std::to_string(W) + " rank " + std::to_string(r));
      EXPECT_EQ(res.steps, steps);
      EXPECT_EQ(res.epochs, 3);
      ASSERT_EQ(res.rank_checksums.size(), size_t(W));
      for (uint64_t cs : res.rank_checksums) EXPECT_EQ(cs, results[0].weights_checksum);
      EXPECT_EQ(res.weights_checksum, results[0].weights_checksum);
      EXPECT_GE(res.test_accuracy, kMinAccuracy);
      EXPECT_LE(res.final_train_loss, kMaxFinalLoss);
      EXPECT_EQ(res.epoch_test_accuracy.size(), 3u);
      // PowerSGD sends the same number of floats every step: the reducer's count is exact.
      EXPECT_EQ(res.reducer.floats_sent, steps * expected_floats[r]);
      EXPECT_EQ(res.reducer.steps, steps);
      EXPECT_GT(res.reducer.compression_ratio(), 1.0);
      // The step-time split: medians of each part, none longer than the whole step.
      EXPECT_GT(res.step_ms_median, 0.0);
      EXPECT_GT(res.forward_backward_ms, 0.0);
      EXPECT_GT(res.optimizer_ms, 0.0);
      EXPECT_GT(res.communicate_ms, 0.0);
      for (double part : {res.forward_backward_ms, res.communicate_ms, res.optimizer_ms})
        EXPECT_LE(part, res.step_ms_median * 1.5 + 1.0);
      EXPECT_TRUE(res.weights_agree);
    }
  }
}

// eval_examples evaluates the first N test examples only: with the quadrants test set (whose
// classes follow the row index in blocks) a smaller prefix gives a different accuracy estimate,
// and the count is what the loss is averaged over.
TEST(Trainer, EvalExamplesLimitsTheEvaluatedPrefix) {
  const auto train_set = quadrants(128, 1, "q/train"), test_set = quadrants(96, 2, "q/test");
  std::vector<double> losses;
  for (int64_t n : {0, 8, 96, 1000}) {
    std::vector<train::TrainResult> results(2);
    testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
      train::Trainer t(small_options().epochs(1).eval_examples(n), train_set, test_set, c);
      results[c->rank()] = t.run();
    });
    losses.push_back(results[0].test_loss);
  }
  EXPECT_EQ(losses[0], losses[2]);  // 96 = the whole set
  EXPECT_EQ(losses[0], losses[3]);  // more than the set: the whole set
  EXPECT_NE(losses[0], losses[1]);  // a prefix of 8
}

// noop sends nothing: the ranks' weights drift apart, and the run says so instead of failing the
// end-of-run agreement check.
TEST(Trainer, NoopTrainsEachRankOnItsOwnGradients) {
  const auto train_set = quadrants(128, 1, "q/train"), test_set = quadrants(32, 2, "q/test");
  std::vector<train::TrainResult> results(2);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(small_options().compressor("noop").epochs(1), train_set, test_set, c);
    results[c->rank()] = t.run();
  });
  for (const auto& r : results) {
    EXPECT_FALSE(r.weights_agree);
    EXPECT_EQ(r.reducer.bytes_sent, 0);
    EXPECT_GT(r.step_ms_median, 0.0);
  }
  EXPECT_NE(results[0].weights_checksum, results[1].weights_checksum);  // different shards, no averaging
}

TEST(Trainer, TheSeedDeterminesTheRun) {
  const auto train_set = quadrants(128, 1, "q/train"), test_set = quadrants(32, 2, "q/test");
  auto run = [&](uint64_t seed) {
    std::vector<uint64_t> sums(2);
    testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
      train::Trainer t(small_options().seed(seed).epochs(1), train_set, test_set, c);
      sums[c->rank()] = t.run().weights_checksum;
    });
    EXPECT_EQ(sums[0], sums[1]);
    return sums[0];
  };
  const uint64_t a = run(5), b = run(5), c = run(6);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Trainer, ShardsAreDisjointEqualAndReshuffledEveryEpoch) {
  for (int W : {1, 2, 3, 4}) {
    std::set<int64_t> seen;
    for (int r = 0; r < W; ++r) {
      at::Tensor s = train::Trainer::shard(10, 9, 0, r, W);
      ASSERT_EQ(s.size(0), 10 / W);
      for (int64_t i = 0; i < s.size(0); ++i) EXPECT_TRUE(seen.insert(s[i].item<int64_t>()).second) << "W=" << W;
      EXPECT_TRUE(at::equal(s, train::Trainer::shard(10, 9, 0, r, W)));
    }
    EXPECT_EQ(seen.size(), size_t(10 / W * W));
  }
  EXPECT_FALSE(at::equal(train::Trainer::shard(50, 9, 0, 0, 1), train::Trainer::shard(50, 9, 1, 0, 1)));
  EXPECT_FALSE(at::equal(train::Trainer::shard(50, 9, 0, 0, 1), train::Trainer::shard(50, 10, 0, 0, 1)));
}

TEST(Trainer, NonFiniteLossStopsEveryRankNamingTheStep) {
  const auto train_set = quadrants(128, 1, "q/train"), test_set = quadrants(32, 2, "q/test");
  const auto errors = errors_on_ranks(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(small_options().lr(1e30), train_set, test_set, c);
    t.run();
  });
  for (int r = 0; r < 2; ++r) {
    // Step 0 updates with lr 1e30; every later loss is non-finite and skipped on every rank until
    // max_skipped_steps (10) is exceeded at step 11.
    EXPECT_NE(errors[r].find("step 11: non-finite loss on ranks 0 (-nan), 1 (-nan); 11 steps skipped, more than "
                             "--max-skipped-steps 10"),
              std::string::npos)
        << "rank " << r << ": " << errors[r];
    EXPECT_NE(errors[r].find("every rank stopped"), std::string::npos) << errors[r];
  }
  EXPECT_EQ(errors[0], errors[1]);  // both name the same step and losses
}

TEST(Trainer, StepLimitStopsMidEpochAndStillEvaluates) {
  const auto train_set = quadrants(128, 1, "q/train"), test_set = quadrants(32, 2, "q/test");
  train::Trainer t(small_options().steps(3), train_set, test_set, comm::make_local_communicator());
  const auto res = t.run();
  EXPECT_EQ(res.steps, 3);
  EXPECT_EQ(res.epochs, 1);
  EXPECT_EQ(res.steps_per_epoch, 8);
  ASSERT_EQ(res.epoch_test_accuracy.size(), 1u);
  EXPECT_GE(res.test_accuracy, 0.0);
  EXPECT_LE(res.test_accuracy, 1.0);
}

TEST(Trainer, MetricsRowsComeEveryNStepsAndAtTheEnd) {
  testing::TempDir dir("metrics");
  // 16 steps per epoch: step 10 is mid-epoch, the end of training.
  const auto train_set = quadrants(256, 1, "q/train"), test_set = quadrants(32, 2, "q/test");
  train::Trainer t(small_options().steps(10).metrics_every(4), train_set, test_set, comm::make_local_communicator());
  report::MetricsWriter w(dir.path());
  t.set_metrics(&w);
  t.run();
  EXPECT_TRUE(testing::file_exists(dir / "metrics.csv.partial"));
  w.close();
  EXPECT_FALSE(testing::file_exists(dir / "metrics.csv.partial"));
  std::istringstream lines(testing::read_text(dir / "metrics.csv"));
  std::vector<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], report::MetricsWriter::header());
  EXPECT_EQ(rows[1].substr(0, 4), "4,1,");
  EXPECT_EQ(rows[2].substr(0, 4), "8,1,");
  EXPECT_EQ(rows[3].substr(0, 5), "10,1,");
  // Only the last row (end of training) has a test accuracy and a held-out loss; a classifier has
  // no perplexity. Cells are found by the header's names.
  auto cells_of = [](const std::string& row) {
    std::vector<std::string> cells;
    std::istringstream is(row);
    for (std::string c; std::getline(is, c, ',');) cells.push_back(c);
    if (!row.empty() && row.back() == ',') cells.push_back("");
    return cells;
  };
  const auto header = cells_of(rows[0]);
  auto cell = [&](const std::string& row, const std::string& name) {
    const auto cells = cells_of(row);
    const size_t i = std::find(header.begin(), header.end(), name) - header.begin();
    return i < cells.size() && cells.size() == header.size() ? cells[i] : std::string("<missing>");
  };
  EXPECT_EQ(cell(rows[1], "test_accuracy"), "");
  EXPECT_EQ(cell(rows[1], "val_loss"), "");
  EXPECT_NE(cell(rows[3], "test_accuracy"), "");
  EXPECT_GT(std::stod(cell(rows[3], "val_loss")), 0.0);
  EXPECT_EQ(cell(rows[3], "val_perplexity"), "");
}

TEST(Trainer, StepHookErrorsStopTheRun) {
  const auto train_set = quadrants(64, 1, "q/train"), test_set = quadrants(16, 2, "q/test");
  train::Trainer t(small_options(), train_set, test_set, comm::make_local_communicator());
  int64_t calls = 0;
  t.set_step_hook([&](int64_t step) {
    ++calls;
    TORCH_CHECK(step != 2, "hook says stop at ", step);
  });
  try {
    t.run();
    ADD_FAILURE() << "run() did not throw";
  } catch (const c10::Error& e) {
    EXPECT_NE(e.msg().find("hook says stop at 2"), std::string::npos) << e.msg();
  }
  EXPECT_EQ(calls, 3);
}

// The log's lines keep their format (people and scripts read them): with a tiny log_every a
// progress line after every step, the epoch's evaluation line, then the checkpoint's.
TEST(Trainer, LogLinesKeepTheirFormat) {
  testing::TempDir dir("log");
  const auto train_set = quadrants(128, 1, "q/train"), test_set = quadrants(32, 2, "q/test");
  train::Trainer t(small_options().steps(2).log_every(1e-9).checkpoint_dir(dir.path()), train_set, test_set,
                   comm::make_local_communicator());
  std::ostringstream log;
  t.set_log(&log);
  t.run();
  std::istringstream is(log.str());
  std::vector<std::string> lines;
  for (std::string line; std::getline(is, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << log.str();
  const std::regex progress(R"(step [12]/2  epoch 1/3  loss \d+\.\d{4}  \d+\.\d ms/step  sent \d+\.\d\d MB  ratio \d+\.\dx)");
  EXPECT_TRUE(std::regex_match(lines[0], progress)) << lines[0];
  EXPECT_EQ(lines[0].substr(0, 9), "step 1/2 ");
  EXPECT_TRUE(std::regex_match(lines[1], progress)) << lines[1];
  EXPECT_EQ(lines[1].substr(0, 9), "step 2/2 ");
  EXPECT_TRUE(std::regex_match(
      lines[2], std::regex(R"(epoch 1/3 done at step 2: test accuracy \d\.\d{4}  test loss \d+\.\d{4}  elapsed \d+\.\d s)")))
      << lines[2];
  EXPECT_EQ(lines[3], "checkpoint: step 2 -> " + train::checkpoint_dir(dir.path(), 2));
}

}  // namespace
}  // namespace lowrank
