#include "lowrank/train/train_job.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <sched.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "data/dataset_factory.h"
#include "lowrank/comm/launch_env.h"
#include "lowrank/train/blas_info.h"
#include "lowrank/train/launcher.h"
#include "lowrank/train/metrics_writer.h"
#include "lowrank/train/summary.h"
#include "lowrank/train/trainer.h"

namespace lowrank {
namespace train {
namespace {

constexpr const char* kFailRankEnv = "LOWRANK_TEST_FAIL_RANK";
constexpr const char* kFailStepEnv = "LOWRANK_TEST_FAIL_STEP";

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);  // SLURM_NTASKS_PER_NODE may read "2(x3)": the leading number counts
  TORCH_CHECK(end != v && x >= 0, "environment variable ", name, "='", v, "' is not a non-negative integer");
  return static_cast<int>(x);
}

std::string error_text(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

void print_start(const TrainOptions& o, const RunInfo& info, const Trainer& trainer, const data::Dataset& train_set,
                 const data::Dataset& test_set) {
  std::cout << "lowrank train: " << info.world_size << " worker" << (info.world_size > 1 ? "s" : "") << " ("
            << info.launch << ")";
  if (info.world_size > 1) std::cout << ", rendezvous " << info.master_addr << ":" << info.master_port;
  std::cout << ", " << info.threads << " intra-op thread" << (info.threads > 1 ? "s" : "") << " per worker, timeout "
            << info.timeout_seconds << " s\n"
            << "config: " << o << "\n"
            << "reducer: " << trainer.reducer().describe() << "\n"
            << "data: " << train_set.name << " " << train_set.size() << " examples ("
            << train_set.size() / info.world_size << " per worker, batch " << o.batch_size() << ", "
            << trainer.steps_per_epoch() << " steps per epoch, " << trainer.total_steps() << " steps in all), "
            << test_set.name << " " << test_set.size() << " examples" << std::endl;
}

void print_end(const RunInfo& info, const TrainResult& r) {
  std::cout << std::fixed << "done: " << r.steps << " steps in " << std::setprecision(1) << r.wall_seconds
            << " s; test accuracy " << std::setprecision(4) << r.test_accuracy << "; final train loss "
            << r.final_train_loss << "; sent " << std::setprecision(2) << 4e-6 * double(r.reducer.floats_sent)
            << " MB per worker (dense: " << 4e-6 * double(r.reducer.dense_floats) << " MB), compression ratio "
            << std::setprecision(1) << r.reducer.compression_ratio() << "x; ";
  if (r.weights_agree)
    std::cout << "weights identical on all " << info.world_size << " rank" << (info.world_size > 1 ? "s" : "") << " ("
              << checksum_hex(r.weights_checksum) << ")";
  else
    std::cout << "weights not averaged (noop)";
  std::cout << "\nmedian step " << std::setprecision(1) << r.step_ms_median << " ms: forward+backward "
            << r.forward_backward_ms << ", waiting for reduce " << r.communicate_ms << ", optimizer " << r.optimizer_ms
            << " (reducer compute " << r.compress_ms << ", in collectives " << r.collective_ms << ")"
            << std::defaultfloat << std::endl;
}

// One worker: rendezvous, data, training, outputs.
int worker_body(const TrainOptions& options, const JobOptions& job, bool alone) {
  comm::LaunchEnv env = alone ? comm::LaunchEnv{} : comm::detect_launch_env();
  RunInfo info;
  info.launch = started_by_launcher() ? "launcher" : (env.source == "none" ? "local" : env.source);
  if (!job.master_addr().empty()) env.master_addr = job.master_addr();
  if (job.master_port() > 0) env.master_port = job.master_port();
  info.world_size = env.world_size;
  info.rank = env.rank;
  info.threads = choose_threads(job.threads(), cores_available(), alone ? 1 : local_processes());
  info.master_addr = env.world_size > 1 ? env.master_addr : "";
  info.master_port = env.world_size > 1 ? env.master_port : 0;
  info.hostname = job.hostname();
  info.timeout_seconds = job.timeout_seconds();
  at::set_num_threads(info.threads);
  set_blas_threads(info.threads);
  const BlasInfo blas = blas_info();
  info.blas = blas.name;
  info.blas_threads = blas.blas_threads;

  comm::CommOptions co;
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(std::llround(job.timeout_seconds() * 1000)));
  co.hostname = job.hostname();
  std::shared_ptr<comm::Communicator> comm =
      comm::make_tcp_communicator(env.rank, env.world_size, env.master_addr, env.master_port, co);
  const bool lead = comm->rank() == 0;

  data::Dataset train_set = data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTrain);
  data::Dataset test_set = data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTest);
  Trainer trainer(options, train_set, test_set, comm);
  if (lead) {
    print_start(options, info, trainer, train_set, test_set);
    std::cout << blas.describe() << std::endl;
    if (blas.reference)
      std::cout << "warning: torch runs on the reference BLAS (" << blas.library
                << "), about 2x slower than OpenBLAS; install Debian's libopenblas0-pthread (scripts/setup.sh does)"
                << std::endl;
    if (!trainer.reducer().compressor().communicates())
      std::cout << "note: compressor noop sends nothing: every rank trains on its own gradients (a timing "
                   "baseline, not data-parallel training); the weights are not checked for agreement"
                << std::endl;
  }

  std::unique_ptr<MetricsWriter> metrics;
  if (lead && !options.out_dir().empty()) metrics = std::make_unique<MetricsWriter>(options.out_dir());
  trainer.set_log(lead ? &std::cout : nullptr);
  trainer.set_metrics(metrics.get());
  const int fail_rank = env_int(kFailRankEnv, -1);
  if (fail_rank == comm->rank()) {
    const int fail_step = env_int(kFailStepEnv, 0);
    trainer.set_step_hook([fail_rank, fail_step](int64_t step) {
      TORCH_CHECK(step != fail_step, "injected failure at step ", step, " (", kFailRankEnv, "=", fail_rank, ")");
    });
  }

  const TrainResult result = trainer.run();
  if (!options.out_dir().empty()) {
    if (metrics) metrics->close();
    write_rank_record(options.out_dir(), info, result);
    if (lead) write_summary(options.out_dir(), options, info, result);
  }
  if (lead) print_end(info, result);
  return 0;
}

