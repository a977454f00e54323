#pragma once
// LoopState: the training loop's position and running sums, i.e. what a checkpoint holds besides
// the model, the optimizer and the reducer. Its fields are listed once, in fields(), with their
// checkpoint keys (as AdamParamState::serialize lists its own); state_dict() and load_state_dict()
// both walk that list, so saving and loading cannot disagree.
//
// The keys and tensor types are the checkpoint format since version 1 (checkpoint.h):
//   trainer/step            int64 [1]   step
//   trainer/skipped         int64 [1]   skipped_steps
//   trainer/recent          double [n]  recent_loss, oldest first
//   trainer/row             double [3]  row_loss sum, row_ms sum, their count
//   trainer/epoch_accuracy  double [k]  epoch_accuracy
//   trainer/test            double [3]  test_accuracy, test_loss, elapsed_before
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "lowrank/train/meter.h"

namespace lowrank {
namespace train {

struct LoopState {
  /// `metrics_every` (>= 1): the window of recent_loss.
  explicit LoopState(int64_t metrics_every = 1) : recent_loss(metrics_every) {}

  /// Optimizer steps (batches) done so far, skipped ones included: the 0-based index of the next
  /// step. "step N" in progress lines and metrics rows is this count after step N−1 ran.
  int64_t step = 0;
  /// Steps skipped for a non-finite loss or gradient on some rank.
  int64_t skipped_steps = 0;
  /// Mean losses over ranks of the last metrics_every applied steps (TrainResult::final_train_loss).
  WindowMeter recent_loss;
  /// Mean loss over ranks and wall milliseconds of the applied steps since the last metrics row.
  AverageMeter row_loss, row_ms;
  /// Test accuracy at the end of each epoch.
  std::vector<double> epoch_accuracy;
  /// The last evaluation's accuracy and mean loss (0 before any).
  double test_accuracy = 0, test_loss = 0;
  /// Seconds trained before the current run() (a resumed run's earlier time), as of the checkpoint.
  double elapsed_before = 0;

  /// Every field with its key, in checkpoint order. `Self` is LoopState or const LoopState, so
  /// the one list serves reading and writing; fields packed into one tensor come as a std::tie.
  template <typename Self, typename V>
  static void fields(Self& s, V&& v) {
    v("trainer/step", s.step);
    v("trainer/skipped", s.skipped_steps);
    v("trainer/recent", s.recent_loss);
    v("trainer/row", std::tie(s.row_loss, s.row_ms));
    v("trainer/epoch_accuracy", s.epoch_accuracy);
    v("trainer/test", std::tie(s.test_accuracy, s.test_loss, s.elapsed_before));
  }

  /// (key, tensor) for every field, in fields() order.
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;
  /// Reads every field from `get(key)` (which throws for a missing key). Throws naming `where`
  /// and the key when a tensor has the wrong type or size; nothing is changed then.
  void load_state_dict(const std::function<at::Tensor(const std::string& key)>& get, const std::string& where);
};

}  // namespace train
}  // namespace lowrank
