#pragma once
// summary.json and rank<r>.json of a training run (`lowrank train --out DIR`).
//
// summary.json (rank 0, written atomically at the end of a finished run; a run stopped early
// writes none): every field is listed and explained in docs/outputs.md, among them
// compression_ratio (docs/algorithms.md §8 headline: Σ dense / Σ sent over compressed steps), the
// timing medians, weights_sha256, skipped_steps, resumed_from_step and config (the resolved
// options and the launch settings).
// rank<r>.json (every rank; on several machines each keeps its own): rank, world_size, steps,
//   final_train_loss, test_accuracy, weights_checksum, weights_sha256.
#include <string>

#include "lowrank/train/train_options.h"
#include "lowrank/train/trainer.h"

namespace lowrank {
namespace report {

/// How the run was launched, for the record.
struct RunInfo {
  int world_size = 1;
  int rank = 0;
  int threads = 1;              ///< intra-op threads per worker
  std::string blas;             ///< the BLAS torch runs on (util/blas_info.h)
  int blas_threads = 0;         ///< its own threads (0 = not known)
  std::string launch = "local"; ///< "local", "launcher", "torchrun", "mpirun", "srun"
  std::string master_addr;      ///< rendezvous address ("" for world size 1)
  int master_port = 0;
  std::string hostname;         ///< gloo device address ("" = derived)
  double timeout_seconds = 0;
};

/// The text of summary.json.
std::string summary_json(const train::TrainOptions& options, const RunInfo& info, const train::TrainResult& result);
/// The text of rank<r>.json.
std::string rank_record_json(const RunInfo& info, const train::TrainResult& result);
/// Writes <dir>/summary.json atomically.
void write_summary(const std::string& dir, const train::TrainOptions& options, const RunInfo& info,
                   const train::TrainResult& result);
/// Writes <dir>/rank<r>.json atomically.
void write_rank_record(const std::string& dir, const RunInfo& info, const train::TrainResult& result);

}  // namespace report
}  // namespace lowrank
