// The language-model path of the trainer: token windows, llama, AdamW with warm-up, clipping,
// validation loss and perplexity, dense embeddings.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>

#include "lowrank/report/metrics_writer.h"
#include "lowrank/train/trainer.h"
#include "support/multi_rank.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

// A token stream with structure: t_{i+1} = (5·t_i + 3) mod V most of the time, a random token
// every 8th position. A model that learns the rule reaches far below the uniform loss ln V.
data::Dataset rule_tokens(int64_t windows, int64_t T, int64_t V, uint64_t seed, const std::string& name) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t n = windows * T + 1;
  at::Tensor noise = at::randint(V, {n}, gen, at::kLong);
  std::vector<int64_t> s(n);
  s[0] = noise[0].item<int64_t>();
  for (int64_t i = 1; i < n; ++i) s[i] = i % 8 == 0 ? noise[i].item<int64_t>() : (5 * s[i - 1] + 3) % V;
  data::Dataset d;
  d.name = name;
  d.tokens = at::tensor(s, at::kLong).as_strided({windows, T + 1}, {T, 1}).clone();
  d.classes = V;
  d.tokenizer = "synthetic";
  return d;
}

train::TrainOptions lm_options() {
  train::TrainOptions o;
  o.model("llama").dataset("text").width(32).layers(1).heads(2).seq_len(16).optimizer("adamw").lr(1e-2)
      .clip_grad_norm(1.0).compressor("powersgd").default_rank(4).batch_size(8).epochs(12).metrics_every(5)
      .eval_every(10);
  return o;
}

TEST(LanguageModel, TrainsOnTokenWindowsAndReportsPerplexity) {
  const int64_t V = 64;
  const auto train_set = rule_tokens(96, 16, V, 1, "rule/train"), val_set = rule_tokens(16, 16, V, 2, "rule/val");
  std::vector<train::TrainResult> results(2);
  std::vector<std::vector<std::string>> compressed(2);
  testing::TempDir out("lm");
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(lm_options(), train_set, val_set, c);
    std::unique_ptr<report::MetricsWriter> metrics;
    if (c->rank() == 0) metrics = std::make_unique<report::MetricsWriter>(out.path());
    t.set_metrics(metrics.get());
    results[c->rank()] = t.run();
    compressed[c->rank()] = t.reducer().compressed_names();
    if (metrics) metrics->close();
  });
  const auto& r = results[0];
  EXPECT_TRUE(r.language_model);
  EXPECT_EQ(r.vocab_size, V);
  EXPECT_EQ(r.steps, 12 * 6);  // 48 windows per rank, 8 per step
  EXPECT_EQ(results[1].weights_checksum, r.weights_checksum);
  // Learned the rule: 7 of 8 next tokens are predictable.
  EXPECT_LT(r.test_loss, 0.6 * std::log(double(V))) << r.test_loss;
  EXPECT_GT(r.test_accuracy, 0.5);
  EXPECT_NEAR(r.val_perplexity, std::exp(r.test_loss), 1e-9 * r.val_perplexity);
  // The papers' choice by default: embedding and output dense, every block matrix compressed.
  for (const auto& name : compressed[0]) {
    EXPECT_EQ(name.find("tok_embeddings"), std::string::npos);
    EXPECT_EQ(name.find("output"), std::string::npos);
  }
  EXPECT_EQ(compressed[0].size(), 7u) << "wq wk wv wo w1 w2 w3";
  // metrics.csv: val_loss and val_perplexity every eval_every steps and at the end.
  std::ifstream in(out / "metrics.csv");
  std::string header, line;
  std::getline(in, header);
  EXPECT_NE(header.find(",val_loss,val_perplexity"), std::string::npos) << header;
  int evaluated = 0;
  double last_val = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
    if (line.back() == ',') cells.push_back("");
    ASSERT_EQ(cells.size(), 18u) << line;
    const int64_t step = std::stoll(cells[0]);
    EXPECT_GT(std::stoll(cells[16]), 0) << line;  // row_bytes
    EXPECT_EQ(cells[17], "4") << line;            // mean_rank: powersgd at rank 4
    const bool has_val = !cells[14].empty();
    EXPECT_EQ(has_val, step % 10 == 0 || step % 6 == 0) << line;  // eval_every 10, epoch ends
    if (has_val) {
      ++evaluated;
      last_val = std::stod(cells[14]);
      EXPECT_NEAR(std::stod(cells[15]), std::exp(last_val), 1e-4 * std::exp(last_val)) << line;
    }
  }
  EXPECT_GE(evaluated, 6);
  EXPECT_NEAR(last_val, r.test_loss, 1e-5);
}

