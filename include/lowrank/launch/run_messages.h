#pragma once
// What `lowrank train` tells people on stdout (rank 0 only): the start lines (workers and
// rendezvous, the resolved configuration, the reducer, the data, the model, the BLAS, then notes
// and warnings), and the end lines (results, traffic, agreement of the weights, step timings).
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/data/dataset.h"
#include "lowrank/report/summary.h"
#include "lowrank/train/train_options.h"
#include "lowrank/train/trainer.h"
#include "lowrank/util/blas_info.h"

namespace lowrank {
namespace launch {

/// Lines of "warning: ..." for settings that are legal but almost certainly not meant (a rank so
/// high that nothing is compressed, warm-up longer than the run, ...).
std::vector<std::string> start_warnings(const train::TrainOptions& options, const GradientReducer& reducer,
                                        int64_t total_steps);

/// The start lines, once the trainer is built; `resumed` is the step a --resume continues from,
/// -1 for a fresh run.
void print_start(const train::TrainOptions& options, const report::RunInfo& info, const train::Trainer& trainer,
                 const data::Dataset& train_set, const data::Dataset& test_set, const BlasInfo& blas,
                 int64_t resumed);
/// "stopped after N steps of this run, ..." with how to continue (--stop-after).
void print_stopped_early(const train::TrainOptions& options, const train::Trainer& trainer,
                         const train::TrainResult& result);
/// The end lines of a finished run.
void print_end(const report::RunInfo& info, const train::TrainResult& result);
/// Draws <out_dir>/loss.png and says where, or warns that there is no plot (a machine without
/// gnuplot still has its run).
void print_loss_plot(const std::string& out_dir);

}  // namespace launch
}  // namespace lowrank
