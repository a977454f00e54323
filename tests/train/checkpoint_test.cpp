// Checkpoints and exact resume (issue 10): every compressor resumes bit for bit; damaged,
// foreign and mismatched checkpoints are errors naming the file, never crashes.
#include "lowrank/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "lowrank/train/trainer.h"
#include "lowrank/util/files.h"
#include "lowrank/util/sha256.h"
#include "support/multi_rank.h"
#include "support/train_test_support.h"

namespace lowrank {
namespace {

using nlohmann::json;
using testing::TempDir;

const data::Dataset& train_set() {
  static const data::Dataset d = testing::quadrants(256, 1, "quadrants/train");
  return d;
}
const data::Dataset& test_set() {
  static const data::Dataset d = testing::quadrants(64, 2, "quadrants/test");
  return d;
}

struct Variant {
  std::string label;
  std::string compressor;
  Config config;
  std::string optimizer = "sgd";
  ReducerOptions reducer = ReducerOptions();
};

train::TrainOptions options_for(const Variant& v) {
  train::TrainOptions o;
  o.model("mlp").compressor(v.compressor).compressor_config(v.config).default_rank(2).batch_size(16).epochs(2).steps(11)
      .optimizer(v.optimizer).metrics_every(3).reducer(ReducerOptions(v.reducer).min_compression_rate(0));
  if (v.optimizer == "sgd") o.lr(0.05);
  return o;
}

struct Outcome {
  std::string sha;
  double final_loss = 0, accuracy = 0;
  int64_t bytes = 0, steps = 0;
  int64_t matrices = 0, rank_changes = 0;  ///< compressed matrices; rank=auto: rows of their rank histories
  std::string histories;                   ///< rank=auto: every (step, rank) row, as text
};

// Runs the variant on W in-process ranks: uninterrupted, or stopped after `stop` steps into
// `dir` and resumed from there by fresh trainers.
std::vector<Outcome> run_variant(const Variant& v, int W, const std::string& dir, int64_t stop) {
  std::vector<Outcome> out(W);
  auto record = [&](int r, const train::TrainResult& res) {
    out[r] = {res.weights_sha256, res.final_train_loss, res.test_accuracy, res.reducer.bytes_sent, res.steps};
    out[r].matrices = static_cast<int64_t>(res.ranks.size());
    for (const auto& m : res.ranks) {
      out[r].rank_changes += static_cast<int64_t>(m.history.size());
      for (const auto& h : m.history)
        out[r].histories += m.name + ":" + std::to_string(h.first) + "=" + std::to_string(h.second) + " ";
    }
  };
  if (stop == 0) {
    testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
      train::Trainer t(options_for(v), train_set(), test_set(), c);
      record(c->rank(), t.run());
    });
    return out;
  }
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(train::TrainOptions(options_for(v)).checkpoint_dir(dir).stop_after(stop), train_set(), test_set(), c);
    const auto res = t.run();
    EXPECT_TRUE(res.stopped_early);
    EXPECT_EQ(res.steps, stop);
  });
  testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(train::TrainOptions(options_for(v)).checkpoint_dir(dir).resume(dir), train_set(), test_set(), c);
    EXPECT_EQ(t.resume_from(dir), stop);
    const auto res = t.run();
    EXPECT_EQ(res.resumed_from_step, stop);
    record(c->rank(), res);
  });
  return out;
}

