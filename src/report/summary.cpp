#include "lowrank/report/summary.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <optional>

#include "lowrank/data/dataset_factory.h"
#include "lowrank/util/files.h"

namespace lowrank {
namespace report {
namespace {

using nlohmann::json;

// Puts every field of an options struct (its fields() list) into a JSON object, typed.
struct JsonFields {
  json* out;
  template <typename T>
  void operator()(const char* key, const T& field, bool /*shown*/ = true) const {
    (*out)[key] = field;
  }
  void operator()(const char* key, const std::optional<bool>& field, bool /*shown*/ = true) const {
    (*out)[key] = !field ? "default" : (*field ? "on" : "off");
  }
  template <typename E>
  void operator()(const char* key, const E& field, const Choices<E>& choices, bool /*shown*/ = true) const {
    (*out)[key] = choice_name(field, choices);
  }
};

json config_json(const train::TrainOptions& o, const RunInfo& info) {
  json compressor_options = json::object();
  const Config resolved = o.resolved_compressor_config();
  for (const auto& kv : resolved.values()) compressor_options[kv.first] = kv.second;
  const ReducerOptions r = o.resolved_reducer();
  // Every option as given (TrainOptions::fields, ReducerOptions::fields), then what was resolved
  // from it and how the job ran.
  json c = json::object();
  train::TrainOptions::fields(o, JsonFields{&c});
  ReducerOptions::fields(r, JsonFields{&c});
  c["data_dir"] = o.data_dir().empty() ? data::default_data_dir(o.dataset()) : o.data_dir();
  c["lr"] = o.resolved_lr();
  c["compressor_options"] = compressor_options;
  c["world_size"] = info.world_size;
  c["threads"] = info.threads;
  c["blas"] = info.blas;
  c["blas_threads"] = info.blas_threads;
  c["launch"] = info.launch;
  c["master_addr"] = info.master_addr;
  c["master_port"] = info.master_port;
  c["hostname"] = info.hostname;
  c["timeout"] = info.timeout_seconds;
  if (o.language_model()) {
    const data::TextOptions t = o.text_options();
    c["seq_len"] = t.seq_len;
    c["tokenizer"] = t.tokenizer;
    c["vocab_size_requested"] = t.vocab_size;
    c["cache_dir"] = t.cache_dir.empty() ? data::default_text_cache_dir() : t.cache_dir;
  }
  return c;
}

}  // namespace


namespace {
// Means per applied step of this process's traffic, by kind (docs/outputs.md, "per_step"): what the
// bandwidth model (report/bandwidth_model.h) predicts a step's time on another link from.
json per_step_json(const train::TrainResult& res) {
  const ReducerStats& r = res.reducer;
  const double n = r.traffic_steps > 0 ? static_cast<double>(r.traffic_steps) : 1.0;
  const double dense = r.steps > 0 ? static_cast<double>(r.dense_bytes) / static_cast<double>(r.steps) : 0.0;
  return {{"steps", r.traffic_steps},
          {"bytes_sent", double(r.traffic_bytes) / n},
          {"all_reduce_bytes", double(r.traffic_bytes - r.all_gather_bytes) / n},
          {"all_gather_bytes", double(r.all_gather_bytes) / n},
          {"all_reduces", double(r.collectives - r.all_gathers) / n},
          {"all_gathers", double(r.all_gathers) / n},
          {"dense_bytes", dense},
          {"buckets", res.buckets_per_step}};
}
}  // namespace

std::string summary_json(const train::TrainOptions& o, const RunInfo& info, const train::TrainResult& res) {
  const Config resolved = o.resolved_compressor_config();
  json rank = nullptr;
  if (resolved.has("rank")) {
    const std::string r = resolved.values().at("rank");
    rank = r == "auto" ? json(r) : json(std::strtoll(r.c_str(), nullptr, 10));
  }
  json checksums = json::array();
  for (uint64_t c : res.rank_checksums) checksums.push_back(train::checksum_hex(c));
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
      {"floats_sent_per_worker", double(res.reducer.bytes_sent) / 4},
      {"dense_floats_per_worker", double(res.reducer.dense_bytes) / 4},
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
      {"weights_checksum", train::checksum_hex(res.weights_checksum)},
      {"weights_checksums", checksums},
      {"weights_sha256", res.weights_sha256},
      {"skipped_steps", res.skipped_steps},
      {"resumed_from_step", res.resumed_from_step >= 0 ? json(res.resumed_from_step) : json(nullptr)},
      {"reducer", res.reducer_description},
      {"per_step", per_step_json(res)},
      // Effective overlap: how many of the applied steps' buckets started during backward().
      {"overlap_effective",
       {{"on", res.overlap},
        {"buckets_from_backward", res.reducer.buckets_from_backward},
        {"buckets", res.reducer.steps * res.buckets_per_step}}},
      {"config", config_json(o, info)},
  };
  // Every compressed matrix's final rank; with rank=auto also its history of (compressed step, rank).
  json ranks = json::array();
  for (const auto& r : res.ranks) {
    if (r.rank <= 0) continue;
    json entry = {{"name", r.name}, {"matrix", {r.m, r.n}}, {"rank", r.rank}};
    if (!r.history.empty()) {
      json h = json::array();
      for (const auto& c : r.history) h.push_back({c.first, c.second});
      entry["history"] = h;
    }
    ranks.push_back(entry);
  }
  if (!ranks.empty()) j["ranks"] = ranks;
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

std::string rank_record_json(const RunInfo& info, const train::TrainResult& res) {
  json j = {
      {"rank", info.rank},
      {"world_size", info.world_size},
      {"steps", res.steps},
      {"final_train_loss", res.final_train_loss},
      {"test_accuracy", res.test_accuracy},
      {"weights_checksum", train::checksum_hex(res.weights_checksum)},
      {"weights_sha256", res.weights_sha256},
  };
  return j.dump(2) + "\n";
}

void write_summary(const std::string& dir, const train::TrainOptions& options, const RunInfo& info,
                   const train::TrainResult& result) {
  make_directories(dir);
  write_file_atomically(dir + "/summary.json", summary_json(options, info, result));
}

void write_rank_record(const std::string& dir, const RunInfo& info, const train::TrainResult& result) {
  make_directories(dir);
  write_file_atomically(dir + "/rank" + std::to_string(info.rank) + ".json", rank_record_json(info, result));
}

}  // namespace report
}  // namespace lowrank
