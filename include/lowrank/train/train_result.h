#pragma once
// TrainResult: what Trainer::run() reports (train/trainer.h), summary.json's source.
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/reducer/reducer_stats.h"

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
  std::vector<RankedMatrix> ranks;         ///< every compressed matrix's final rank and (rank=auto) its changes
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

}  // namespace train
}  // namespace lowrank