// N steps, stop, resume for the rest gives the same weights (SHA-256 of every parameter and
// buffer), loss, accuracy and traffic as the uninterrupted run: every compressor, both
// optimizers, the EMA/global error feedback, a stop mid-epoch and one at an epoch's end.
TEST(Checkpoint, ResumeContinuesBitForBitForEveryCompressor) {
  const std::vector<Variant> variants = {
      {"none", "none", {}},
      {"noop", "noop", {}},
      {"powersgd", "powersgd", {}},
      {"powersgd alternating", "powersgd", {{"powersgd_mode", "alternating"}}},
      {"powersgd+", "powersgd+", {{"restart_period", "3"}}},
      {"powersgd+ rsvd", "powersgd+", {{"restart_period", "3"}, {"restart", "rsvd"}}},
      {"greedylore", "greedylore", {{"refresh_period", "3"}, {"dense_steps", "2"}}},  // refreshes at s = 2, 5, ...
      {"galore", "galore", {{"refresh_period", "3"}}},
      {"powersgd adamw", "powersgd", {}, "adamw"},
      {"powersgd ema global", "powersgd", {}, "sgd", ReducerOptions().ef_beta(0.5).ef_residual(EfResidual::kGlobal)},
      {"powersgd warm-up", "powersgd", {}, "sgd", ReducerOptions().start_iter(5)},
      {"powersgd int8 factors", "powersgd", {{"factor_dtype", "int8"}}},
      // rank=auto: plans at s = 0, 3, 6, 9; the resumed run must plan the same ranks at the same steps.
      {"powersgd rank=auto", "powersgd", {{"rank", "auto"}, {"rank_period", "3"}, {"rank_energy", "0.6"}}},
      {"powersgd alternating rank=auto", "powersgd",
       {{"rank", "auto"}, {"rank_period", "3"}, {"rank_energy", "0.6"}, {"powersgd_mode", "alternating"}}},
      {"powersgd+ rsvd_dist rank=auto", "powersgd+",
       {{"rank", "auto"}, {"restart_period", "3"}, {"restart", "rsvd_dist"}, {"rank_energy", "0.6"}}},
      {"greedylore rank=auto budget", "greedylore",
       {{"rank", "auto"}, {"refresh_period", "3"}, {"dense_steps", "0"}, {"rank_budget", "12000"}}},
      {"greedylore bf16 factors", "greedylore", {{"refresh_period", "3"}, {"dense_steps", "0"}, {"factor_dtype", "bf16"}}},
      {"fp16", "fp16", {}},
      {"bf16 ef", "bf16", {}, "sgd", ReducerOptions().error_feedback(true)},
      {"topk", "topk", {{"density", "0.1"}}},
      {"randomk", "randomk", {{"density", "0.1"}}},
      {"randomk scaled", "randomk", {{"density", "0.1"}, {"scaled", "true"}}},
      {"qsgd", "qsgd", {{"levels", "3"}}},
      {"signsgd", "signsgd", {}},
  };
  const int W = 2;
  for (const auto& v : variants) {
    const auto whole = run_variant(v, W, "", 0);
    // rank=auto: some matrix changes rank after its first plan, so the stops below resume across it.
    if (v.config.has("rank")) EXPECT_GT(whole[0].rank_changes, whole[0].matrices) << v.label;
    for (int64_t stop : {int64_t(3), int64_t(8)}) {  // 8 steps per epoch: 8 is an epoch's end
      TempDir dir("ckpt");
      const auto resumed = run_variant(v, W, dir.path(), stop);
      for (int r = 0; r < W; ++r) {
        const std::string what = v.label + " stop " + std::to_string(stop) + " rank " + std::to_string(r);
        EXPECT_EQ(resumed[r].steps, whole[r].steps) << what;
        EXPECT_EQ(resumed[r].sha, whole[r].sha) << what;
        EXPECT_EQ(resumed[r].final_loss, whole[r].final_loss) << what;
        EXPECT_EQ(resumed[r].accuracy, whole[r].accuracy) << what;
        EXPECT_EQ(resumed[r].bytes, whole[r].bytes) << what;
        EXPECT_EQ(resumed[r].histories, whole[r].histories) << what;
      }
    }
  }
}

// The sanity check of the test itself: another seed gives other weights, so equal hashes above
// are not a tautology.
TEST(Checkpoint, WeightsSha256SeparatesDifferentWeights) {
  Variant v{"powersgd", "powersgd", {}};
  std::vector<std::string> a(2), b(2);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v), train_set(), test_set(), c);
    a[c->rank()] = t.run().weights_sha256;
  });
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).seed(1), train_set(), test_set(), c);
    b[c->rank()] = t.run().weights_sha256;
  });
  EXPECT_EQ(a[0].size(), 64u);
  EXPECT_EQ(a[0], a[1]);
  EXPECT_NE(a[0], b[0]);
}

