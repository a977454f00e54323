// `lowrank train`: data-parallel training on real data with any registered compressor; N local
// worker processes by default, or one worker of a torchrun/mpirun/srun job (launch/train_job.h).
#include <c10/util/Exception.h>

#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "lowrank/comm/launch_env.h"
#include "lowrank/util/choices.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/launch/launcher.h"
#include "lowrank/train/lr_schedule.h"
#include "lowrank/train/optimizer_factory.h"
#include "lowrank/launch/train_job.h"
#include "lowrank/models/model_factory.h"
#include "language_model_flags.h"
#include "number_flags.h"
#include "train_flags.h"

namespace lowrank {
namespace cli {
namespace {

// Limits of the job's flags (JobOptions, launch/train_job.h): local processes and threads far beyond
// a machine's cores; a timeout of 11.6 days, whose milliseconds still fit a 32-bit int.
constexpr int64_t kMaxProcesses = 1024;
constexpr int64_t kMaxThreads = 1024;
constexpr double kMaxTimeoutSeconds = 1e6;

// The options the flags are bound to (train_flags.h): their defaults are the structs' own.
struct TrainFlags {
  train::TrainOptions options;
  launch::JobOptions job;
  int nproc = 2;                  ///< --nproc; JobOptions::nproc stays unset unless it is given
  std::vector<std::string> opts;  ///< --opt KEY=VALUE, turned into the compressor's Config
};

// The optimizer, its schedule, and how long the run is.
void add_optimizer_flags(CLI::App* sub, TrainFlags* f) {
  train::TrainOptions& o = f->options;
  sub->add_option("--optimizer", o.optimizer(),
                  "Optimizer, applied after the reducer: " + join_names(train::optimizer_names()))
      ->default_str("sgd; llama: adamw");
  add_real(sub, "--lr", o.lr(), "Learning rate, > 0 (omit it for the optimizer's default)", positive())
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
  sub->add_option("--master-addr", f->job.master_addr(), "Rendezvous address (default: MASTER_ADDR, else 127.0.0.1)");
  add_integer(sub, "--master-port", f->job.master_port(),
              "Rendezvous port (default: MASTER_PORT, else a free port picked by the local launcher)", {0, 65535});
  sub->add_option("--hostname", f->job.hostname(),
                  "This machine's address for the gloo transport (default: derived from the rendezvous address)");
}

// What `lowrank train` runs once its flags are parsed into `f`.
int run_train(TrainFlags& f, CLI::App* sub) {
  auto given = [sub](const char* name) { return sub->get_option(name)->count() > 0; };
  auto& o = f.options;
  // Once per job: by the process the user started, or by rank 0 of a torchrun/mpirun/srun job.
  bool first = !launch::started_by_launcher();
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
  apply_flags(sub, o, f.opts);
  if (given("--nproc")) f.job.nproc(f.nproc);
  f.job.overwrite(given("--overwrite"));
  return launch::run_train_job(o, f.job);
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
  add_model_flags(sub, f->options, FlagSet::kTrain);
  add_compressor_flags(sub, f->options, f->opts, FlagSet::kTrain);
  add_optimizer_flags(sub, f.get());
  add_run_flags(sub, f.get());
  return {sub, [f, sub] { return run_train(*f, sub); }};
}

}  // namespace cli
}  // namespace lowrank
