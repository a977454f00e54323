#pragma once
// MetricsWriter: metrics.csv of a training run, one row per logged step.
//
// Rows are appended (and flushed) to <dir>/metrics.csv.partial while the run lasts; close()
// renames the file to metrics.csv, so a metrics.csv is always complete and a run that failed
// leaves only the .partial file behind for diagnosis.
#include <cstdint>
#include <fstream>
#include <string>

#include "lowrank/files.h"  // make_directories, write_file_atomically

namespace lowrank {
namespace train {

struct MetricsRow {
  int64_t step = 0;                ///< steps done so far (1-based index of the logged step)
  int64_t epoch = 0;               ///< 1-based epoch of that step
  double train_loss = 0;           ///< mean over ranks and over the steps since the previous row
  double lr = 0;                   ///< learning rate of that step
  double step_ms = 0;              ///< mean wall time per step since the previous row
  int64_t floats_sent = 0;         ///< cumulative floats this rank handed to the reducer's collectives
  int64_t dense_floats = 0;        ///< cumulative floats a dense all-reduce would have sent
  double compression_ratio = 0;    ///< running headline ratio (docs/algorithms.md §8)
  double relative_error = 0;       ///< ‖Δ − C(Δ)‖ / ‖Δ‖ over compressed matrices, last measured step
  double ef_norm = 0;              ///< error-feedback norm, last measured step (every metrics_every steps)
  double test_accuracy = -1;       ///< fraction in [0, 1] when evaluated (epoch ends, eval_every); < 0 = not measured (empty cell)
                                   ///< (a language model's: next-token accuracy on the validation split)
  int64_t skipped_steps = 0;       ///< cumulative steps skipped for a non-finite loss or gradient
  double elapsed_s = 0;            ///< seconds since training started
  double val_loss = -1;            ///< mean cross-entropy (nats) on the held-out split when evaluated; < 0 = empty cell
  double val_perplexity = -1;      ///< exp(val_loss), language models only; < 0 = empty cell
};

class MetricsWriter {
 public:
  /// Creates `dir` (with parents) and starts <dir>/metrics.csv.partial with the header line.
  /// With resume_step >= 0 (a resumed run), first copies the rows of steps <= resume_step from the
  /// interrupted run's metrics.csv.partial (or metrics.csv) in `dir`, so the file continues.
  explicit MetricsWriter(std::string dir, int64_t resume_step = -1);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const MetricsRow& row);
  /// Renames the file to metrics.csv. Rows can no longer be written.
  void close();
  int64_t rows() const { return rows_; }
  static const char* header();

 private:
  std::string dir_;
  std::ofstream out_;
  int64_t rows_ = 0;
  bool closed_ = false;
};


}  // namespace train
}  // namespace lowrank