// Writes one checkpoint of a 2-rank mlp run (stopped at step 3) into `root`; returns its settings.
train::SettingList write_checkpoint(const std::string& root) {
  Variant v{"powersgd", "powersgd", {}};
  train::SettingList settings;
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root).stop_after(3), train_set(), test_set(), c);
    t.run();
    if (c->rank() == 0) settings = t.resume_settings();
  });
  return settings;
}

std::string read_all(const std::string& path) { return testing::read_text(path); }
void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

// The error load_checkpoint gives for rank `rank` (world size W), or "" when it loads.
std::string load_error(const std::string& dir, const train::SettingList& settings, int rank = 0, int W = 2) {
  try {
    torch::serialize::InputArchive a;
    train::load_checkpoint(train::find_checkpoint(dir), rank, W, settings, a);
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

TEST(Checkpoint, ManifestIsWrittenLastAndPruningKeepsTheNewest) {
  TempDir root("ckpt");
  Variant v{"powersgd", "powersgd", {}};
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).checkpoint_every(2).keep_checkpoints(2), train_set(),
                     test_set(), c);
    t.run();
  });
  // Steps 2, 4, ..., 10 and the last (11): the newest two remain.
  const auto left = train::list_checkpoints(root.path());
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0].step, 10);
  EXPECT_EQ(left[1].step, 11);
  // An incomplete newer one (a crash before its manifest) is skipped.
  make_directories(train::checkpoint_dir(root.path(), 12));
  write_all(train::checkpoint_dir(root.path(), 12) + "/rank0.pt", "partial");
  EXPECT_EQ(train::find_checkpoint(root.path()).step, 11);
  const json m = json::parse(read_all(left[1].dir + "/manifest.json"));
  EXPECT_EQ(m.at("format"), train::kCheckpointFormat);
  EXPECT_EQ(m.at("version"), train::kCheckpointVersion);
  EXPECT_EQ(m.at("world_size"), 2);
  EXPECT_EQ(m.at("shards").size(), 2u);
  EXPECT_EQ(m.at("shards")[1].at("sha256"), sha256_hex(read_all(left[1].dir + "/rank1.pt")));
  // Nothing at all: a clear error.
  TempDir empty("ckpt");
  EXPECT_NE(load_error(empty.path(), {}).find("no complete checkpoint under " + empty.path()), std::string::npos);
}

// --resume may name a step directory: new checkpoints then go next to it (not inside it), and
// resuming from an older step moves the newer checkpoints of the abandoned timeline aside.
TEST(Checkpoint, ResumingFromAStepDirectoryContinuesTheRootAndRollsBack) {
  TempDir root("ckpt");
  Variant v{"powersgd", "powersgd", {}};
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).checkpoint_every(2).keep_checkpoints(10).stop_after(6),
                     train_set(), test_set(), c);
    t.run();
  });
  ASSERT_EQ(train::list_checkpoints(root.path()).size(), 3u);  // 2, 4, 6
  const std::string step2 = train::checkpoint_dir(root.path(), 2);
  EXPECT_EQ(train::checkpoint_root_of(step2), root.path());
  EXPECT_EQ(train::checkpoint_root_of(root.path()), root.path());
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).resume(step2).checkpoint_every(2).keep_checkpoints(10).stop_after(1), train_set(),
                     test_set(), c);
    EXPECT_EQ(t.resume_from(step2), 2);
    EXPECT_EQ(t.checkpoint_root(), root.path());
    const auto res = t.run();
    EXPECT_EQ(res.last_checkpoint, train::checkpoint_dir(root.path(), 3));
  });
  const auto left = train::list_checkpoints(root.path());
  ASSERT_EQ(left.size(), 2u);  // 2 and the new 3; 4 and 6 belonged to the abandoned timeline
  EXPECT_EQ(left[0].step, 2);
  EXPECT_EQ(left[1].step, 3);
  EXPECT_TRUE(testing::file_exists(root / "abandoned-step-00000004/manifest.json"));
  EXPECT_TRUE(testing::file_exists(root / "abandoned-step-00000006/manifest.json"));
  EXPECT_FALSE(testing::file_exists(step2 + "/step-00000003"));
  EXPECT_EQ(train::find_checkpoint(root.path()).step, 3);
}