TEST(LanguageModel, ClippingBoundsTheUpdateByTheGlobalNorm) {
  // Plain SGD at lr 1 after clipping to 1e-3: the weights move by exactly 1e-3 in global norm.
  const auto train_set = rule_tokens(8, 16, 64, 1, "rule/train"), val_set = rule_tokens(2, 16, 64, 2, "rule/val");
  for (double clip : {1e-3, 0.0}) {
    auto o = lm_options();
    o.optimizer("sgd").momentum(0).lr(1.0).lr_schedule("constant").warmup_steps(0).clip_grad_norm(clip)
        .compressor("none").steps(1).batch_size(4).eval_every(0);
    double moved = 0;
    testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
      train::Trainer t(o, train_set, val_set, c);
      std::vector<at::Tensor> before;
      for (const auto& p : t.model().parameters()) before.push_back(p.detach().clone());
      t.run();
      double sq = 0;
      size_t i = 0;
      for (const auto& p : t.model().parameters()) sq += (p.detach() - before[i++]).pow(2).sum().item<double>();
      if (c->rank() == 0) moved = std::sqrt(sq);
    });
    if (clip > 0)
      EXPECT_NEAR(moved, clip, 1e-5 * clip);
    else
      EXPECT_GT(moved, 0.01);  // unclipped, the first gradient is far larger
  }
}

TEST(LanguageModel, OptionsPairModelsWithTheirData) {
  train::TrainOptions o;
  o.model("llama");  // with the default image dataset
  std::string msg = testing::error_of([&] { o.validate(); });
  EXPECT_NE(msg.find("needs a text dataset"), std::string::npos) << msg;
  o.model("cnn").dataset("kjv");
  msg = testing::error_of([&] { o.validate(); });
  EXPECT_NE(msg.find("needs an image dataset"), std::string::npos) << msg;
  o.model("llama").model_preset("giant");
  msg = testing::error_of([&] { o.validate(); });
  EXPECT_NE(msg.find("giant"), std::string::npos) << msg;
  o.model_preset("tiny").heads(5);
  msg = testing::error_of([&] { o.validate(); });
  EXPECT_NE(msg.find("heads"), std::string::npos) << msg;
  o.heads(0).vocab_size(100);
  msg = testing::error_of([&] { o.validate(); });
  EXPECT_NE(msg.find("--vocab-size"), std::string::npos) << msg;
  o.vocab_size(2048);
  o.validate();
  EXPECT_EQ(o.resolved_warmup_steps(500), 50);  // automatic: a tenth of the run
  EXPECT_EQ(o.model("cnn").dataset("fashion-mnist").resolved_warmup_steps(500), 0);
  // Language models keep the embedding and output dense unless told otherwise.
  o.model("llama").dataset("kjv");
  EXPECT_EQ(o.resolved_reducer().uncompressed_names(), (std::vector<std::string>{"tok_embeddings", "output"}));
  EXPECT_TRUE(o.dense_embeddings(false).resolved_reducer().uncompressed_names().empty());
}

TEST(LanguageModel, TrainCommandOnTheBibleWritesValidationPerplexity) {
  REQUIRE_KJV();
  testing::TempDir out("lm-cli");
  const auto r = testing::run_command(testing::train_cmd(
      "--model llama --width 32 --layers 1 --heads 2 --seq-len 32 --steps 6 --eval-every 3 --eval-examples 8 "
      "--cache-dir " + testing::test_text_cache() + " --out " + out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  testing::expect_contains(r, "optimizer=adamw");
  testing::expect_contains(r, "kjv/train");
  testing::expect_contains(r, "val perplexity");
  const auto j = nlohmann::json::parse(testing::read_text(out / "summary.json"));
  EXPECT_EQ(j["task"], "language_model");
  EXPECT_EQ(j["vocab_size"], 2048);
  EXPECT_EQ(j["dataset"], "kjv");
  EXPECT_NEAR(j["val_perplexity"].get<double>(), std::exp(j["val_loss"].get<double>()), 1e-6 * 2048);
  // Six steps from a random start: still close to the uniform 2048, but already below it.
  EXPECT_LT(j["val_perplexity"].get<double>(), 2048.0);
  EXPECT_EQ(j["config"]["clip_grad_norm"], 1.0);
  EXPECT_EQ(j["config"]["uncompressed_names"], (nlohmann::json{"tok_embeddings", "output"}));
}

}  // namespace
}  // namespace lowrank
