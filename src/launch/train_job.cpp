#include "lowrank/launch/train_job.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "lowrank/comm/launch_env.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/launch/launcher.h"
#include "lowrank/launch/memory.h"
#include "lowrank/launch/worker.h"

namespace lowrank {
namespace launch {

using train::TrainOptions;

namespace {

constexpr const char* kCheckOnlyEnv = "LOWRANK_CHECK_ONLY";

bool check_only() {
  const char* v = std::getenv(kCheckOnlyEnv);
  return v && std::string(v) == "1";
}

// `lowrank compare` checks every config this way before it runs the first: nothing is written.
int check_options_only(const TrainOptions& options) {
  options.validate();
  if (options.compressor() != train::kAutoCompressor) (void)options.make_compressor();
  std::cout << "lowrank train: options valid (" << kCheckOnlyEnv << "=1: nothing run)" << std::endl;
  return 0;
}

// A local job checks everything that can be checked before starting a process.
void check_before_launch(const TrainOptions& options, const JobOptions& job) {
  options.validate();
  check_activation_memory(options, job.nproc().value_or(2));
  // (Text: prepared here once, so that workers find the tokenizer and token ids cached.)
  (void)data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTrain, options.text_options());
  (void)data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTest, options.text_options());
}

int launch_workers(const JobOptions& job, int nproc) {
  LaunchOptions lo;
  lo.nproc(nproc).master_addr(job.master_addr().empty() ? "127.0.0.1" : job.master_addr()).master_port(
      job.master_port());
  std::cout << "lowrank train: starting " << nproc << " worker processes" << std::endl;
  try {
    launch_local(lo);
  } catch (const LaunchInterrupted& e) {
    std::cerr << "lowrank: " << e.what() << std::endl;
    return 128 + e.signal();
  }
  return 0;
}

}  // namespace

int run_train_job(const TrainOptions& options, const JobOptions& job) {
  job.validate();
  if (check_only()) return check_options_only(options);
  if (started_by_launcher() || (!job.nproc().has_value() && comm::launched_externally()))
    return run_worker(options, job, /*alone=*/false);

  check_before_launch(options, job);
  const OutputLocks locks = prepare_outputs(options, job.overwrite());  // held until the workers are done
  const int nproc = job.nproc().value_or(2);
  if (nproc == 1) return run_worker(options, job, /*alone=*/true);
  return launch_workers(job, nproc);
}

}  // namespace launch
}  // namespace lowrank