// H2 of issue 15: the step directory resumed from is pruned a few checkpoints later; the root
// stays its parent (no ROOT/step-N/step-M nest), and --resume ROOT then finds the newest.
TEST(Checkpoint, APrunedStepDirectoryResumedFromKeepsItsRoot) {
  TempDir root("ckpt");
  Variant v{"powersgd", "powersgd", {}};
  auto opts = [&] { return options_for(v).checkpoint_every(2).keep_checkpoints(1); };
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(opts().checkpoint_dir(root.path()).stop_after(4), train_set(), test_set(), c);
    t.run();
  });
  const std::string step4 = train::checkpoint_dir(root.path(), 4);
  ASSERT_EQ(train::find_checkpoint(root.path()).dir, step4);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(opts().resume(step4), train_set(), test_set(), c);
    EXPECT_EQ(t.resume_from(step4), 4);
    const auto res = t.run();  // checkpoints 6 (pruning step-4), 8, 10, 11
    EXPECT_EQ(res.last_checkpoint, train::checkpoint_dir(root.path(), 11));
    EXPECT_EQ(t.checkpoint_root(), root.path());
  });
  EXPECT_FALSE(testing::file_exists(step4)) << "keep_checkpoints 1 should have pruned the directory resumed from";
  EXPECT_EQ(testing::list_dir(root.path()), std::vector<std::string>({"step-00000011"}));
  EXPECT_EQ(train::find_checkpoint(root.path()).step, 11);
}

// A damaged newest checkpoint names the older complete one to resume from instead.
TEST(Checkpoint, ADamagedNewestCheckpointOffersTheOlderOne) {
  TempDir root("ckpt");
  Variant v{"powersgd", "powersgd", {}};
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).checkpoint_every(2).stop_after(4), train_set(),
                     test_set(), c);
    t.run();
  });
  const std::string step4 = train::checkpoint_dir(root.path(), 4);
  std::string shard = read_all(step4 + "/rank1.pt");
  shard[shard.size() / 2] ^= 0x10;
  write_all(step4 + "/rank1.pt", shard);
  std::vector<std::string> errors(2);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).checkpoint_every(2).resume(root.path()), train_set(),
                     test_set(), c);
    errors[c->rank()] = testing::error_of([&] { t.resume_from(root.path()); });
  });
  EXPECT_NE(errors[1].find(step4 + "/rank1.pt is damaged"), std::string::npos) << errors[1];
  EXPECT_NE(errors[1].find("an older checkpoint is complete: resume from it with --resume " +
                           train::checkpoint_dir(root.path(), 2)),
            std::string::npos)
      << errors[1];
  EXPECT_NE(errors[0].find("rank 1"), std::string::npos) << errors[0];
}

