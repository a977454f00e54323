#include "lowrank/launch/worker.h"

#include "lowrank/launch/compressor_choice.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>

#include "lowrank/comm/agreement.h"
#include "lowrank/comm/launch_env.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/launch/error_report.h"
#include "lowrank/launch/memory.h"
#include "lowrank/launch/outputs.h"
#include "lowrank/launch/run_messages.h"
#include "lowrank/launch/worker_env.h"
#include "lowrank/launch/worker_threads.h"
#include "lowrank/report/metrics_writer.h"
#include "lowrank/report/summary.h"
#include "lowrank/train/trainer.h"
#include "lowrank/util/blas_info.h"
#include "test_hooks.h"

namespace lowrank {
namespace launch {

using report::RunInfo;
using train::Trainer;
using train::TrainOptions;
using train::TrainResult;

namespace {

struct Datasets {
  data::Dataset train, test;
};

std::string error_text(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

// The job this worker belongs to: the launchers' variables, then --master-addr/--master-port.
comm::LaunchEnv join_job(const JobOptions& job, bool alone) {
  comm::LaunchEnv env = alone ? comm::LaunchEnv{} : comm::detect_launch_env();
  if (!alone && !started_by_launcher()) {
    // Said first: stray RANK/SLURM_* variables must not silently turn a plain run into a worker.
    std::cout << "lowrank train: joining a " << (env.source == "none" ? "torchrun-style" : env.source)
              << " job as rank " << env.rank << " of " << env.world_size
              << " (from the launcher variables in the environment; pass --nproc N to start N local workers "
                 "instead)"
              << std::endl;
  }
  if (!job.master_addr().empty()) env.master_addr = job.master_addr();
  if (job.master_port() > 0) env.master_port = job.master_port();
  return env;
}

// What summary.json and rank<r>.json record of the launch (the BLAS once the threads are set).
RunInfo run_info(const comm::LaunchEnv& env, const JobOptions& job, bool alone) {
  RunInfo info;
  info.launch = started_by_launcher() ? "launcher" : (env.source == "none" ? "local" : env.source);
  info.world_size = env.world_size;
  info.rank = env.rank;
  info.threads = choose_threads(job.threads(), cores_available(), alone ? 1 : local_processes());
  info.master_addr = env.world_size > 1 ? env.master_addr : "";
  info.master_port = env.world_size > 1 ? env.master_port : 0;
  info.hostname = job.hostname();
  info.timeout_seconds = job.timeout_seconds();
  return info;
}

// Sets torch's and the BLAS's threads to info.threads and records the BLAS in `info`.
BlasInfo set_threads(RunInfo& info) {
  at::set_num_threads(info.threads);
  set_blas_threads(info.threads);
  const BlasInfo blas = blas_info();
  info.blas = blas.name;
  info.blas_threads = blas.blas_threads;
  return blas;
}

std::shared_ptr<comm::Communicator> rendezvous(const comm::LaunchEnv& env, const JobOptions& job) {
  comm::CommOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(job.timeout_seconds() * 1000)));
  co.hostname = job.hostname();
  const bool quiet_rank = started_by_launcher() && env.rank != 0;  // its stdout is /dev/null anyway
  if (!quiet_rank) co.on_wait = [](const std::string& line) { std::cout << "lowrank train: " << line << std::endl; };
  return comm::make_tcp_communicator(env.rank, env.world_size, env.master_addr, env.master_port, co);
}

// External launches: rank 0 checks the memory and the output directories now (a local launch did
// before it started the workers); every rank learns the outcome. The locks are rank 0's.
OutputLocks check_outputs(comm::Communicator& comm, const TrainOptions& options, const JobOptions& job, bool alone) {
  const bool prepared = alone || started_by_launcher();
  if (!prepared)
    run_together(comm, "checking the memory the activations need",
                 [&] { check_activation_memory(options, local_processes()); });
  OutputLocks locks;
  run_together(comm, "preparing the output directories", [&] {
    if (comm.rank() == 0 && !prepared) locks = prepare_outputs(options, job.overwrite());
  });
  return locks;
}

Datasets load_data(comm::Communicator& comm, const TrainOptions& options) {
  Datasets d;
  // Text is prepared once (the cache's lock makes concurrent ranks wait for the first).
  run_together(comm, "loading the data", [&] {
    d.train = data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTrain, options.text_options());
    d.test = data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTest, options.text_options());
  });
  return d;
}

