#pragma once
// MetricsRow: what the trainer reports at each logged step, and MetricsSink, where it goes.
// report/metrics_writer.h writes the rows to metrics.csv; tests collect them in memory.
#include <cstdint>

namespace lowrank {
namespace train {

struct MetricsRow {
  int64_t step = 0;                ///< steps done so far (1-based index of the logged step)
  int64_t epoch = 0;               ///< 1-based epoch of that step
  double train_loss = 0;           ///< mean over ranks and over the steps since the previous row
  double lr = 0;                   ///< learning rate of that step
  double step_ms = 0;              ///< mean wall time per step since the previous row
  int64_t bytes_sent = 0;          ///< cumulative bytes this rank handed to the reducer's collectives
  int64_t dense_bytes = 0;         ///< cumulative bytes a dense all-reduce would have sent
  double compression_ratio = 0;    ///< running headline ratio (docs/algorithms.md §8)
  double relative_error = 0;       ///< ‖Δ − C(Δ)‖ / ‖Δ‖ over compressed matrices, last measured step
  double ef_norm = 0;              ///< error-feedback norm, last measured step (every metrics_every steps)
  double test_accuracy = -1;       ///< fraction in [0, 1] when evaluated (epoch ends, eval_every); < 0 = not measured (empty cell)
                                   ///< (a language model's: next-token accuracy on the validation split)
  int64_t skipped_steps = 0;       ///< cumulative steps skipped for a non-finite loss or gradient
  double elapsed_s = 0;            ///< seconds since training started
  double val_loss = -1;            ///< mean cross-entropy (nats) on the held-out split when evaluated; < 0 = empty cell
  double val_perplexity = -1;      ///< exp(val_loss), language models only; < 0 = empty cell
  double mean_rank = 0;            ///< mean rank of the compressed matrices now (rank=auto varies); 0 = empty cell
};

/// Where the trainer hands its rows (Trainer::set_metrics).
class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void write(const MetricsRow& row) = 0;
};

}  // namespace train
}  // namespace lowrank