// M4 of issue 15: the manifest records the intra-op threads and the BLAS; resuming with other
// threads (bit-exact only with the same) says so and how to get the same.
TEST(Checkpoint, ResumingWithOtherThreadsWarnsThatTheBitsWillDiffer) {
  TempDir root("ckpt");
  Variant v{"powersgd", "powersgd", {}};
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).stop_after(3), train_set(), test_set(), c);
    t.run();
  });
  const auto env = train::checkpoint_environment(train::find_checkpoint(root.path()));
  const std::map<std::string, std::string> recorded(env.begin(), env.end());
  EXPECT_EQ(recorded.size(), 2u);
  EXPECT_EQ(recorded.count("blas"), 1u);
  EXPECT_EQ(recorded.count("intra_op_threads") ? recorded.at("intra_op_threads") : "", "1");
  std::vector<std::string> same, other;
  at::set_num_threads(2);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).resume(root.path()), train_set(), test_set(), c);
    t.resume_from(root.path());
    if (c->rank() == 0) other = t.resume_notes();
  });
  at::set_num_threads(1);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).checkpoint_dir(root.path()).resume(root.path()), train_set(), test_set(), c);
    t.resume_from(root.path());
    if (c->rank() == 0) same = t.resume_notes();
  });
  at::set_num_threads(threads);
  EXPECT_TRUE(same.empty()) << same.front();
  ASSERT_EQ(other.size(), 1u);
  EXPECT_NE(other[0].find("written with intra_op_threads 1, this run has 2"), std::string::npos) << other[0];
  EXPECT_NE(other[0].find("pass --threads 1 for a bit-exact resume"), std::string::npos) << other[0];
}

// Removing a checkpoint (pruning, --overwrite) removes lowrank's own files only: a user's file
// inside a step directory survives, and so does the directory then.
TEST(Checkpoint, RemovingACheckpointKeepsAUsersFileInside) {
  for (const std::string name : {"manifest.json", "rank0.pt", "rank12.pt", "rank1.pt.tmp.4242", "manifest.json.tmp"})
    EXPECT_TRUE(train::is_checkpoint_file(name)) << name;
  for (const std::string name : {"notes.txt", "rank.pt", "rankx.pt", "rank0.pt.bak", "rank0.pt.tmp.x", "manifest.json~"})
    EXPECT_FALSE(train::is_checkpoint_file(name)) << name;
  for (const std::string name : {"step-00000004", "abandoned-step-00000004", "abandoned-step-00000004.2"})
    EXPECT_TRUE(train::is_checkpoint_entry(name)) << name;
  for (const std::string name : {"step-", "step-4x", "abandoned-4", "notes.txt", "abandoned-step-.1"})
    EXPECT_FALSE(train::is_checkpoint_entry(name)) << name;
  TempDir root("ckpt");
  const std::string mine = train::checkpoint_dir(root.path(), 1), theirs = train::checkpoint_dir(root.path(), 2);
  for (const auto& dir : {mine, theirs}) {
    make_directories(dir);
    for (const std::string f : {"manifest.json", "rank0.pt", "rank1.pt", "rank1.pt.tmp.99"}) write_all(dir + "/" + f, "x");
  }
  write_all(theirs + "/notes.txt", "mine\n");
  EXPECT_TRUE(train::remove_checkpoint_dir(mine));
  EXPECT_FALSE(testing::file_exists(mine));
  EXPECT_FALSE(train::remove_checkpoint_dir(theirs));
  EXPECT_EQ(testing::list_dir(theirs), std::vector<std::string>({"notes.txt"}));
  EXPECT_EQ(read_all(theirs + "/notes.txt"), "mine\n");
}

TEST(Checkpoint, MismatchedRunsAreRefusedNamingTheDifference) {
  TempDir root("ckpt");
  const auto settings = write_checkpoint(root.path());
  EXPECT_EQ(load_error(root.path(), settings), "");
  EXPECT_NE(load_error(root.path(), settings, 0, 3).find("was written by 2 ranks; this run has 3"), std::string::npos);
  auto other = settings;
  for (auto& kv : other)
    if (kv.first == "model") kv.second = "cnn";
  EXPECT_NE(load_error(root.path(), other).find("model: checkpoint mlp, this run cnn"), std::string::npos)
      << load_error(root.path(), other);
  // A checkpoint of an older lowrank (labels hash and pixel sum) says why its data cannot be verified.
  const std::string mpath = train::find_checkpoint(root.path()).dir + "/manifest.json";
  json m = json::parse(read_all(mpath));
  m["settings"]["train_data"] = "quadrants/train [256, 1, 8, 8] labels 0x0123456789abcdef pixel_sum 1234567";
  m.erase("manifest_sha256");
  m["manifest_sha256"] = sha256_hex(m.dump());
  write_all(mpath, m.dump(2));
  const std::string old_format = load_error(root.path(), settings);
  EXPECT_NE(old_format.find("train_data: checkpoint quadrants/train [256, 1, 8, 8] labels"), std::string::npos)
      << old_format;
  EXPECT_NE(old_format.find("the format of an older lowrank"), std::string::npos) << old_format;
  // Through the trainer: another batch size on resume names the setting on every rank.
  Variant v{"powersgd", "powersgd", {}};
  std::vector<std::string> errors(2);
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> c) {
    train::Trainer t(options_for(v).batch_size(8), train_set(), test_set(), c);
    errors[c->rank()] = testing::error_of([&] { t.resume_from(root.path()); });
  });
  for (const auto& e : errors) EXPECT_NE(e.find("batch_size: checkpoint 16, this run 8"), std::string::npos) << e;
}

