#include "lowrank/data/text_corpus.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "lowrank/data/dataset_factory.h"
#include "train/train_test_support.h"

namespace lowrank {
namespace {

using testing::error_of;
using testing::TempDir;

data::TextOptions kjv_options(int64_t seq_len = 64) {
  data::TextOptions o;
  o.cache_dir = testing::test_text_cache();
  o.seq_len = seq_len;
  return o;
}

int64_t lines_of(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) n += !line.empty();
  return n;
}

TEST(TextCorpus, KjvIsSplitByChapterAndTokenizedOnce) {
  REQUIRE_KJV();
  const auto o = kjv_options();
  data::Dataset train = data::load_dataset("kjv", "", data::Split::kTrain, o);
  data::Dataset val = data::load_dataset("kjv", "", data::Split::kTest, o);
  const std::string dir = data::text_cache_dir("kjv", "", o);
  // Every verse lands in exactly one split; validation is chapters 20, 40, …, 1180.
  EXPECT_EQ(lines_of(dir + "/train.txt") + lines_of(dir + "/val.txt"), 31102);
  EXPECT_EQ(testing::read_text(dir + "/train.txt").substr(0, 59),
            "In the beginning God created the heaven and the earth.\nAnd ");
  // Genesis 20:1 opens the first validation chapter.
  EXPECT_EQ(testing::read_text(dir + "/val.txt").rfind("And Abraham journeyed from thence", 0), 0u);
  EXPECT_EQ(train.classes, 2048);
  EXPECT_EQ(train.sequence_length(), 64);
  EXPECT_TRUE(train.is_tokens() && val.is_tokens());
  EXPECT_NE(train.tokenizer.find("sentencepiece"), std::string::npos);
  // About 1.1 M training tokens, 5 % validation.
  const double tokens = double(train.size() * 64), vtokens = double(val.size() * 64);
  EXPECT_GT(tokens, 0.8e6);
  EXPECT_LT(tokens, 1.6e6);
  EXPECT_NEAR(vtokens / (tokens + vtokens), 0.05, 0.015);
  // Windows overlap by one token: the next window starts where this one's target ends.
  EXPECT_TRUE(at::equal(train.tokens[0][64], train.tokens[1][0]));
  EXPECT_TRUE(at::equal(train.batch_targets(at::tensor({0L})).select(1, 5), train.tokens[0][6].unsqueeze(0)));
  // A second load reuses the cache: the tokenizer is not trained again.
  struct stat before {}, after {};
  ASSERT_EQ(::stat((dir + "/sp-bpe-2048.model").c_str(), &before), 0);
  (void)data::load_dataset("kjv", "", data::Split::kTrain, o);
  ASSERT_EQ(::stat((dir + "/sp-bpe-2048.model").c_str(), &after), 0);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
  EXPECT_EQ(before.st_ino, after.st_ino);
}

TEST(TextCorpus, SentencePieceRoundTripsTheText) {
  REQUIRE_KJV();
  auto tok = data::prepare_text("kjv", "", kjv_options());
  EXPECT_EQ(tok->vocab_size(), 2048);
  const std::string verse = "And God said, Let there be light: and there was light.";
  const auto ids = tok->encode(verse);
  EXPECT_LT(ids.size(), verse.size() / 3);  // BPE merges: far fewer tokens than bytes
  EXPECT_EQ(tok->decode(ids), verse);
  // Byte fallback: text the Bible never uses is still encoded losslessly.
  const std::string odd = "Zürich 2026 — naïve café";
  EXPECT_EQ(tok->decode(tok->encode(odd)), odd);
}

TEST(TextCorpus, ByteTokenizerAndUserText) {
  TempDir d("text");
  {
    std::ofstream(d / "train.txt") << "the cat sat on the mat\nthe dog sat on the log\n";
    std::ofstream(d / "val.txt") << "the cat sat\n";
  }
  data::TextOptions o;
  o.cache_dir = d / "cache";
  o.tokenizer = "byte";
  o.seq_len = 8;
  data::Dataset train = data::load_dataset("text", d.path(), data::Split::kTrain, o);
  EXPECT_EQ(train.classes, 256);
  // 46 bytes (with the newlines) -> (46 - 1) / 8 = 5 windows of 9.
  EXPECT_EQ(train.tokens.sizes(), at::IntArrayRef({5, 9}));
  EXPECT_EQ(train.tokens[0][0].item<int64_t>(), 't');
  EXPECT_EQ(train.tokens[0][3].item<int64_t>(), ' ');
  EXPECT_EQ(train.tokens[2][6].item<int64_t>(), '\n');  // byte 22 ends the first line
  // Validation text shorter than one window fails naming the split.
  o.seq_len = 16;
  const std::string msg = error_of([&] { data::load_dataset("text", d.path(), data::Split::kTest, o); });
  EXPECT_NE(msg.find("validation text"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--seq-len 16"), std::string::npos) << msg;
}

TEST(TextCorpus, MissingAndCorruptFilesAreNamed) {
  TempDir d("text-bad");
  data::TextOptions o;
  o.cache_dir = d / "cache";
  o.tokenizer = "byte";
  std::string msg = error_of([&] { data::load_dataset("text", d.path(), data::Split::kTrain, o); });
  EXPECT_NE(msg.find(d / "train.txt"), std::string::npos) << msg;
  msg = error_of([&] { data::load_dataset("text", "", data::Split::kTrain, o); });
  EXPECT_NE(msg.find("--data-dir"), std::string::npos) << msg;
  {
    std::ofstream(d / "train.txt") << "abcdefghijklmnopqrstuvwxyz\n";
    std::ofstream(d / "val.txt") << "abcdefghijklmnopqrstuvwxyz\n";
  }
  o.seq_len = 4;
  (void)data::load_dataset("text", d.path(), data::Split::kTrain, o);
  const std::string tokens = data::text_cache_dir("text", d.path(), o) + "/train.byte.tokens";
  ASSERT_TRUE(testing::file_exists(tokens));
  std::ofstream(tokens, std::ios::app) << "xy";  // not a whole int32
  msg = error_of([&] { data::load_dataset("text", d.path(), data::Split::kTrain, o); });
  EXPECT_NE(msg.find("corrupt token file " + tokens), std::string::npos) << msg;
  EXPECT_NE(msg.find("delete it"), std::string::npos) << msg;
  // Edited text is a new cache entry, prepared anew.
  std::ofstream(d / "train.txt", std::ios::app) << "more text here\n";
  EXPECT_NE(data::text_cache_dir("text", d.path(), o) + "/train.byte.tokens", tokens);
  EXPECT_NE(error_of([&] {
              data::TextOptions bad = o;
              bad.tokenizer = "wordpiece";
              data::prepare_text("text", d.path(), bad);
            }).find("sentencepiece"),
            std::string::npos);
}

TEST(TextCorpus, RanksPreparingTogetherGetIdenticalFiles) {
  TempDir d("text-race");
  {
    std::ofstream out(d / "train.txt");
    for (int i = 0; i < 400; ++i) out << "line " << i << " of a text that several ranks prepare at once\n";
    std::ofstream(d / "val.txt") << "a short validation line that is long enough\n";
  }
  data::TextOptions o;
  o.cache_dir = d / "cache";
  o.tokenizer = "sentencepiece";
  o.vocab_size = 300;
  o.seq_len = 8;
  std::vector<at::Tensor> got(4);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 4; ++r)
    ranks.emplace_back([&, r] { got[r] = data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens; });
  for (auto& t : ranks) t.join();
  for (int r = 1; r < 4; ++r) EXPECT_TRUE(at::equal(got[0], got[r])) << r;
  // No temporary file is left behind.
  EXPECT_EQ(std::system(("ls '" + data::text_cache_dir("text", d.path(), o) + "' | grep -q tmp").c_str()) == 0,
            false);
}

}  // namespace
}  // namespace lowrank
