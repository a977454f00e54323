#pragma once
// TrainOptions: everything that determines what `lowrank train` computes (model, data,
// compressor, reducer, optimizer, schedule, outputs). How the job is launched and run (process
// count, rendezvous, threads, timeout) is in train_job.h.
//
// Example:
//   TrainOptions o;
//   o.model("mlp").compressor("powersgd").epochs(2).lr(0.1);
//   o.compressor_config().set("powersgd_mode", "alternating");
//   o.validate();
#include <torch/arg.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/compressor.h"
#include "lowrank/util/config.h"
#include "lowrank/data/text_corpus.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {
namespace train {

/// Upper limits of TrainOptions' counts, checked by validate() and by `lowrank train` as it parses
/// its flags. Far beyond any run lowrank is meant for, and low enough that the products of them
/// the trainer forms (epochs x steps per epoch, steps x batch x workers, layers x width²) stay far
/// inside int64.
constexpr int64_t kMaxSteps = 1000000000;        ///< steps and every other count of steps
constexpr int64_t kMaxEpochs = 1000000;
constexpr int64_t kMaxBatchSize = 1000000;
constexpr int64_t kMaxExamples = 1000000000;     ///< eval_examples
constexpr int64_t kMaxKeepCheckpoints = 1000000;
constexpr int64_t kMaxRank = 1000000;
/// --compressor auto: chosen when a job starts (launch/compressor_choice.h).
constexpr const char* kAutoCompressor = "auto";            ///< default_rank (--rank)
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxWidth = 65536;             ///< width and heads
constexpr int64_t kMaxSeqLen = 1048576;
constexpr int64_t kMinVocabSize = 260;           ///< SentencePiece: 256 byte pieces and 4 specials
constexpr int64_t kMaxVocabSize = 65536;

struct TrainOptions {
  /// Model name, one of models::model_names(). Default "cnn".
  TORCH_ARG(std::string, model) = "cnn";
  /// Language models (--model llama): the size preset, one of models::llama_preset_names(). Default "tiny".
  TORCH_ARG(std::string, model_preset) = "tiny";
  /// Language models: transformer blocks, width and attention heads; 0 = the preset's. Default 0.
  TORCH_ARG(int64_t, layers) = 0;
  TORCH_ARG(int64_t, width) = 0;
  TORCH_ARG(int64_t, heads) = 0;
  /// Language models: tokens per training window; 0 = the preset's. Default 0.
  TORCH_ARG(int64_t, seq_len) = 0;
  /// Dataset name, one of data::dataset_names(); a language model needs a text dataset (kjv,
  /// text), the other models an image dataset. Default "fashion-mnist".
  TORCH_ARG(std::string, dataset) = "fashion-mnist";
  /// Text datasets: tokenizer, one of data::tokenizer_names(). Default "sentencepiece".
  TORCH_ARG(std::string, tokenizer) = "sentencepiece";
  /// Text datasets: SentencePiece vocabulary size (the byte tokenizer has 256). Default 2048.
  TORCH_ARG(int64_t, vocab_size) = 2048;
  /// Text datasets: where prepared text, tokenizers and token ids are cached; "" =
  /// data::default_text_cache_dir(). Default "".
  TORCH_ARG(std::string, cache_dir) = "";
  /// Directory of the dataset files; "" = the dataset's default (Debian's install path). Default "".
  TORCH_ARG(std::string, data_dir) = "";
  /// Compressor name, one of compressor_names(). Default "powersgd".
  TORCH_ARG(std::string, compressor) = "powersgd";
  /// Options handed to the compressor factory; only keys the user gave (a compressor rejects keys
  /// it does not read). Default empty.
  TORCH_ARG(Config, compressor_config) = {};
  /// Becomes key "rank" for compressors that read a "rank" key when compressor_config has none;
  /// ignored by the others (`--rank` of the CLI). Default 4.
  TORCH_ARG(int64_t, default_rank) = 4;
  /// `--rank auto`: key "rank" = auto (compressors/auto_rank.h) when compressor_config has none; a
  /// compressor that reads no "rank" refuses it. Replaces default_rank. Default false.
  TORCH_ARG(bool, auto_rank) = false;
  /// Reducer options; their seed is replaced by seed(). Default ReducerOptions().
  TORCH_ARG(ReducerOptions, reducer) = {};
  /// Optimizer name, one of optimizer_names() (train/optimizer_factory.h). Default "sgd".
  TORCH_ARG(std::string, optimizer) = "sgd";
  /// Learning rate; 0 = the optimizer's default_lr(). Default 0.
  TORCH_ARG(double, lr) = 0;
  /// Learning-rate schedule over the run, one of lr_schedule_names() (train/lr_schedule.h). Default "cosine".
  TORCH_ARG(std::string, lr_schedule) = "cosine";
  /// Linear warm-up steps before the schedule (train/lr_schedule.h); -1 = automatic: a tenth of
  /// the run for a language model, none otherwise (resolved_warmup_steps()). Default -1.
  TORCH_ARG(int64_t, warmup_steps) = -1;
  /// Clip the averaged gradient ĝ to this global L2 norm before the optimizer step (ĝ is the same
  /// on every rank, so is the clipping); 0 = no clipping. Default 0.
  TORCH_ARG(double, clip_grad_norm) = 0;
  /// Language models: keep the embedding and output layers dense (uncompressed), as the papers
  /// do, unless uncompressed_names is set; false compresses them too. Default true.
  TORCH_ARG(bool, dense_embeddings) = true;
  /// SGD momentum; beta1 for adam and adamw. Default 0.9.
  TORCH_ARG(double, momentum) = 0.9;
  /// Weight decay (L2 for sgd and adam, decoupled for adamw), applied after the reducer. Default 0.
  TORCH_ARG(double, weight_decay) = 0;
  /// Examples per worker per step. Default 64.
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Passes over the training set. Default 1.
  TORCH_ARG(int64_t, epochs) = 1;
  /// Stop after this many steps in total (possibly mid-epoch); 0 = no limit. Default 0.
  TORCH_ARG(int64_t, steps) = 0;
  /// Seeds the weights, the per-epoch shuffle and the compressors' shared random streams. Default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Seconds between progress lines on rank 0. Default 5.
  TORCH_ARG(double, log_every) = 5.0;
  /// Steps between rows of metrics.csv (the last step of each epoch always gets one). Default 10.
  TORCH_ARG(int64_t, metrics_every) = 10;
  /// Test examples evaluated after each epoch: the first eval_examples of the test set; 0 = all.
  /// Default 0.
  TORCH_ARG(int64_t, eval_examples) = 0;
  /// Also evaluate every this many steps (validation loss and perplexity of a language model,
  /// test accuracy of a classifier); 0 = only at epoch ends and at the end. Default 0.
  TORCH_ARG(int64_t, eval_every) = 0;
  /// Output directory for metrics.csv, summary.json and rank<r>.json; "" = none. Default "".
  TORCH_ARG(std::string, out_dir) = "";
  /// Where checkpoints go (checkpoint.h); "" = none, or the resume directory when resuming. Default "".
  TORCH_ARG(std::string, checkpoint_dir) = "";
  /// Write a checkpoint every this many steps; 0 = never. Default 0.
  TORCH_ARG(int64_t, checkpoint_every) = 0;
  /// Complete checkpoints kept (older ones are removed). Default 2.
  TORCH_ARG(int64_t, keep_checkpoints) = 2;
  /// Resume from the newest complete checkpoint under this directory (or this step-* directory);
  /// "" = start fresh. Default "".
  TORCH_ARG(std::string, resume) = "";
  /// Stop after this many steps of this invocation (writing a checkpoint when checkpoint_dir is
  /// set), as a preempted job would; the schedule still spans total_steps(). 0 = run to the end. Default 0.
  TORCH_ARG(int64_t, stop_after) = 0;
  /// Steps skipped for a non-finite loss or gradient (on any rank) before the run aborts;
  /// -1 = no limit. Default 10.
  TORCH_ARG(int64_t, max_skipped_steps) = 10;

