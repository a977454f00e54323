#include "lowrank/launch/run_messages.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "lowrank/models/model_factory.h"
#include "lowrank/report/plot.h"
#include "lowrank/train/checkpoint.h"

namespace lowrank {
namespace launch {

using report::RunInfo;
using train::checksum_hex;
using train::Trainer;
using train::TrainOptions;
using train::TrainResult;

namespace {

// Workers, configuration, reducer, data and model.
void print_setup(const TrainOptions& o, const RunInfo& info, const Trainer& trainer, const data::Dataset& train_set,
                 const data::Dataset& test_set) {
  std::cout << "lowrank train: " << info.world_size << " worker" << (info.world_size > 1 ? "s" : "") << " ("
            << info.launch << ")";
  if (info.world_size > 1) std::cout << ", rendezvous " << info.master_addr << ":" << info.master_port;
  std::cout << ", " << info.threads << " intra-op thread" << (info.threads > 1 ? "s" : "") << " per worker, timeout "
            << info.timeout_seconds << " s\n"
            << "config: " << o << "\n"
            << "reducer: " << trainer.reducer().describe() << "\n";
  const std::string plan = trainer.reducer().compressor().rank_plan_text();
  if (!plan.empty()) std::cout << "rank: " << plan << " (the ranks of every plan: summary.json, mean_rank in metrics.csv)\n";
  std::cout << "data: " << train_set.name << " " << train_set.size() << " examples ("
            << train_set.size() / info.world_size << " per worker, batch " << o.batch_size() << ", "
            << trainer.steps_per_epoch() << " steps per epoch, " << trainer.total_steps() << " steps in all), "
            << test_set.name << " " << test_set.size() << " examples";
  if (train_set.is_tokens())
    std::cout << "\ntext: windows of " << train_set.sequence_length() << " tokens; " << train_set.size() *
                 train_set.sequence_length() << " training and " << test_set.size() * test_set.sequence_length()
              << " validation tokens; tokenizer " << train_set.tokenizer;
  std::cout << "\nmodel: " << o.model() << ", " << models::parameter_count(const_cast<Trainer&>(trainer).model())
            << " parameters" << std::endl;
}

// The BLAS, notes and warnings, and where a resumed run continues from.
void print_notes(const TrainOptions& options, const Trainer& trainer, const BlasInfo& blas, int64_t resumed) {
  std::cout << blas.describe() << std::endl;
  if (blas.reference)
    std::cout << "warning: torch runs on the reference BLAS (" << blas.library
              << "), about 2x slower than OpenBLAS; install Debian's libopenblas0-pthread (scripts/setup.sh does)"
              << std::endl;
  if (!trainer.reducer().compressor().traits().communicates)
    std::cout << "note: compressor noop sends nothing: every rank trains on its own gradients (a timing "
                 "baseline, not data-parallel training); the weights are not checked for agreement"
              << std::endl;
  for (const auto& w : start_warnings(options, trainer.reducer(), trainer.total_steps())) std::cout << w << std::endl;
  if (resumed >= 0) {
    std::cout << "resumed from step " << resumed << " of " << trainer.total_steps() << " (checkpoint under "
              << options.resume() << ")" << std::endl;
    for (const auto& note : trainer.resume_notes()) std::cout << note << std::endl;
  }
}

}  // namespace

std::vector<std::string> start_warnings(const TrainOptions& options, const GradientReducer& reducer,
                                        int64_t total_steps) {
  std::vector<std::string> out;
  const Compressor& c = reducer.compressor();
  if (c.traits().compresses && reducer.compressed_names().empty()) {
    std::ostringstream w;
    w << "warning: compressor " << options.compressor() << " (" << c.describe()
      << ") compresses none of the parameters: each fails the size rule m*n > " << reducer.options().min_compression_rate()
      << " x (floats it would send)";
    if (options.resolved_compressor_config().has("rank"))
      w << " at rank " << options.resolved_compressor_config().values().at("rank");
    w << ", so this run sends every gradient dense (lower --rank or --min-compression-rate)";
    out.push_back(w.str());
  }
  if (c.traits().compresses && reducer.options().start_iter() >= total_steps)
    out.push_back("warning: --start-iter " + std::to_string(reducer.options().start_iter()) + " >= the run's " +
                  std::to_string(total_steps) + " steps: compression never starts, every step is dense");
  for (const auto& w : reducer.warnings()) out.push_back("warning: " + w);
  return out;
}

void print_start(const TrainOptions& options, const RunInfo& info, const Trainer& trainer,
                 const data::Dataset& train_set, const data::Dataset& test_set, const BlasInfo& blas,
                 int64_t resumed) {
  print_setup(options, info, trainer, train_set, test_set);
  print_notes(options, trainer, blas, resumed);
}

void print_stopped_early(const TrainOptions& options, const Trainer& trainer, const TrainResult& result) {
  std::cout << "stopped after " << options.stop_after() << " steps of this run, at step " << result.steps << " of "
            << trainer.total_steps()
            << (result.last_checkpoint.empty()
                    ? std::string(" (no --checkpoint-dir: nothing to resume from)")
                    : "; checkpoint " + result.last_checkpoint + "; continue with --resume " +
                          trainer.checkpoint_root())
            << std::endl;
}

void print_end(const RunInfo& info, const TrainResult& r) {
  std::cout << std::fixed << "done: " << r.steps << " steps in " << std::setprecision(1) << r.wall_seconds << " s; ";
  if (r.language_model)
    std::cout << "val loss " << std::setprecision(4) << r.test_loss << ", val perplexity " << std::setprecision(2)
              << r.val_perplexity;
  else
    std::cout << "test accuracy " << std::setprecision(4) << r.test_accuracy;
  std::cout << std::setprecision(4) << "; final train loss ";
  if (std::isfinite(r.final_train_loss))
    std::cout << r.final_train_loss;
  else
    std::cout << "not finite (the last step was skipped)";
  if (r.skipped_steps > 0)
    std::cout << "; " << r.skipped_steps << " step" << (r.skipped_steps > 1 ? "s" : "")
              << " skipped (non-finite loss or gradient)";
  std::cout << "; sent " << std::setprecision(2) << 1e-6 * double(r.reducer.bytes_sent)
            << " MB per worker (dense: " << 1e-6 * double(r.reducer.dense_bytes) << " MB), compression ratio "
            << std::setprecision(1) << r.reducer.compression_ratio() << "x; ";
  if (r.weights_agree)
    std::cout << "weights identical on all " << info.world_size << " rank" << (info.world_size > 1 ? "s" : "") << " ("
              << checksum_hex(r.weights_checksum) << ")";
  else
    std::cout << "weights not averaged (noop)";
  std::cout << "\noverlap: ";
  if (r.overlap)
    std::cout << "on (" << r.reducer.buckets_from_backward << " of " << r.reducer.steps * r.buckets_per_step
              << " buckets started during backward)";
  else
    std::cout << "off";
  std::cout << "\nmedian step " << std::setprecision(1) << r.step_ms_median << " ms: forward+backward "
            << r.forward_backward_ms << ", waiting for reduce " << r.communicate_ms << ", optimizer " << r.optimizer_ms
            << " (reducer compute " << r.compress_ms << ", in collectives " << r.collective_ms << ")"
            << std::defaultfloat << std::endl;
}

void print_loss_plot(const std::string& out_dir) {
  try {
    std::cout << "plot: " << report::plot_run_loss(out_dir) << std::endl;
  } catch (const std::exception& e) {
    const auto* c = dynamic_cast<const c10::Error*>(&e);
    std::cout << "warning: no loss plot: " << (c ? c->what_without_backtrace() : e.what()) << std::endl;
  }
}

}  // namespace launch
}  // namespace lowrank
