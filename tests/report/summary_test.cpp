#include "lowrank/report/summary.h"

#include "lowrank/report/metrics_writer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/train_test_support.h"

namespace lowrank {
namespace {

train::TrainResult sample_result() {
  train::TrainResult r;
  r.steps = 30;
  r.steps_per_epoch = 469;
  r.epochs = 1;
  r.final_train_loss = 0.75;
  r.test_accuracy = 0.625;
  r.test_loss = 0.9;
  r.epoch_test_accuracy = {0.625};
  r.reducer.steps = r.reducer.compressed_steps = 30;
  r.reducer.floats_sent = r.reducer.compressed_floats_sent = 300;
  r.reducer.dense_floats = r.reducer.compressed_dense_floats = 6000;
  r.reducer.bytes_sent = r.reducer.compressed_bytes_sent = 1200;
  r.reducer.dense_bytes = r.reducer.compressed_dense_bytes = 24000;
  r.step_ms_median = 41.5;
  r.forward_backward_ms = 30.25;
  r.compress_ms = 6.5;
  r.communicate_ms = 2.75;
  r.collective_ms = 1.5;
  r.optimizer_ms = 3.25;
  r.wall_seconds = 12.5;
  r.weights_checksum = 0xabcdef;
  r.rank_checksums = {0xabcdef, 0xabcdef};
  // 20 of the 30 steps made by this process (a resumed run): traffic by kind
  r.reducer.traffic_steps = 20;
  r.reducer.traffic_bytes = 800;
  r.reducer.collectives = 60;
  r.reducer.all_gathers = 20;
  r.reducer.all_gather_bytes = 200;
  r.buckets_per_step = 2;
  return r;
}

TEST(Summary, HasEveryRequiredFieldWithItsValue) {
  train::TrainOptions o;
  o.epochs(2).seed(9);
  report::RunInfo info;
  info.world_size = 2;
  info.threads = 1;
  info.launch = "launcher";
  info.blas = "OpenBLAS 0.3.21 (openmp)";
  info.blas_threads = 1;
  const auto j = nlohmann::json::parse(report::summary_json(o, info, sample_result()));
  EXPECT_EQ(j.at("compressor"), "powersgd");
  EXPECT_EQ(j.at("rank"), 4);
  EXPECT_EQ(j.at("world_size"), 2);
  EXPECT_EQ(j.at("model"), "cnn");
  EXPECT_EQ(j.at("dataset"), "fashion-mnist");
  EXPECT_EQ(j.at("steps"), 30);
  EXPECT_EQ(j.at("epochs"), 1);
  EXPECT_EQ(j.at("final_train_loss"), 0.75);
  EXPECT_EQ(j.at("test_accuracy"), 0.625);
  EXPECT_EQ(j.at("floats_sent_per_worker"), 300);
  EXPECT_EQ(j.at("dense_floats_per_worker"), 6000);
  EXPECT_EQ(j.at("compression_ratio"), 20.0);
  EXPECT_EQ(j.at("bytes_sent_per_worker"), 1200);
  EXPECT_EQ(j.at("dense_bytes_per_worker"), 24000);
  EXPECT_EQ(j.at("step_ms_median"), 41.5);
  EXPECT_EQ(j.at("forward_backward_ms"), 30.25);
  EXPECT_EQ(j.at("compress_ms"), 6.5);
  EXPECT_EQ(j.at("communicate_ms"), 2.75);
  EXPECT_EQ(j.at("collective_ms"), 1.5);
  EXPECT_EQ(j.at("optimizer_ms"), 3.25);
  EXPECT_EQ(j.at("weights_agree"), true);
  EXPECT_EQ(j.at("wall_seconds"), 12.5);
  EXPECT_EQ(j.at("weights_checksum"), "0x0000000000abcdef");
  EXPECT_EQ(j.at("weights_checksums").size(), 2u);
  const auto& ps = j.at("per_step");  // means over the 20 steps of this process
  EXPECT_EQ(ps.at("steps"), 20);
  EXPECT_EQ(ps.at("bytes_sent"), 40.0);
  EXPECT_EQ(ps.at("all_reduce_bytes"), 30.0);
  EXPECT_EQ(ps.at("all_gather_bytes"), 10.0);
  EXPECT_EQ(ps.at("all_reduces"), 2.0);
  EXPECT_EQ(ps.at("all_gathers"), 1.0);
  EXPECT_EQ(ps.at("dense_bytes"), 800.0);  // 24000 over all 30 steps
  EXPECT_EQ(ps.at("buckets"), 2);
  const auto& c = j.at("config");
  EXPECT_EQ(c.at("epochs"), 2);
  EXPECT_EQ(c.at("seed"), 9);
  EXPECT_EQ(c.at("lr"), 0.05);
  EXPECT_EQ(c.at("compressor_options").at("rank"), "4");
  EXPECT_EQ(c.at("data_dir"), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(c.at("launch"), "launcher");
  EXPECT_EQ(c.at("blas"), "OpenBLAS 0.3.21 (openmp)");
  EXPECT_EQ(c.at("blas_threads"), 1);
  EXPECT_EQ(c.at("overlap"), true);
  EXPECT_EQ(c.at("bucket_cap_mb"), 25.0);
}

TEST(Summary, RankIsNullForCompressorsWithoutOne) {
  train::TrainOptions o;
  o.compressor("none");
  const auto j = nlohmann::json::parse(report::summary_json(o, {}, sample_result()));
  EXPECT_TRUE(j.at("rank").is_null());
}

TEST(Summary, FilesAreWrittenWhole) {
  testing::TempDir dir("summary");
  report::RunInfo info;
  info.rank = 1;
  info.world_size = 2;
  report::write_summary(dir / "sub/out", train::TrainOptions(), info, sample_result());
  report::write_rank_record(dir / "sub/out", info, sample_result());
  EXPECT_EQ(nlohmann::json::parse(testing::read_text(dir / "sub/out/summary.json")).at("steps"), 30);
  const auto rec = nlohmann::json::parse(testing::read_text(dir / "sub/out/rank1.json"));
  EXPECT_EQ(rec.at("rank"), 1);
  EXPECT_EQ(rec.at("weights_checksum"), "0x0000000000abcdef");
  // No temporary file is left behind.
  EXPECT_EQ(testing::run_command("ls " + dir.path() + "/sub/out | wc -l").output, "2\n");
}

// The "floats" columns are bytes / 4 written exactly: 16-bit and bit-packed payloads leave remainders
// that an integer division would drop (a 7-element fp16 tensor is 14 bytes = 3.5 floats).
TEST(Summary, FloatsAreBytesOverFourWrittenExactly) {
  EXPECT_EQ(report::floats_text(0), "0");
  EXPECT_EQ(report::floats_text(4), "1");
  EXPECT_EQ(report::floats_text(14), "3.5");
  EXPECT_EQ(report::floats_text(5), "1.25");
  EXPECT_EQ(report::floats_text(4000000007LL), "1000000001.75");
}

}  // namespace
}  // namespace lowrank