// Damaged checkpoints, many times over: truncated or bit-flipped shards and manifests, missing
// and swapped shards, another format version. Every one is an error naming the file; none crashes
// and none loads.
TEST(Checkpoint, FuzzedCheckpointsAlwaysFailCleanly) {
  TempDir root("ckpt");
  const auto settings = write_checkpoint(root.path());
  const auto ref = train::find_checkpoint(root.path());
  const std::string manifest = ref.dir + "/manifest.json", shard0 = ref.dir + "/rank0.pt",
                    shard1 = ref.dir + "/rank1.pt";
  const std::string m0 = read_all(manifest), s0 = read_all(shard0), s1 = read_all(shard1);
  ASSERT_EQ(load_error(root.path(), settings), "");
  std::mt19937_64 rng(12345);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  int cases = 0;
  for (int trial = 0; trial < 300; ++trial) {
    write_all(manifest, m0);
    write_all(shard0, s0);
    write_all(shard1, s1);
    std::string expect_file;
    switch (trial % 7) {
      case 0: {  // truncate this rank's shard
        write_all(shard0, s0.substr(0, pick(s0.size())));
        expect_file = shard0;
        break;
      }
      case 1: {  // flip one bit of the shard
        std::string b = s0;
        b[pick(b.size())] ^= static_cast<char>(1 << pick(8));
        write_all(shard0, b);
        expect_file = shard0;
        break;
      }
      case 2: {  // flip one bit of the manifest
        std::string b = m0;
        b[pick(b.size())] ^= static_cast<char>(1 << pick(8));
        write_all(manifest, b);
        expect_file = manifest;
        break;
      }
      case 3: {  // truncate the manifest
        write_all(manifest, m0.substr(0, pick(m0.size() - 1)));  // at least its closing brace
        expect_file = manifest;
        break;
      }
      case 4: {  // the shard is missing
        std::remove(shard0.c_str());
        expect_file = shard0;
        break;
      }
      case 5: {  // shards swapped
        write_all(shard0, s1);
        write_all(shard1, s0);
        expect_file = shard0;
        break;
      }
      case 6: {  // another format version, with a consistent checksum
        json m = json::parse(m0);
        m["version"] = train::kCheckpointVersion + 1 + static_cast<int>(pick(5));
        m.erase("manifest_sha256");
        m["manifest_sha256"] = sha256_hex(m.dump());
        write_all(manifest, m.dump(2));
        expect_file = manifest;
        break;
      }
    }
    const std::string err = load_error(root.path(), settings);
    EXPECT_FALSE(err.empty()) << "trial " << trial << " loaded a damaged checkpoint";
    EXPECT_NE(err.find(expect_file), std::string::npos) << "trial " << trial << ": " << err;
    ++cases;
  }
  EXPECT_EQ(cases, 300);
  // Undamaged again, it loads.
  write_all(manifest, m0);
  write_all(shard0, s0);
  write_all(shard1, s1);
  EXPECT_EQ(load_error(root.path(), settings), "");
}

}  // namespace
}  // namespace lowrank
