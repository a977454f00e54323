#pragma once
// Trainer: the data-parallel training loop of one rank.
//
// Every rank builds the same model from the seed, then takes rank 0's weights by broadcast (so
// ranks agree even if initialization ever depended on the process). Each epoch draws one
// permutation of the training set from (seed, epoch), the same on every rank, and rank r trains
// on rows [r·⌊N/W⌋, (r+1)·⌊N/W⌋) of it: disjoint shards of equal size, so every rank runs the same
// number of steps (⌈⌊N/W⌋ / batch_size⌉ per epoch; ⌊N/W⌋·W examples of each epoch are used). A step
// is: forward, loss, all-gather of the W losses, backward, GradientReducer::reduce(), optimizer
// step at the scheduled learning rate (train/lr_schedule.h, spanning total_steps()). A step whose
// loss is non-finite on any rank (seen by all in the all-gather), or whose gradient is (the
// reducer's check), is skipped on every rank with no state changed, and counted; more than
// max_skipped_steps() skips stop every rank with an error naming the step. Checkpoints
// (train/checkpoint.h) hold everything a step reads, so resume_from() continues bit for bit. The reducer makes ĝ
// bit-identical on all ranks, so the weights stay bit-identical; run() ends by all-gathering
// a checksum of the weights and throws if any rank differs. Test accuracy is measured at the end of
// every epoch (and after a partial last epoch, and every eval_every steps) on the whole test set (or its first
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
#include <deque>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "lowrank/data/dataset.h"
#include "lowrank/comm/communicator.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "lowrank/train/metrics_writer.h"
#include "lowrank/train/train_options.h"
#include "lowrank/models/classifier.h"

namespace torch {
namespace optim {
class Optimizer;
}
}  // namespace torch

namespace lowrank {
namespace train {

struct TrainResult {
  int64_t steps = 0;                       ///< steps run (skipped ones included: see skipped_steps)
  int64_t steps_per_epoch = 0;
  int64_t epochs = 0;                      ///< epochs started; the last is partial when steps() stopped it
  double final_train_loss = 0;             ///< mean over ranks and over the last metrics_every steps
  double test_accuracy = 0;                ///< fraction in [0, 1] after the last step
  double test_loss = 0;                    ///< mean cross-entropy on the test set after the last step
                                           ///< (language models: per token, on the validation split: val_loss)
  bool language_model = false;             ///< next-token prediction on text (test_* are validation numbers)
  double val_perplexity = 0;               ///< language models: exp(test_loss)
  int64_t vocab_size = 0;                  ///< language models: the tokenizer's vocabulary
  std::string tokenizer;                   ///< language models: the tokenizer's description
  int64_t parameters = 0;                  ///< the model's parameter count
  std::vector<double> epoch_test_accuracy; ///< after each epoch
  ReducerStats reducer;                    ///< this rank's counters (the same on every rank)
  std::string reducer_description;
  int64_t buckets_per_step = 0;            ///< the reducer's buckets
  bool overlap = false;                    ///< buckets could start during backward() (reducer.overlapping())
  double wall_seconds = 0;                 ///< from the first step to the end of run() (a resumed run adds the time before its checkpoint)
  uint64_t weights_checksum = 0;           ///< this rank's; run() checked that all ranks agree
  std::string weights_sha256;              ///< SHA-256 of every parameter and buffer (weights_sha256())
  int64_t skipped_steps = 0;               ///< steps skipped for a non-finite loss or gradient on some rank
  int64_t resumed_from_step = -1;          ///< the checkpoint's step when resumed, else -1
  bool stopped_early = false;              ///< stop_after() ended the run before total_steps()
  std::string last_checkpoint;             ///< directory of the last checkpoint written ("" = none)
  std::vector<uint64_t> rank_checksums;    ///< every rank's, in rank order
  bool weights_agree = true;               ///< false for "noop", whose ranks are not averaged (not checked)
  // Medians over steps (the first step left out when there are more), in milliseconds.
  double step_ms_median = 0;               ///< a whole step: data, forward, backward, reduce, optimizer
  double forward_backward_ms = 0;          ///< forward, loss all-gather and backward (overlapped work included)
  double communicate_ms = 0;               ///< blocked in reduce(): compression and communication not hidden
  double compress_ms = 0;                  ///< the reducer's compute outside collectives (may overlap backward)
  double collective_ms = 0;                ///< the reducer's time blocked in collectives (may overlap backward)
  double optimizer_ms = 0;                 ///< optimizer.step()
};

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
  void set_metrics(MetricsWriter* metrics) { metrics_ = metrics; }
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
  // Mean loss over ranks, or NaN with `bad` naming the ranks whose loss was not finite.
  double gather_loss(double local, std::string* bad);
  void check_startup_agreement();

  std::pair<double, double> evaluate();  // (accuracy, mean loss) over the evaluated test examples
  uint64_t check_weights(std::vector<uint64_t>* all);
  void clip_gradients(double max_norm);  // ĝ to global L2 norm max_norm

  TrainOptions options_;
  data::Dataset train_, test_;
  std::shared_ptr<comm::Communicator> comm_;
  std::shared_ptr<models::Classifier> model_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  int64_t steps_per_epoch_ = 0;
  std::ostream* log_ = nullptr;
  MetricsWriter* metrics_ = nullptr;
  StepHook hook_;
  GradHook grad_hook_;
  // The loop's position and running sums: what a checkpoint holds besides the model, optimizer and
  // reducer.
  int64_t step_ = 0;
  int64_t skipped_ = 0;
  std::deque<double> recent_;  // the last metrics_every mean losses
  double row_loss_ = 0, row_ms_ = 0;
  int64_t row_n_ = 0;
  std::vector<double> epoch_accuracy_;
  double test_accuracy_ = 0, test_loss_ = 0, elapsed_before_ = 0;
  int64_t resumed_from_ = -1;
  bool last_step_skipped_ = false;
  std::string train_fingerprint_, test_fingerprint_;  // data_fingerprint(), computed once
  std::string checkpoint_root_;
  std::vector<std::string> resume_notes_;
};

/// FNV-1a over the bytes of every parameter of `module`, in parameter order.
uint64_t weights_checksum(const torch::nn::Module& module);
/// SHA-256 over every parameter and buffer of `module` in order (name, then the raw bytes), as 64
/// hex digits: equal exactly when two runs ended with the same weights.
std::string weights_sha256(const torch::nn::Module& module);
/// "0x" followed by 16 hex digits.
std::string checksum_hex(uint64_t checksum);

}  // namespace train
}  // namespace lowrank
