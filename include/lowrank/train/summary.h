#pragma once
// summary.json and rank<r>.json of a training run (`lowrank train --out DIR`).
//
// summary.json (rank 0, written last and atomically, so its presence marks a finished run):
//   compressor, rank (the compressor's "rank" option, null when it has none), world_size, model,
//   dataset, steps, steps_per_epoch, epochs, final_train_loss, test_accuracy (fraction in [0, 1]),
//   test_loss, epoch_test_accuracy, floats_sent_per_worker, dense_floats_per_worker,
//   compression_ratio (docs/algorithms.md §8 headline: Σ dense / Σ sent over compressed steps),
//   whole_run_compression_ratio (warm-up included), wall_seconds, weights_checksum,
//   weights_checksums (every rank's), reducer (its one-line description), config (the resolved
//   options: every TrainOptions field plus the launch settings).
// rank<r>.json (every rank; on several machines each keeps its own): rank, world_size, steps,
//   final_train_loss, test_accuracy, weights_checksum.
#include <string>

#include "lowrank/train/train_options.h"
#include "lowrank/train/trainer.h"

namespace lowrank {
namespace train {

/// How the run was launched, for the record.
struct RunInfo {
  int world_size = 1;
  int rank = 0;
  int threads = 1;              ///< intra-op threads per worker
  std::string blas;             ///< the BLAS torch runs on (train/blas_info.h)
  int blas_threads = 0;         ///< its own threads (0 = not known)
  std::string launch = "local"; ///< "local", "launcher", "torchrun", "mpirun", "srun"
  std::string master_addr;      ///< rendezvous address ("" for world size 1)
  int master_port = 0;
  std::string hostname;         ///< gloo device address ("" = derived)
  double timeout_seconds = 0;
};

/// The text of summary.json.
std::string summary_json(const TrainOptions& options, const RunInfo& info, const TrainResult& result);
/// The text of rank<r>.json.
std::string rank_record_json(const RunInfo& info, const TrainResult& result);
/// Writes <dir>/summary.json atomically.
void write_summary(const std::string& dir, const TrainOptions& options, const RunInfo& info,
                   const TrainResult& result);
/// Writes <dir>/rank<r>.json atomically.
void write_rank_record(const std::string& dir, const RunInfo& info, const TrainResult& result);

}  // namespace train
}  // namespace lowrank
