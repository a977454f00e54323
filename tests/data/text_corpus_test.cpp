#include "lowrank/data/text_corpus.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "lowrank/data/dataset_factory.h"
#include "lowrank/data/file_record.h"
#include "support/train_test_support.h"

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
  std::ofstream(tokens, std::ios::app) << "xy";  // not a whole int32: rebuilt, not read
  EXPECT_EQ(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens.size(0), 6);
  EXPECT_EQ(testing::read_text(tokens).size(), 27u * 4);
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

// Overwrites `path` with `text` and restores its access and modification times: with text of the
// same size, an edit the cache directory's key (size and time) cannot see.
void rewrite_keeping_mtime(const std::string& path, const std::string& text) {
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  std::ofstream(path, std::ios::trunc) << text;
  const struct timespec times[2] = {st.st_atim, st.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

data::TextOptions byte_options(const std::string& cache, int64_t seq_len = 4) {
  data::TextOptions o;
  o.cache_dir = cache;
  o.tokenizer = "byte";
  o.seq_len = seq_len;
  return o;
}

TEST(FileRecord, NamesWhyAFileIsStale) {
  TempDir d("record");
  const std::string f = d / "f";
  const data::RecordInputs in = {{"source a", data::digest_of("abc")}};
  std::string why;
  EXPECT_FALSE(data::read_recorded(f, in, &why));
  EXPECT_NE(why.find("does not exist"), std::string::npos) << why;
  std::ofstream(f) << "0123456789";
  EXPECT_FALSE(data::read_recorded(f, in, &why));
  EXPECT_NE(why.find("has no record " + f + ".record"), std::string::npos) << why;
  data::write_recorded(f, "0123456789", in);
  EXPECT_EQ(data::read_recorded(f, in, &why).value_or(""), "0123456789");
  EXPECT_FALSE(data::read_recorded(f, {{"source a", data::digest_of("abd")}}, &why));
  EXPECT_EQ(why, "was made from another source a than the one now given");
  EXPECT_FALSE(data::read_recorded(f, {}, &why));
  std::ofstream(f, std::ios::trunc) << "01234";
  EXPECT_FALSE(data::read_recorded(f, in, &why));
  EXPECT_EQ(why, "is 5 bytes, its record says 10 (truncated or edited?)");
  std::ofstream(f, std::ios::trunc) << "0123456780";
  EXPECT_FALSE(data::read_recorded(f, in, &why));
  EXPECT_NE(why.find("does not hold the bytes its record names"), std::string::npos) << why;
}

TEST(TextCorpus, ATruncatedOrEditedCacheFileIsRebuilt) {
  TempDir d("text-stale");
  {
    std::ofstream(d / "train.txt") << "abcdefghijklmnopqrstuvwxyz\n";
    std::ofstream(d / "val.txt") << "zyxwvutsrqponmlkjihgfedcba\n";
  }
  const auto o = byte_options(d / "cache");
  const at::Tensor want = data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens;
  const std::string tokens = data::text_cache_dir("text", d.path(), o) + "/train.byte.tokens";
  ASSERT_TRUE(testing::file_exists(tokens + ".record"));
  // Truncated to whole int32s (it read as a shorter corpus before), then same-size garbage.
  ASSERT_EQ(::truncate(tokens.c_str(), 8), 0);
  EXPECT_TRUE(at::equal(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens, want));
  rewrite_keeping_mtime(tokens, std::string(27 * 4, '\0'));
  EXPECT_TRUE(at::equal(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens, want));
  // A token file without its record (a crash between the two, an older lowrank) is rebuilt too.
  ASSERT_EQ(::truncate(tokens.c_str(), 8), 0);
  ASSERT_EQ(std::remove((tokens + ".record").c_str()), 0);
  EXPECT_TRUE(at::equal(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens, want));
}

TEST(TextCorpus, TextEditedAtTheSameSizeAndTimeIsTokenizedAgain) {
  TempDir d("text-edit");
  {
    std::ofstream(d / "train.txt") << "aaaaaaaaaaaaaaaa\n";
    std::ofstream(d / "val.txt") << "bbbbbbbbbbbbbbbb\n";
  }
  const auto o = byte_options(d / "cache");
  EXPECT_EQ(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens[0][0].item<int64_t>(), 'a');
  const std::string dir = data::text_cache_dir("text", d.path(), o);
  rewrite_keeping_mtime(d / "train.txt", "cccccccccccccccc\n");
  rewrite_keeping_mtime(d / "val.txt", "dddddddddddddddd\n");
  ASSERT_EQ(data::text_cache_dir("text", d.path(), o), dir);  // the same cache entry
  EXPECT_EQ(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens[0][0].item<int64_t>(), 'c');
  EXPECT_EQ(data::load_dataset("text", d.path(), data::Split::kTest, o).tokens[0][0].item<int64_t>(), 'd');
}

TEST(TextCorpus, AStaleTokenizerIsTrainedAgain) {
  TempDir d("text-spm");
  {
    std::ofstream out(d / "train.txt");
    for (int i = 0; i < 200; ++i) out << "line " << i << " of a text for a small tokenizer\n";
    std::ofstream(d / "val.txt") << "a short validation line that is long enough\n";
  }
  data::TextOptions o;
  o.cache_dir = d / "cache";
  o.vocab_size = 300;
  o.seq_len = 8;
  const at::Tensor want = data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens;
  const std::string model = data::text_cache_dir("text", d.path(), o) + "/sp-bpe-300.model";
  const std::string good = testing::read_text(model);
  std::ofstream(model, std::ios::trunc) << good.substr(0, good.size() / 2);  // would not even load
  EXPECT_TRUE(at::equal(data::load_dataset("text", d.path(), data::Split::kTrain, o).tokens, want));
  EXPECT_EQ(testing::read_text(model), good);  // training is deterministic
}

TEST(TextCorpus, EmptyTextIsRefusedNamingTheFile) {
  TempDir d("text-empty");
  {
    std::ofstream(d / "train.txt") << "\n\n";
    std::ofstream(d / "val.txt") << "some validation text\n";
  }
  for (const char* tokenizer : {"byte", "sentencepiece"}) {
    data::TextOptions o = byte_options(d / "cache");
    o.tokenizer = tokenizer;
    const std::string msg = error_of([&] { data::load_dataset("text", d.path(), data::Split::kTrain, o); });
    EXPECT_NE(msg.find(d / "train.txt is empty (2 bytes, no line with text)"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("vocab-size"), std::string::npos) << msg;
  }
  const std::string msg = error_of([&] { data::train_sentencepiece(d / "train.txt", 300, d / "x.model"); });
  EXPECT_NE(msg.find("cannot train the SentencePiece tokenizer on " + (d / "train.txt") + ": it is empty"),
            std::string::npos)
      << msg;
}

TEST(TextCorpus, ATruncatedKjvTextIsReadAgain) {
  REQUIRE_KJV();
  TempDir d("kjv-stale");
  const auto o = byte_options(d / "cache", 64);
  const int64_t windows = data::load_dataset("kjv", "", data::Split::kTrain, o).size();
  const std::string train = data::text_cache_dir("kjv", "", o) + "/train.txt";
  for (const std::string f : {train, data::text_cache_dir("kjv", "", o) + "/kjv.txt"}) {
    ASSERT_TRUE(testing::file_exists(f + ".record")) << f;
    ASSERT_EQ(::truncate(f.c_str(), 1000), 0);
    EXPECT_EQ(data::load_dataset("kjv", "", data::Split::kTrain, o).size(), windows) << f;
  }
  EXPECT_EQ(lines_of(train), 31102 - lines_of(data::text_cache_dir("kjv", "", o) + "/val.txt"));
}

// A cache an older lowrank prepared (no records), used where the Bible reader is not installed:
// adopted with a warning (before the records existed, such a cache worked); once recorded, a
// damaged file there is refused naming it.
TEST(TextCorpus, AnUnrecordedKjvCacheIsAdoptedWhereTheReaderIsMissing) {
  REQUIRE_KJV();
  TempDir d("kjv-adopt");
  const auto o = byte_options(d / "cache", 64);
  const int64_t windows = data::load_dataset("kjv", "", data::Split::kTrain, o).size();
  const std::string dir = data::text_cache_dir("kjv", "", o);
  for (const std::string f : {"train.txt", "val.txt", "kjv.txt"}) ASSERT_EQ(std::remove((dir + "/" + f + ".record").c_str()), 0);
  ::setenv("LOWRANK_KJV_READER", "/nonexistent/bible", 1);
  EXPECT_EQ(data::load_dataset("kjv", "", data::Split::kTrain, o).size(), windows);
  EXPECT_TRUE(testing::file_exists(dir + "/train.txt.record"));
  ASSERT_EQ(::truncate((dir + "/train.txt").c_str(), 1000), 0);
  const std::string err = testing::error_of([&] { data::load_dataset("kjv", "", data::Split::kTrain, o); });
  ::unsetenv("LOWRANK_KJV_READER");
  EXPECT_NE(err.find(dir + "/train.txt"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot be rebuilt"), std::string::npos) << err;
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
