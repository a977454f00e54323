#include "train_flags.h"

#include <optional>

#include "compressor_flags.h"
#include "language_model_flags.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/util/choices.h"
#include "number_flags.h"

namespace lowrank {
namespace cli {
namespace {

// A bucket of 1 TB.
constexpr double kMaxBucketCapMb = 1e6;

bool given(CLI::App* sub, const std::string& flag) {
  const CLI::Option* o = sub->get_option_no_throw(flag);
  return o != nullptr && o->count() > 0;
}

// --data-dir, --tokenizer, --cache-dir: where a training run finds and keeps its data.
void add_data_flags(CLI::App* sub, train::TrainOptions& o) {
  sub->add_option("--data-dir", o.data_dir(), "Directory of the dataset files")
      ->default_str(data::default_data_dir(o.dataset()));
  sub->add_option("--tokenizer", o.tokenizer(),
                  "Text: " + join_names(data::tokenizer_names()) + " (byte: the UTF-8 bytes, no training)")
      ->capture_default_str();
  sub->add_option("--cache-dir", o.cache_dir(), "Text: where prepared text, tokenizers and token ids are cached")
      ->default_str("$LOWRANK_CACHE_DIR, else ~/.cache/lowrank");
}

// --[no-]error-feedback, --ef-beta, --bucket-cap-mb, --no-overlap: how a training run reduces.
void add_reducer_run_flags(CLI::App* sub, ReducerOptions& r) {
  auto* ef_on = sub->add_flag("--error-feedback",
                              "Turn error feedback on where the compressor's default is off (fp16, bf16, qsgd, "
                              "randomk scaled=true, galore; docs/algorithms.md §1.4)");
  sub->add_flag("--no-error-feedback", "Turn error feedback off (default: the compressor's choice)")->excludes(ef_on);
  add_real(sub, "--ef-beta", r.ef_beta(),
           "EMA error feedback e <- e + (1-beta)(residual - e) as in the GreedyLore reference code, 0 <= beta < 1; 0 "
           "is plain EF14 (docs/algorithms.md §1.4)",
           RealRange{0, 1, false, true})
      ->capture_default_str();
  add_real(sub, "--bucket-cap-mb", r.bucket_cap_mb(),
           "Gradient bucket size in MiB, filled in reverse parameter order as PyTorch DDP (0 = one bucket)",
           non_negative(kMaxBucketCapMb))
      ->capture_default_str();
  sub->add_flag("--no-overlap",
                "Reduce all buckets after backward() instead of starting each as soon as its "
                "gradients are ready");
}

}  // namespace

void add_model_flags(CLI::App* sub, train::TrainOptions& o, FlagSet set) {
  sub->add_option("--model", o.model(),
                  "Model: " + join_names(models::model_names()) +
                      " (llama: a LLaMA-style language model on real English text; it changes the "
                      "defaults marked 'llama:')")
      ->capture_default_str();
  add_model_size_flags(sub, o);
  add_integer(sub, "--seq-len", o.seq_len(), "llama: tokens per training window (0 = the preset's)",
              {0, train::kMaxSeqLen})
      ->capture_default_str();
  sub->add_option("--dataset", o.dataset(),
                  "Dataset: " + join_names(data::dataset_names()) +
                      (set == FlagSet::kTrain ? " (kjv: the King James Bible from Debian's bible-kjv; text: "
                                                "DIR/train.txt and DIR/val.txt of --data-dir)"
                                              : " (its input shape and classes; nothing is loaded)"))
      ->default_str("fashion-mnist; llama: kjv");
  if (set == FlagSet::kTrain) add_data_flags(sub, o);
  add_integer(sub, "--vocab-size", o.vocab_size(), "Text: SentencePiece vocabulary, trained once on the training split",
              {train::kMinVocabSize, train::kMaxVocabSize})
      ->capture_default_str();
  sub->add_flag("--compress-embeddings",
                "llama: compress the embedding and output layers too (default: dense, as the "
                "papers; ignored when --uncompressed-names is given)");
}

void add_compressor_flags(CLI::App* sub, train::TrainOptions& o, std::vector<std::string>& opts, FlagSet set) {
  ReducerOptions& r = o.reducer();
  sub->add_option("--compressor", o.compressor(),
                  "Gradient compressor: " + join_names(compressor_names()) +
                      " (see `lowrank compressors`), or auto: at start, time this job's link and take none or "
                      "powersgd at --rank (>= 4), whichever the bandwidth model predicts faster (docs/reports.md)")
      ->capture_default_str();
  const CLI::Validator number = integer_in({1, train::kMaxRank});
  sub->add_option_function<std::string>(
         "--rank",
         [&o](const std::string& v) {
           o.auto_rank(v == "auto");
           if (v != "auto") o.default_rank(std::stoll(v));
         },
         "Compression rank r >= 1, or auto (chosen per matrix from the gradient's spectrum: --opt rank_energy=, "
         "rank_budget=, rank_min=, rank_max=, rank_period=; docs/compressors.md), for compressors that take one (a "
         "number is ignored by the others, e.g. none; auto is refused there); a rank so high that no matrix passes "
         "the size rule gets a warning at start")
      ->transform(CLI::Validator(
          [number](std::string& t) -> std::string { return t == "auto" ? std::string() : number(t); }, "",
          kNumberValidator))
      ->type_name("INT|auto")
      ->default_str(std::to_string(o.default_rank()));
  sub->add_option("--opt", opts,
                  "Compressor option KEY=VALUE, repeatable (e.g. --opt powersgd_mode=alternating "
                  "--opt restart_period=10); unknown keys are an error naming the accepted ones")
      ->type_name("KEY=VALUE");
  sub->add_flag("--no-warm-start", "Redraw the compressor's basis every step (key warm_start=false)");
  add_integer(sub, "--start-iter", r.start_iter(),
              "Dense warm-up steps before compression starts (a warning at start when >= the run's steps)",
              {0, train::kMaxSteps})
      ->capture_default_str();
  add_real(sub, "--min-compression-rate", r.min_compression_rate(),
           "Compress an m x n matrix only if m*n > this times the floats it would send", non_negative())
      ->capture_default_str();
  sub->add_option("--uncompressed-names", r.uncompressed_names(),
                  "Parameters whose name contains (or matches as regex) one of these stay dense; comma-separated; a "
                  "pattern that matches no parameter is an error")
      ->delimiter(',')
      ->default_str("none");
  if (set == FlagSet::kTrain) add_reducer_run_flags(sub, r);
}

void apply_flags(CLI::App* sub, train::TrainOptions& o, const std::vector<std::string>& opts) {
  o.apply_model_defaults([sub](const std::string& key) {
    std::string flag = "--" + key;
    for (char& c : flag)
      if (c == '_') c = '-';
    return given(sub, flag);
  });
  o.dense_embeddings(!given(sub, "--compress-embeddings"));
  o.compressor_config(
      compressor_config_from_flags(opts, o.auto_rank() ? "auto" : std::to_string(o.default_rank()), given(sub, "--rank"), given(sub, "--no-warm-start")));
  ReducerOptions& r = o.reducer();
  if (given(sub, "--error-feedback")) r.error_feedback(true);
  if (given(sub, "--no-error-feedback")) r.error_feedback(false);
  if (given(sub, "--no-overlap")) r.overlap(false);
  if (given(sub, "--no-skip-nonfinite")) r.skip_nonfinite(false);
}

}  // namespace cli
}  // namespace lowrank
