// `lowrank train`: data-parallel training on real data with any registered compressor; N local
// worker processes by default, or one worker of a torchrun/mpirun/srun job (train/train_job.h).
#include <c10/util/Exception.h>

#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "compressor_flags.h"
#include "lowrank/choices.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/train/optimizer_factory.h"
#include "lowrank/train/train_job.h"
#include "lowrank/models/model_factory.h"

namespace lowrank {
namespace cli {
namespace {

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

}  // namespace

Command add_train_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "train",
      "Data-parallel training with gradient compression: starts --nproc worker processes on this machine, or "
      "joins the torchrun/mpirun/srun job whose environment variables are set");
  auto f = std::make_shared<TrainFlags>();
  auto& o = f->options;
  auto* nproc = sub->add_option("--nproc", f->nproc,
                                "Worker processes to start on this machine (default 2; without --nproc a process "
                                "started by torchrun, mpirun or srun joins that job instead)");
  auto* model = sub->add_option("--model", o.model(),
                                "Model: " + join_names(models::model_names()) +
                                    " (llama: a LLaMA-style language model on real English text; it changes the "
                                    "defaults marked 'llama:')")
                    ->capture_default_str();
  sub->add_option("--preset", o.model_preset(),
                  "llama size: " + join_names(models::llama_preset_names()) +
                      " (0.9 M, 4.3 M, 12 M, 24 M parameters at 2048 pieces)")
      ->capture_default_str();
  sub->add_option("--layers", o.layers(), "llama: transformer blocks (0 = the preset's)")->capture_default_str();
  sub->add_option("--width", o.width(), "llama: model width d (0 = the preset's)")->capture_default_str();
  sub->add_option("--heads", o.heads(), "llama: attention heads (0 = the preset's)")->capture_default_str();
  sub->add_option("--seq-len", o.seq_len(), "llama: tokens per training window (0 = the preset's)")
      ->capture_default_str();
  auto* dataset = sub->add_option("--dataset", o.dataset(),
                                  "Dataset: " + join_names(data::dataset_names()) +
                                      " (kjv: the King James Bible from Debian's bible-kjv; text: DIR/train.txt "
                                      "and DIR/val.txt of --data-dir)")
                      ->default_str("fashion-mnist; llama: kjv");
  sub->add_option("--data-dir", o.data_dir(), "Directory of the dataset files")
      ->default_str(data::default_data_dir(o.dataset()));
  sub->add_option("--tokenizer", o.tokenizer(), "Text: " + join_names(data::tokenizer_names()) +
                                                    " (byte: the UTF-8 bytes, no training)")
      ->capture_default_str();
  sub->add_option("--vocab-size", o.vocab_size(), "Text: SentencePiece vocabulary, trained once on the training split")
      ->capture_default_str();
  sub->add_option("--cache-dir", o.cache_dir(), "Text: where prepared text, tokenizers and token ids are cached")
      ->default_str("$LOWRANK_CACHE_DIR, else ~/.cache/lowrank");
  auto* dense_embed = sub->add_flag("--compress-embeddings",
                                    "llama: compress the embedding and output layers too (default: dense, as the "
                                    "papers; ignored when --uncompressed-names is given)");
  sub->add_option("--compressor", o.compressor(),
                  "Gradient compressor: " + join_names(compressor_names()) + " (see `lowrank compressors`)")
      ->capture_default_str();
  auto* rank = sub->add_option("--rank", f->rank,
                               "Compression rank r >= 1, for compressors that take one (ignored by the others, e.g. "
                               "none); a rank so high that no matrix passes the size rule gets a warning at start")
                   ->capture_default_str();
  sub->add_option("--opt", f->opts,
                  "Compressor option KEY=VALUE, repeatable (e.g. --opt powersgd_mode=alternating "
                  "--opt restart_period=10); unknown keys are an error naming the accepted ones")
      ->type_name("KEY=VALUE");
  sub->add_option("--start-iter", f->start_iter,
                  "Dense warm-up steps before compression starts (a warning at start when >= the run's steps)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--min-compression-rate", f->min_compression_rate,
                  "Compress an m x n matrix only if m*n > this times the floats it would send")
      ->capture_default_str();
  auto* no_ef = sub->add_flag("--no-error-feedback", "Turn error feedback off (default: the compressor's choice)");
  sub->add_option("--ef-beta", f->ef_beta,
                  "EMA error feedback e <- e + (1-beta)(residual - e) as in the GreedyLore reference code; 0 is plain "
                  "EF14 (docs/algorithms.md §1.4)")
      ->capture_default_str();
  sub->add_option("--bucket-cap-mb", f->bucket_cap_mb,
                  "Gradient bucket size in MiB, filled in reverse parameter order as PyTorch DDP (0 = one bucket)")
      ->capture_default_str();
  auto* no_overlap = sub->add_flag("--no-overlap",
                                   "Reduce all buckets after backward() instead of starting each as soon as its "
                                   "gradients are ready");
  auto* no_warm = sub->add_flag("--no-warm-start", "Redraw the compressor's basis every step (key warm_start=false)");
  sub->add_option("--uncompressed-names", f->uncompressed,
                  "Parameters whose name contains (or matches as regex) one of these stay dense; comma-separated; a "
                  "pattern that matches no parameter is an error")
      ->delimiter(',')
      ->default_str("none");
  auto* optimizer = sub->add_option("--optimizer", o.optimizer(),
                                    "Optimizer, applied after the reducer: " + join_names(train::optimizer_names()))
                        ->default_str("sgd; llama: adamw");
  sub->add_option("--lr", f->lr, "Learning rate, > 0 (omit it for the optimizer's default)")
      ->check(CLI::PositiveNumber)
      ->default_str("0.05 for sgd, 0.001 for adam and adamw");
  sub->add_option("--lr-schedule", o.lr_schedule(),
                  "Learning-rate schedule over the run: " + join_names(train::lr_schedule_names()) +
                      " (cosine: decays to 0 by the last step)")
      ->capture_default_str();
  sub->add_option("--warmup-steps", o.warmup_steps(),
                  "Linear learning-rate warm-up steps before the schedule (-1 = a tenth of the run for llama, none "
                  "otherwise)")
      ->check(CLI::Range(int64_t(-1), std::numeric_limits<int64_t>::max()))
      ->type_name("INT")
      ->capture_default_str();
  auto* clip = sub->add_option("--clip-grad-norm", o.clip_grad_norm(),
                               "Clip the averaged gradient to this global L2 norm before the optimizer (0 = off)")
                   ->check(CLI::NonNegativeNumber)
                   ->default_str("0; llama: 1");
  sub->add_option("--momentum", o.momentum(), "SGD momentum; beta1 for adam and adamw")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay(), "Weight decay (never compressed)")->capture_default_str();
  auto* batch = sub->add_option("--batch-size", o.batch_size(), "Examples (llama: windows) per worker per step")
                    ->default_str("64; llama: 16");
  sub->add_option("--epochs", o.epochs(), "Passes over the training set")->capture_default_str();
  sub->add_option("--steps", o.steps(), "Stop after this many steps in total (0 = no limit)")->capture_default_str();
  sub->add_option("--seed", o.seed(), "Seed of the weights, the shuffle and the shared random streams (>= 0)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--threads", f->job.threads(), "Intra-op threads per worker (0 = cores / local workers)")
      ->capture_default_str();
  sub->add_option("--timeout", f->job.timeout_seconds(),
                  "Seconds before a rendezvous or collective fails instead of hanging")
      ->capture_default_str();
  sub->add_option("--log-every", o.log_every(), "Seconds between progress lines")->capture_default_str();
  sub->add_option("--metrics-every", o.metrics_every(), "Steps between rows of metrics.csv")->capture_default_str();
  sub->add_option("--eval-examples", o.eval_examples(),
                  "Evaluate on the first N test examples only (0 = the whole test set; benchmarks use a few)")
      ->capture_default_str();
  auto* eval_every = sub->add_option("--eval-every", o.eval_every(),
                                     "Also evaluate every N steps (validation loss and perplexity, test accuracy); 0 = "
                                     "at epoch ends only")
                         ->check(CLI::NonNegativeNumber)
                         ->default_str("0; llama: 100");
  sub->add_option("--out", o.out_dir(),
                  "Write metrics.csv, summary.json and rank<r>.json into DIR; a non-empty DIR is refused unless "
                  "--overwrite or --resume")
      ->type_name("DIR")
      ->default_str("none");
  auto* overwrite = sub->add_flag("--overwrite",
                                  "Reuse a non-empty --out (removing lowrank's own files there, nothing else) and a "
                                  "--checkpoint-dir that holds checkpoints (deleting them)");
  sub->add_option("--checkpoint-dir", o.checkpoint_dir(),
                  "Write checkpoints into DIR/step-<N>/ (one shard per rank, a manifest with checksums written last)")
      ->type_name("DIR")
      ->default_str("none");
  sub->add_option("--checkpoint-every", o.checkpoint_every(),
                  "Steps between checkpoints (0 = only after the last step and at --stop-after)")
      ->capture_default_str();
  sub->add_option("--keep-checkpoints", o.keep_checkpoints(), "Complete checkpoints kept; older ones are removed")
      ->capture_default_str();
  sub->add_option("--resume", o.resume(),
                  "Continue from the newest complete checkpoint under DIR (or a step-<N> directory): same weights, "
                  "bit for bit, as a run never interrupted; same settings and world size required")
      ->type_name("DIR")
      ->default_str("none");
  sub->add_option("--stop-after", o.stop_after(),
                  "Stop after N steps of this invocation with a checkpoint, as a preempted job (0 = run to the end)")
      ->capture_default_str();
  sub->add_option("--max-skipped-steps", o.max_skipped_steps(),
                  "Steps skipped for a non-finite loss or gradient on any rank before the run aborts (-1 = no limit)")
      ->capture_default_str();
  auto* no_skip = sub->add_flag("--no-skip-nonfinite",
                                "Do not check gradients for NaN/Inf before reducing (saves a pass over the gradients "
                                "and lets buckets start during backward; a NaN then spreads to every rank)");
  auto* addr = sub->add_option("--master-addr", f->master_addr,
                               "Rendezvous address (default: MASTER_ADDR, else 127.0.0.1)");
  sub->add_option("--master-port", f->master_port,
                  "Rendezvous port (default: MASTER_PORT, else a free port picked by the local launcher)");
  sub->add_option("--hostname", f->job.hostname(),
                  "This machine's address for the gloo transport (default: derived from the rendezvous address)");

  return {sub, [f, nproc, rank, no_ef, no_warm, no_overlap, addr, overwrite, no_skip, model, dataset, optimizer, clip,
               batch, eval_every, dense_embed] {
            auto& o = f->options;
            // A language model trains as the papers do, unless a flag says otherwise.
            if (model->count() > 0 && models::is_language_model(o.model())) {
              if (dataset->count() == 0) o.dataset("kjv");
              if (optimizer->count() == 0) o.optimizer("adamw");
              if (clip->count() == 0) o.clip_grad_norm(1.0);
              if (batch->count() == 0) o.batch_size(16);
              if (eval_every->count() == 0) o.eval_every(100);
            }
            o.dense_embeddings(dense_embed->count() == 0);
            if (nproc->count() > 0) f->job.nproc(f->nproc);
            if (addr->count() > 0) f->job.master_addr(f->master_addr);
            f->job.master_port(f->master_port);
            f->job.overwrite(overwrite->count() > 0);
            o.default_rank(f->rank);
            o.compressor_config(compressor_config_from_flags(f->opts, f->rank, rank->count() > 0, no_warm->count() > 0));
            o.lr(f->lr);
            o.reducer()
                .start_iter(f->start_iter)
                .min_compression_rate(f->min_compression_rate)
                .error_feedback(no_ef->count() > 0 ? 0 : -1)
                .ef_beta(f->ef_beta)
                .bucket_cap_mb(f->bucket_cap_mb)
                .overlap(no_overlap->count() == 0)
                .skip_nonfinite(no_skip->count() == 0)
                .uncompressed_names(f->uncompressed);
            return train::run_train_job(o, f->job);
          }};
}

}  // namespace cli
}  // namespace lowrank
