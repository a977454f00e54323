#include "lowrank/train/summary.h"

#include <nlohmann/json.hpp>

#include <cstdlib>

#include "lowrank/data/dataset_factory.h"
#include "lowrank/train/metrics_writer.h"

namespace lowrank {
namespace train {
namespace {

using nlohmann::json;

json config_json(const TrainOptions& o, const RunInfo& info) {
  json compressor_options = json::object();
  const Config resolved = o.resolved_compressor_config();
  for (const auto& kv : resolved.values()) compressor_options[kv.first] = kv.second;
  const ReducerOptions r = o.resolved_reducer();
  json c = {
      {"model", o.model()},
      {"dataset", o.dataset()},
      {"data_dir", o.data_dir().empty() ? data::default_data_dir(o.dataset()) : o.data_dir()},
      {"compressor", o.compressor()},
      {"compressor_options", compressor_options},
      {"optimizer", o.optimizer()},
      {"lr", o.resolved_lr()},
      {"lr_schedule", o.lr_schedule()},
      {"momentum", o.momentum()},
      {"weight_decay", o.weight_decay()},
      {"batch_size", o.batch_size()},
      {"epochs", o.epochs()},
      {"steps", o.steps()},
      {"seed", o.seed()},
      {"log_every", o.log_every()},
      {"metrics_every", o.metrics_every()},
      {"eval_examples", o.eval_examples()},
      {"eval_every", o.eval_every()},
      {"warmup_steps", o.warmup_steps()},
      {"clip_grad_norm", o.clip_grad_norm()},
      {"out", o.out_dir()},
      {"start_iter", r.start_iter()},
      {"min_compression_rate", r.min_compression_rate()},
      {"error_feedback", r.error_feedback() < 0 ? "default" : (r.error_feedback() ? "on" : "off")},
      {"ef_residual", r.ef_residual()},
      {"ef_beta", r.ef_beta()},
      {"uncompressed_names", r.uncompressed_names()},
      {"bucket_cap_mb", r.bucket_cap_mb()},
      {"overlap", r.overlap()},
      {"skip_nonfinite", r.skip_nonfinite()},
      {"max_skipped_steps", o.max_skipped_steps()},
      {"checkpoint_dir", o.checkpoint_dir()},
      {"checkpoint_every", o.checkpoint_every()},
      {"resume", o.resume()},
      {"batch_same_shape", r.batch_same_shape()},
      {"world_size", info.world_size},
      {"threads", info.threads},
      {"blas", info.blas},
      {"blas_threads", info.blas_threads},
      {"launch", info.launch},
      {"master_addr", info.master_addr},
      {"master_port", info.master_port},
      {"hostname", info.hostname},
      {"timeout", info.timeout_seconds},
  };
  if (o.language_model()) {
    const data::TextOptions t = o.text_options();
    c["model_preset"] = o.model_preset();
    c["layers"] = o.layers();
    c["width"] = o.width();
    c["heads"] = o.heads();
    c["seq_len"] = t.seq_len;
    c["tokenizer"] = t.tokenizer;
    c["vocab_size_requested"] = t.vocab_size;
    c["dense_embeddings"] = o.dense_embeddings();
    c["cache_dir"] = t.cache_dir.empty() ? data::default_text_cache_dir() : t.cache_dir;
  }
  return c;
}

}  // namespace

std::string summary_json(const TrainOptions& o, const RunInfo& info, const TrainResult& res) {
  const Config resolved = o.resolved_compressor_config();
  json rank = nullptr;
  if (resolved.has("rank")) rank = std::strtoll(resolved.values().at("rank").c_str(), nullptr, 10);
  json checksums = json::array();
  for (uint64_t c : res.rank_checksums) checksums.push_back(checksum_hex(c));
  json j = {
      {"task", res.language_model ? "language_model" : "classification"},
      {"compressor", o.compressor()},
      {"rank", rank},
      {"world_size", info.world_size},
      {"model", o.model()},
      {"dataset", o.dataset()},
      {"steps", res.steps},
      {"steps_per_epoch", res.steps_per_epoch},
      {"epochs", res.epochs},
      {"final_train_loss", res.final_train_loss},
      {"test_accuracy", res.test_accuracy},
      {"test_loss", res.test_loss},
      {"epoch_test_accuracy", res.epoch_test_accuracy},
      {"parameters", res.parameters},
      {"floats_sent_per_worker", res.reducer.floats_sent},
      {"dense_floats_per_worker", res.reducer.dense_floats},
      {"compression_ratio", res.reducer.compression_ratio()},
      {"whole_run_compression_ratio", res.reducer.whole_run_compression_ratio()},
      {"bytes_sent_per_worker", res.reducer.bytes_sent},
      {"dense_bytes_per_worker", res.reducer.dense_bytes},
      {"wall_seconds", res.wall_seconds},
      {"step_ms_median", res.step_ms_median},
      {"forward_backward_ms", res.forward_backward_ms},
      {"compress_ms", res.compress_ms},
      {"communicate_ms", res.communicate_ms},
      {"collective_ms", res.collective_ms},
      {"optimizer_ms", res.optimizer_ms},
      {"weights_agree", res.weights_agree},
      {"weights_checksum", checksum_hex(res.weights_checksum)},
      {"weights_checksums", checksums},
      {"weights_sha256", res.weights_sha256},
      {"skipped_steps", res.skipped_steps},
      {"resumed_from_step", res.resumed_from_step >= 0 ? json(res.resumed_from_step) : json(nullptr)},
      {"reducer", res.reducer_description},
      // Effective overlap: how many of the applied steps' buckets started during backward().
      {"overlap_effective",
       {{"on", res.overlap},
        {"buckets_from_backward", res.reducer.buckets_from_backward},
        {"buckets", res.reducer.steps * res.buckets_per_step}}},
      {"config", config_json(o, info)},
  };
  if (res.language_model) {
    // The held-out numbers under the names language-model papers use (test_* hold the same).
    j["val_loss"] = res.test_loss;
    j["val_perplexity"] = res.val_perplexity;
    j["val_token_accuracy"] = res.test_accuracy;
    j["vocab_size"] = res.vocab_size;
    j["tokenizer"] = res.tokenizer;
  }
  return j.dump(2) + "\n";
}

std::string rank_record_json(const RunInfo& info, const TrainResult& res) {
  json j = {
      {"rank", info.rank},
      {"world_size", info.world_size},
      {"steps", res.steps},
      {"final_train_loss", res.final_train_loss},
      {"test_accuracy", res.test_accuracy},
      {"weights_checksum", checksum_hex(res.weights_checksum)},
      {"weights_sha256", res.weights_sha256},
  };
  return j.dump(2) + "\n";
}

void write_summary(const std::string& dir, const TrainOptions& options, const RunInfo& info,
                   const TrainResult& result) {
  make_directories(dir);
  write_file_atomically(dir + "/summary.json", summary_json(options, info, result));
}

void write_rank_record(const std::string& dir, const RunInfo& info, const TrainResult& result) {
  make_directories(dir);
  write_file_atomically(dir + "/rank" + std::to_string(info.rank) + ".json", rank_record_json(info, result));
}

}  // namespace train
}  // namespace lowrank