int run_worker(const TrainOptions& options, const JobOptions& job, bool alone) {
  try {
    return worker_body(options, job, alone);
  } catch (const std::exception& e) {
    if (started_by_launcher() && report_error_to_launcher(error_text(e))) return 1;
    throw;
  }
}

}  // namespace

void JobOptions::validate() const {
  TORCH_CHECK(!nproc().has_value() || *nproc() >= 1, "nproc must be >= 1, got ", nproc().value_or(0));
  TORCH_CHECK(master_port() >= 0 && master_port() < 65536, "master_port must lie in [1, 65535] (0 = automatic), got ",
              master_port());
  TORCH_CHECK(std::isfinite(timeout_seconds()) && timeout_seconds() >= 0.001,
              "timeout must be a number of seconds >= 0.001, got ", timeout_seconds());
  TORCH_CHECK(threads() >= 0, "threads must be >= 0 (0 = automatic), got ", threads());
}

int cores_available() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

int local_processes() {
  for (const char* name : {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"}) {
    const int v = env_int(name, 0);
    if (v > 0) return v;
  }
  return 1;
}

int choose_threads(int requested, int cores, int processes) {
  TORCH_CHECK(requested >= 0, "threads must be >= 0 (0 = automatic), got ", requested);
  if (requested > 0) return requested;
  return std::max(1, cores / std::max(1, processes));
}

int run_train_job(const TrainOptions& options, const JobOptions& job) {
  job.validate();
  if (started_by_launcher() || (!job.nproc().has_value() && comm::launched_externally()))
    return run_worker(options, job, /*alone=*/false);

  // Local job: check everything that can be checked before starting a process.
  options.validate();
  (void)data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTrain);
  (void)data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTest);
  const int nproc = job.nproc().value_or(2);
  if (nproc == 1) return run_worker(options, job, /*alone=*/true);

  LaunchOptions lo;
  lo.nproc(nproc).master_addr(job.master_addr().empty() ? "127.0.0.1" : job.master_addr()).master_port(
      job.master_port());
  std::cout << "lowrank train: starting " << nproc << " worker processes" << std::endl;
  launch_local(lo);
  return 0;
}

}  // namespace train
}  // namespace lowrank