 public:
  /// Checks every field, including that the compressor exists and accepts its options; the
  /// message names the field, the bad value and the valid choices.
  void validate() const;
  /// The model's own training defaults where they differ from the struct's: a language model
  /// trains as the papers do, on kjv with adamw, clip_grad_norm 1, batch_size 16 and eval_every
  /// 100. Sets each of these fields whose key `given(key)` says the user did not set; other models
  /// change nothing.
  TrainOptions& apply_model_defaults(const std::function<bool(const std::string& key)>& given);
  /// lr(), or the optimizer's default when lr() is 0.
  double resolved_lr() const;
  /// compressor_config() plus "rank" = default_rank() when the compressor reads "rank" and the
  /// user gave none.
  Config resolved_compressor_config() const;
  /// The compressor built from resolved_compressor_config().
  std::unique_ptr<Compressor> make_compressor() const;
  /// The reducer options with seed() applied, stats_every = metrics_every() unless set, and for a
  /// language model with dense_embeddings() and no uncompressed_names: {"tok_embeddings", "output"}.
  ReducerOptions resolved_reducer() const;
  /// warmup_steps(), or for -1 a tenth of `total_steps` (language models) or 0.
  int64_t resolved_warmup_steps(int64_t total_steps) const;
  /// Whether the model is a language model (reads token windows of a text dataset).
  bool language_model() const;
  /// The language model's size settings.
  models::ModelSize model_size() const;
  /// The model's input without loading data: data::input_spec(dataset()) for images; for a
  /// language model the vocabulary (vocab_size(), 256 for bytes) and the window length.
  models::InputSpec input_spec() const;
  /// The text dataset's settings (seq_len resolved: seq_len(), else the preset's).
  data::TextOptions text_options() const;

