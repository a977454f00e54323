#pragma once
// Trainer: the data-parallel training loop of one rank.
//
// Every rank builds the same model from the seed, then takes rank 0's weights by broadcast (so
// ranks agree even if initialization ever depended on the process). Each epoch draws one
// permutation of the training set from (seed, epoch), the same on every rank, and rank r trains
// on rows [r·⌊N/W⌋, (r+1)·⌊N/W⌋) of it: disjoint shards of equal size, so every rank runs the same
// number of steps (⌈⌊N/W⌋ / batch_size⌉ per epoch; ⌊N/W⌋·W examples of each epoch are used).
//
// A step is one batch: forward, loss, all-gather of the W losses, backward,
// GradientReducer::reduce(), optimizer step at the scheduled learning rate (train/lr_schedule.h,
// spanning total_steps()). Hooks, skip messages and errors number steps from 0; progress lines,
// metrics rows and checkpoints give the count of steps done. A step whose loss is non-finite on
// any rank (seen by all in the all-gather), or whose gradient is (the reducer's check), is skipped
// on every rank with no state changed, and counted; more than max_skipped_steps() skips stop every
// rank with an error naming the step. Checkpoints (train/checkpoint.h) hold everything a step
// reads, so resume_from() continues bit for bit. The reducer makes ĝ bit-identical on all ranks,
// so the weights stay bit-identical; run() ends by all-gathering a checksum of the weights and
// throws if any rank differs. Test accuracy is measured at the end of every epoch (and after a
// partial last epoch, and every eval_every steps) on the whole test set (or its first
// eval_examples), split across ranks.
//
// A language model (options.language_model(), data of token windows) trains the same way: the loss
// is the mean cross-entropy over every position of the batch, "test" is the validation split, its
// accuracy the next-token accuracy and its loss the per-token validation loss (perplexity = exp).
// With clip_grad_norm the averaged gradient ĝ is clipped to that global norm before the optimizer
// step, identically on every rank.
//
// Results are deterministic for a given seed, world size and thread count.
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/data/dataset.h"
#include "lowrank/models/classifier.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "lowrank/train/fingerprint.h"  // weights_checksum, weights_sha256, checksum_hex
#include "lowrank/train/loop_state.h"
#include "lowrank/train/meter.h"
#include "lowrank/train/metrics_row.h"
#include "lowrank/train/step_times.h"
#include "lowrank/train/train_options.h"
#include "lowrank/train/train_result.h"

namespace torch {
namespace optim {
class Optimizer;
}
namespace serialize {
class InputArchive;
}
}  // namespace torch

namespace lowrank {
namespace train {

struct CheckpointRef;  // checkpoint.h

/// Called at the start of every step with the 0-based step index.
using StepHook = std::function<void(int64_t step)>;
/// Called before backward() with the 0-based step index and the model (tests use it to register a
/// tensor hook that plants a non-finite gradient on one rank during backward(): with overlap on,
/// buckets start during backward(), so a gradient changed after it would race with them).
using GradHook = std::function<void(int64_t step, torch::nn::Module& model)>;

class Trainer {
 public:
  /// Collective (broadcast and the reducer's set-up check): every rank constructs it together.
  Trainer(TrainOptions options, data::Dataset train_set, data::Dataset test_set,
          std::shared_ptr<comm::Communicator> comm);
  ~Trainer();

  /// Progress lines (every log_every seconds and at each epoch end); nullptr = silent. Default nullptr.
  void set_log(std::ostream* log) { log_ = log; }
  /// Where metrics rows go; nullptr = nowhere. The writer is not closed by run(). Default nullptr.
  void set_metrics(MetricsSink* metrics) { metrics_ = metrics; }
  void set_step_hook(StepHook hook) { hook_ = std::move(hook); }
  void set_grad_hook(GradHook hook) { grad_hook_ = std::move(hook); }

