// `lowrank train`: data-parallel training on real data with any registered compressor; N local
// worker processes by default, or one worker of a torchrun/mpirun/srun job (train/train_job.h).
#include <c10/util/Exception.h>

#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "compressor_flags.h"
#include "lowrank/comm/launch_env.h"
#include "lowrank/choices.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/train/launcher.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/train/optimizer_factory.h"
#include "lowrank/train/train_job.h"
#include "lowrank/models/model_factory.h"
#include "language_model_flags.h"
#include "number_flags.h"

namespace lowrank {
namespace cli {
namespace {

// Limits of the job's flags (JobOptions, train/train_job.h): local processes and threads far beyond
// a machine's cores; a timeout of 11.6 days, whose milliseconds still fit a 32-bit int; a bucket
// of 1 TB.
constexpr int64_t kMaxProcesses = 1024;
constexpr int64_t kMaxThreads = 1024;
constexpr double kMaxTimeoutSeconds = 1e6;
constexpr double kMaxBucketCapMb = 1e6;

struct TrainFlags {
  train::TrainOptions options;
  train::JobOptions job;
  int nproc = 2;
  int64_t rank = 4;
  std::vector<std::string> opts;
  std::vector<std::string> uncompressed;
  double lr = 0;
  double min_compression_rate = 2.0;
  double ef_beta = 0.0;
  int64_t start_iter = 0;
  double bucket_cap_mb = 25.0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
};

// --model, its size (llama) and its data.
void add_model_flags(CLI::App* sub, train::TrainOptions& o) {
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
                      " (kjv: the King James Bible from Debian's bible-kjv; text: DIR/train.txt "
                      "and DIR/val.txt of --data-dir)")
      ->default_str("fashion-mnist; llama: kjv");
  sub->add_option("--data-dir", o.data_dir(), "Directory of the dataset files")
      ->default_str(data::default_data_dir(o.dataset()));
  sub->add_option("--tokenizer", o.tokenizer(),
                  "Text: " + join_names(data::tokenizer_names()) + " (byte: the UTF-8 bytes, no training)")
      ->capture_default_str();
  add_integer(sub, "--vocab-size", o.vocab_size(), "Text: SentencePiece vocabulary, trained once on the training split",
              {train::kMinVocabSize, train::kMaxVocabSize})
      ->capture_default_str();
  sub->add_option("--cache-dir", o.cache_dir(), "Text: where prepared text, tokenizers and token ids are cached")
      ->default_str("$LOWRANK_CACHE_DIR, else ~/.cache/lowrank");
  sub->add_flag("--compress-embeddings",
                "llama: compress the embedding and output layers too (default: dense, as the "
                "papers; ignored when --uncompressed-names is given)");
}

// The compressor and the reducer around it.
void add_compressor_flags(CLI::App* sub, TrainFlags* f) {
  train::TrainOptions& o = f->options;
  sub->add_option("--compressor", o.compressor(),
                  "Gradient compressor: " + join_names(compressor_names()) + " (see `lowrank compressors`)")
      ->capture_default_str();
  add_integer(sub, "--rank", f->rank,
              "Compression rank r >= 1, for compressors that take one (ignored by the others, e.g. "
              "none); a rank so high that no matrix passes the size rule gets a warning at start",
              {1, train::kMaxRank})
      ->capture_default_str();
  sub->add_option("--opt", f->opts,
                  "Compressor option KEY=VALUE, repeatable (e.g. --opt powersgd_mode=alternating "
                  "--opt restart_period=10); unknown keys are an error naming the accepted ones")
      ->type_name("KEY=VALUE");
  add_integer(sub, "--start-iter", f->start_iter,
              "Dense warm-up steps before compression starts (a warning at start when >= the run's steps)",
              {0, train::kMaxSteps})
      ->capture_default_str();
  add_real(sub, "--min-compression-rate", f->min_compression_rate,
           "Compress an m x n matrix only if m*n > this times the floats it would send", non_negative())
      ->capture_default_str();
  sub->add_flag("--no-error-feedback", "Turn error feedback off (default: the compressor's choice)");
  add_real(sub, "--ef-beta", f->ef_beta,
           "EMA error feedback e <- e + (1-beta)(residual - e) as in the GreedyLore reference code, 0 <= beta < 1; 0 "
           "is plain EF14 (docs/algorithms.md §1.4)",
           RealRange{0, 1, false, true})
      ->capture_default_str();
  add_real(sub, "--bucket-cap-mb", f->bucket_cap_mb,
           "Gradient bucket size in MiB, filled in reverse parameter order as PyTorch DDP (0 = one bucket)",
           non_negative(kMaxBucketCapMb))
      ->capture_default_str();
  sub->add_flag("--no-overlap",
                "Reduce all buckets after backward() instead of starting each as soon as its "
                "gradients are ready");
  sub->add_flag("--no-warm-start", "Redraw the compressor's basis every step (key warm_start=false)");
  sub->add_option("--uncompressed-names", f->uncompressed,
                  "Parameters whose name contains (or matches as regex) one of these stay dense; comma-separated; a "
                  "pattern that matches no parameter is an error")
      ->delimiter(',')
      ->default_str("none");
}

// The optimizer, its schedule, and how long the run is.
void add_optimizer_flags(CLI::App* sub, TrainFlags* f) {
  train::TrainOptions& o = f->options;
  sub->add_option("--optimizer", o.optimizer(),
                  "Optimizer, applied after the reducer: " + join_names(train::optimizer_names()))
      ->default_str("sgd; llama: adamw");
  add_real(sub, "--lr", f->lr, "Learning rate, > 0 (omit it for the optimizer's default)", positive())
      ->default_str("0.05 for sgd, 0.001 for adam and adamw");
  sub->add_option("--lr-schedule", o.lr_schedule(),
                  "Learning-rate schedule over the run: " + join_names(train::lr_schedule_names()) +
                      " (cosine: decays to 0 by the last step)")
      ->capture_default_str();
  add_integer(sub, "--warmup-steps", o.warmup_steps(),
              "Linear learning-rate warm-up steps before the schedule (-1 = a tenth of the run for llama, none "
              "otherwise)",
              {-1, train::kMaxSteps})
      ->capture_default_str();
  add_real(sub, "--clip-grad-norm", o.clip_grad_norm(),
           "Clip the averaged gradient to this global L2 norm before the optimizer (0 = off)", non_negative())
      ->default_str("0; llama: 1");
  add_real(sub, "--momentum", o.momentum(), "SGD momentum, 0 <= m < 1; beta1 for adam and adamw",
           RealRange{0, 1, false, true})
      ->capture_default_str();
  add_real(sub, "--weight-decay", o.weight_decay(), "Weight decay (never compressed)", non_negative())
      ->capture_default_str();
  add_integer(sub, "--batch-size", o.batch_size(), "Examples (llama: windows) per worker per step",
              {1, train::kMaxBatchSize})
      ->default_str("64; llama: 16");
  add_integer(sub, "--epochs", o.epochs(), "Passes over the training set", {1, train::kMaxEpochs})
      ->capture_default_str();
  add_integer(sub, "--steps", o.steps(), "Stop after this many steps in total (0 = no limit)", {0, train::kMaxSteps})
      ->capture_default_str();
  add_integer(sub, "--seed", o.seed(), "Seed of the weights, the shuffle and the shared random streams (>= 0)",
              {0, std::numeric_limits<int64_t>::max()})
      ->capture_default_str();
}

// How the run is executed, logged, checkpointed and connected.
void add_run_flags(CLI::App* sub, TrainFlags* f) {
  train::TrainOptions& o = f->options;
  add_integer(sub, "--threads", f->job.threads(), "Intra-op threads per worker (0 = cores / local workers)",
              {0, kMaxThreads})
      ->capture_default_str();
  add_real(sub, "--timeout", f->job.timeout_seconds(),
           "Seconds before a rendezvous or collective fails instead of hanging", RealRange{0.001, kMaxTimeoutSeconds})
      ->capture_default_str();
  add_real(sub, "--log-every", o.log_every(), "Seconds between progress lines", positive())->capture_default_str();
  add_integer(sub, "--metrics-every", o.metrics_every(), "Steps between rows of metrics.csv", {1, train::kMaxSteps})
      ->capture_default_str();
  add_integer(sub, "--eval-examples", o.eval_examples(),
              "Evaluate on the first N test examples only (0 = the whole test set; benchmarks use a few)",
              {0, train::kMaxExamples})
      ->capture_default_str();
  add_integer(sub, "--eval-every", o.eval_every(),
              "Also evaluate every N steps (validation loss and perplexity, test accuracy); 0 = "
              "at epoch ends only",
              {0, train::kMaxSteps})
      ->default_str("0; llama: 100");
  sub->add_option("--out", o.out_dir(),
                  "Write metrics.csv, summary.json and rank<r>.json into DIR; a non-empty DIR is refused unless "
                  "--overwrite or --resume")
      ->type_name("DIR")
      ->default_str("none");
  sub->add_flag("--overwrite",
                "Reuse a non-empty --out (removing lowrank's own files there, nothing else) and a "
                "--checkpoint-dir that holds checkpoints (deleting them)");
  sub->add_option("--checkpoint-dir", o.checkpoint_dir(),
                  "Write checkpoints into DIR/step-<N>/ (one shard per rank, a manifest with checksums written last)")
      ->type_name("DIR")
      ->default_str("none");
  add_integer(sub, "--checkpoint-every", o.checkpoint_every(),
              "Steps between checkpoints (0 = only after the last step and at --stop-after)", {0, train::kMaxSteps})
      ->capture_default_str();
  add_integer(sub, "--keep-checkpoints", o.keep_checkpoints(), "Complete checkpoints kept; older ones are removed",
              {1, train::kMaxKeepCheckpoints})
      ->capture_default_str();
  sub->add_option("--resume", o.resume(),
                  "Continue from the newest complete checkpoint under DIR (or a step-<N> directory): same weights, "
                  "bit for bit, as a run never interrupted; same settings and world size required")
      ->type_name("DIR")
      ->default_str("none");
  add_integer(sub, "--stop-after", o.stop_after(),
              "Stop after N steps of this invocation with a checkpoint, as a preempted job (0 = run to the end)",
              {0, train::kMaxSteps})
      ->capture_default_str();
  add_integer(sub, "--max-skipped-steps", o.max_skipped_steps(),
              "Steps skipped for a non-finite loss or gradient on any rank before the run aborts (-1 = no limit)",
              {-1, train::kMaxSteps})
      ->capture_default_str();
  sub->add_flag("--no-skip-nonfinite",
                "Do not check gradients for NaN/Inf before reducing (saves a pass over the gradients "
                "and lets buckets start during backward; a NaN then spreads to every rank)");
  sub->add_option("--master-addr", f->master_addr, "Rendezvous address (default: MASTER_ADDR, else 127.0.0.1)");
  add_integer(sub, "--master-port", f->master_port,
              "Rendezvous port (default: MASTER_PORT, else a free port picked by the local launcher)", {0, 65535});
  sub->add_option("--hostname", f->job.hostname(),
                  "This machine's address for the gloo transport (default: derived from the rendezvous address)");
}

// What `lowrank train` runs once its flags are parsed into `f`.
int run_train(TrainFlags& f, CLI::App* sub) {
  auto given = [sub](const char* name) { return sub->get_option(name)->count() > 0; };
  auto& o = f.options;
  // Once per job: by the process the user started, or by rank 0 of a torchrun/mpirun/srun job.
  bool first = !train::started_by_launcher();
  try {
    first = first && comm::detect_launch_env().rank == 0;
  } catch (const c10::Error&) {  // a malformed variable fails later, with its own message
  }
  if (first) {
    std::vector<CLI::Option*> language_model_flags;
    for (const char* name : {"--preset", "--layers", "--width", "--heads", "--seq-len", "--tokenizer", "--vocab-size",
                             "--cache-dir", "--compress-embeddings"})
      language_model_flags.push_back(sub->get_option(name));
    warn_ignored_language_model_flags(o.model(), language_model_flags, std::cout);
  }
  // A language model trains as the papers do, unless a flag says otherwise.
  if (given("--model") && models::is_language_model(o.model())) {
    if (!given("--dataset")) o.dataset("kjv");
    if (!given("--optimizer")) o.optimizer("adamw");
    if (!given("--clip-grad-norm")) o.clip_grad_norm(1.0);
    if (!given("--batch-size")) o.batch_size(16);
    if (!given("--eval-every")) o.eval_every(100);
  }
  o.dense_embeddings(!given("--compress-embeddings"));
  if (given("--nproc")) f.job.nproc(f.nproc);
  if (given("--master-addr")) f.job.master_addr(f.master_addr);
  f.job.master_port(f.master_port);
  f.job.overwrite(given("--overwrite"));
  o.default_rank(f.rank);
  o.compressor_config(compressor_config_from_flags(f.opts, f.rank, given("--rank"), given("--no-warm-start")));
  o.lr(f.lr);
  o.reducer()
      .start_iter(f.start_iter)
      .min_compression_rate(f.min_compression_rate)
      .error_feedback(given("--no-error-feedback") ? 0 : -1)
      .ef_beta(f.ef_beta)
      .bucket_cap_mb(f.bucket_cap_mb)
      .overlap(!given("--no-overlap"))
      .skip_nonfinite(!given("--no-skip-nonfinite"))
      .uncompressed_names(f.uncompressed);
  return train::run_train_job(o, f.job);
}

}  // namespace

Command add_train_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "train",
      "Data-parallel training with gradient compression: starts --nproc worker processes on this machine, or "
      "joins the torchrun/mpirun/srun job whose environment variables are set");
  auto f = std::make_shared<TrainFlags>();
  add_integer(sub, "--nproc", f->nproc,
              "Worker processes to start on this machine (default 2; without --nproc a process started by torchrun, "
              "mpirun or srun joins that job instead)",
              {1, kMaxProcesses});
  add_model_flags(sub, f->options);
  add_compressor_flags(sub, f.get());
  add_optimizer_flags(sub, f.get());
  add_run_flags(sub, f.get());
  return {sub, [f, sub] { return run_train(*f, sub); }};
}

}  // namespace cli
}  // namespace lowrank