// A run resumed at its last step has nothing to train. A finished run's outputs (summary.json with
// its timings) stay as they are: true. A run that reached its last checkpoint but failed writing
// its outputs (a full disk) gets them now: false. Rank 0 sees --out and decides for every rank.
bool already_finished(comm::Communicator& comm, const TrainOptions& options, int64_t resumed, int64_t total_steps) {
  const bool lead = comm.rank() == 0;
  at::Tensor finished = at::zeros({1}, at::kLong);
  if (lead)
    finished[0] = options.out_dir().empty() || ::access((options.out_dir() + "/summary.json").c_str(), F_OK) == 0;
  comm.broadcast_(finished, 0);
  if (finished.item<int64_t>() != 0) {
    if (lead)
      std::cout << "the checkpoint is at the run's last step (" << resumed << " of " << total_steps
                << "): the run is finished, nothing to do"
                << (options.out_dir().empty() ? std::string() : "; " + options.out_dir() + " is left as it is")
                << std::endl;
    return true;
  }
  if (lead)
    std::cout << "the checkpoint is at the run's last step, but " << options.out_dir()
              << " has no summary.json (the run failed writing its outputs): writing them now" << std::endl;
  return false;
}

// Every rank's files first, then the summary: "done" is said only once all of them are written.
void write_outputs(comm::Communicator& comm, const TrainOptions& options, const RunInfo& info,
                   const TrainResult& result, report::MetricsWriter* metrics) {
  if (options.out_dir().empty()) return;
  const int fail_rank = fail_outputs_rank();
  run_together(comm, "writing the run's outputs to " + options.out_dir(), [&] {
    fail_outputs_if(fail_rank, comm.rank());
    if (metrics) metrics->close();
    report::write_rank_record(options.out_dir(), info, result);
  });
  run_together(comm, "writing " + options.out_dir() + "/summary.json", [&] {
    if (comm.rank() == 0) report::write_summary(options.out_dir(), options, info, result);
  });
}

int worker_body(const TrainOptions& given, const JobOptions& job, bool alone) {
  const comm::LaunchEnv env = join_job(job, alone);
  RunInfo info = run_info(env, job, alone);
  const BlasInfo blas = set_threads(info);
  const std::shared_ptr<comm::Communicator> comm = rendezvous(env, job);
  const bool lead = comm->rank() == 0;
  const TrainOptions options = given.compressor() == train::kAutoCompressor
                                   ? resolve_auto_compressor(*comm, given, lead ? &std::cout : nullptr)
                                   : given;
  const OutputLocks locks = check_outputs(*comm, options, job, alone);  // held until this worker returns
  const Datasets data = load_data(*comm, options);
  Trainer trainer(options, data.train, data.test, comm);
  const int64_t resumed = options.resume().empty() ? -1 : trainer.resume_from(options.resume());
  if (lead) print_start(options, info, trainer, data.train, data.test, blas, resumed);
  if (resumed >= 0 && resumed >= trainer.total_steps() &&
      already_finished(*comm, options, resumed, trainer.total_steps()))
    return 0;
  if (resumed >= 0 && lead) remove_finished_outputs(options.out_dir());

  std::unique_ptr<report::MetricsWriter> metrics;
  if (lead && !options.out_dir().empty()) metrics = std::make_unique<report::MetricsWriter>(options.out_dir(), resumed);
  trainer.set_log(lead ? &std::cout : nullptr);
  trainer.set_metrics(metrics.get());
  install_test_hooks(trainer, comm->rank());
  const TrainResult result = trainer.run();
  if (result.stopped_early) {
    if (lead) print_stopped_early(options, trainer, result);
    return 0;  // metrics.csv.partial stays for the resumed run; no summary for an unfinished run
  }
  write_outputs(*comm, options, info, result, metrics.get());
  if (lead) print_end(info, result);
  if (lead && !options.out_dir().empty()) print_loss_plot(options.out_dir());
  return 0;
}

}  // namespace

int run_worker(const TrainOptions& options, const JobOptions& job, bool alone) {
  try {
    return worker_body(options, job, alone);
  } catch (const std::exception& e) {
    if (started_by_launcher() && report_error_to_launcher(error_text(e))) return 1;
    throw;
  }
}

}  // namespace launch
}  // namespace lowrank