  /// Collective: loads the newest complete checkpoint under `path` (checkpoint.h) into the
  /// model, optimizer, reducer and loop position; run() then continues from its step, bit for bit
  /// as if never interrupted. Throws naming the file and the problem (on every rank).
  int64_t resume_from(const std::string& path);
  /// Collective: writes checkpoint <checkpoint_root()>/step-<step> now. Returns its directory.
  std::string save_checkpoint();
  /// What a checkpoint's manifest records and a resume must match: the options' resume settings,
  /// the data's fingerprints and the lowrank and torch versions. (Bit-for-bit resumption also
  /// needs the same intra-op thread count and BLAS: environment(), warned about, not refused.)
  std::vector<std::pair<std::string, std::string>> resume_settings() const;
  /// Where checkpoints go: checkpoint_dir(), else the root of resume() (checkpoint_root_of), fixed
  /// at construction (a step directory resumed from may be pruned later); "" = no checkpoints.
  std::string checkpoint_root() const;
  /// What a checkpoint records but a resume does not require: intra-op threads and BLAS.
  std::vector<std::pair<std::string, std::string>> environment() const;
  /// Lines resume_from() has for the user ("note: ... moved aside", "warning: ... threads"), for
  /// rank 0 to print after its start lines.
  const std::vector<std::string>& resume_notes() const { return resume_notes_; }

  TrainResult run();

  models::Classifier& model() { return *model_; }
  const GradientReducer& reducer() const { return *reducer_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  int64_t total_steps() const;

  /// Rank `rank`'s training rows in epoch `epoch` ([⌊n/world⌋] int64), see above.
  static at::Tensor shard(int64_t n, uint64_t seed, int64_t epoch, int rank, int world);

 private:
  // (accuracy, mean loss) of an evaluation; -1 = not measured (an empty metrics cell).
  struct Evaluation {
    double accuracy = -1, loss = -1;
  };
  // What one run() measures and no checkpoint keeps.
  struct RunMeters {
    TimeMeter elapsed;                // seconds trained, a resumed run's earlier ones included
    TimeMeter since_log;              // since the last progress line
    AverageMeter log_loss, log_ms;    // applied steps since the last progress line
    StepTimings timings;              // every applied step's phases
  };

  // run(), one step at a time: train_step() runs batch `batch_index` of the epoch's `rows` as step
  // state_.step and advances it, returning the step's learning rate; then evaluate_and_log(),
  // maybe_checkpoint(), and after the last step finish().
  double train_step(const at::Tensor& rows, int64_t batch_index);
  void evaluate_and_log(int64_t epoch, bool epoch_end, double lr);
  void maybe_checkpoint(bool stop_now, TrainResult* res);
  TrainResult finish(TrainResult res);

  // reduce() and the optimizer step, after backward(); "" when applied, else why the step is
  // skipped (a non-finite gradient on some rank: nothing was changed).
  std::string reduce_and_update(StepTimes* times);
  void skip_step(const std::string& why);
  void log_progress(int64_t epoch);
  void log_evaluation(int64_t epoch, bool epoch_end, const Evaluation& e);
  void write_metrics_row(int64_t epoch, double lr, const Evaluation& e);

  // Mean loss over ranks, or NaN with `bad` naming the ranks whose loss was not finite.
  double gather_loss(double local, std::string* bad);
  void check_startup_agreement();
  Evaluation evaluate();  // over the evaluated test examples
  uint64_t check_weights(std::vector<uint64_t>* all);
  void clip_gradients(double max_norm);  // ĝ to global L2 norm max_norm
  // resume_from()'s load on this rank: every shape checked before anything changes.
  void load_checkpoint_shard(const CheckpointRef& ref, torch::serialize::InputArchive& archive);

  TrainOptions options_;
  data::Dataset train_, test_;
  std::shared_ptr<comm::Communicator> comm_;
  std::shared_ptr<models::Classifier> model_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t steps_per_epoch_ = 0;
  std::ostream* log_ = nullptr;
  MetricsSink* metrics_ = nullptr;
  StepHook hook_;
  GradHook grad_hook_;
  // The loop's position and running sums, all a checkpoint holds besides the model, optimizer and
  // reducer. state_.step, the count of steps done (the 0-based index of the next), is the one
  // meaning of "step" here.
  LoopState state_;
  RunMeters run_;
  int64_t resumed_from_ = -1;
  bool last_step_skipped_ = false;
  std::string train_fingerprint_, test_fingerprint_;  // data_fingerprint(), computed once
  std::string checkpoint_root_;
  std::vector<std::string> resume_notes_;
};

}  // namespace train
}  // namespace lowrank