  /// Every setting that decides what the run computes or which collectives it issues, as
  /// (key, value) text. Ranks must agree on all of them at start-up; `resume_only` = false adds
  /// the ones that may change between a run and its resumption (log_every, eval_examples,
  /// checkpoint options, metrics_every) but must still agree across ranks. Output and checkpoint
  /// paths are not among them (they may differ between machines): only whether they are set.
  std::vector<std::pair<std::string, std::string>> settings(bool resume_only) const;

  /// Every scalar field once, with its key (summary.json's config; util/fields.h), in declaration
  /// order. compressor_config and reducer are listed by their own structs.
  template <typename Self, typename V>
  static void fields(Self& o, V&& v) {
    v("model", o.model_);
    v("model_preset", o.model_preset_);
    v("layers", o.layers_);
    v("width", o.width_);
    v("heads", o.heads_);
    v("seq_len", o.seq_len_);
    v("dataset", o.dataset_);
    v("tokenizer", o.tokenizer_);
    v("vocab_size", o.vocab_size_);
    v("cache_dir", o.cache_dir_);
    v("data_dir", o.data_dir_);
    v("compressor", o.compressor_);
    v("default_rank", o.default_rank_, !o.auto_rank_);
    v("auto_rank", o.auto_rank_, o.auto_rank_);
    v("optimizer", o.optimizer_);
    v("lr", o.lr_);
    v("lr_schedule", o.lr_schedule_);
    v("warmup_steps", o.warmup_steps_);
    v("clip_grad_norm", o.clip_grad_norm_);
    v("dense_embeddings", o.dense_embeddings_);
    v("momentum", o.momentum_);
    v("weight_decay", o.weight_decay_);
    v("batch_size", o.batch_size_);
    v("epochs", o.epochs_);
    v("steps", o.steps_);
    v("seed", o.seed_);
    v("log_every", o.log_every_);
    v("metrics_every", o.metrics_every_);
    v("eval_examples", o.eval_examples_);
    v("eval_every", o.eval_every_);
    v("out", o.out_dir_);
    v("checkpoint_dir", o.checkpoint_dir_);
    v("checkpoint_every", o.checkpoint_every_);
    v("keep_checkpoints", o.keep_checkpoints_);
    v("resume", o.resume_);
    v("stop_after", o.stop_after_);
    v("max_skipped_steps", o.max_skipped_steps_);
  }
};
std::ostream& operator<<(std::ostream& os, const TrainOptions& o);

}  // namespace train
}  // namespace lowrank
