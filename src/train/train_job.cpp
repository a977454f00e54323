#include "lowrank/train/train_job.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <dirent.h>
#include <unistd.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>

#include "lowrank/data/dataset_factory.h"
#include "lowrank/comm/launch_env.h"
#include "lowrank/reducer/agreement.h"
#include "lowrank/train/blas_info.h"
#include "lowrank/train/checkpoint.h"
#include "lowrank/train/launcher.h"
#include "lowrank/train/metrics_writer.h"
#include "lowrank/models/llama.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/train/plot.h"
#include "lowrank/train/summary.h"
#include "lowrank/train/trainer.h"

namespace lowrank {
namespace train {
namespace {

constexpr const char* kFailRankEnv = "LOWRANK_TEST_FAIL_RANK";
constexpr const char* kFailStepEnv = "LOWRANK_TEST_FAIL_STEP";
constexpr const char* kKillRankEnv = "LOWRANK_TEST_KILL_RANK";
constexpr const char* kKillStepEnv = "LOWRANK_TEST_KILL_STEP";
constexpr const char* kHangRankEnv = "LOWRANK_TEST_HANG_RANK";
constexpr const char* kHangStepEnv = "LOWRANK_TEST_HANG_STEP";
constexpr const char* kNanRankEnv = "LOWRANK_TEST_NAN_RANK";
constexpr const char* kNanStepEnv = "LOWRANK_TEST_NAN_STEP";
constexpr const char* kFailOutputsRankEnv = "LOWRANK_TEST_FAIL_OUTPUTS_RANK";
constexpr const char* kCheckOnlyEnv = "LOWRANK_CHECK_ONLY";

// Files lowrank train writes into --out (removed by --overwrite; nothing else is).
bool all_digits(const std::string& s) { return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit); }

bool is_own_output(const std::string& name) {
  static const std::vector<std::string> files = {"metrics.csv", "metrics.csv.partial", "summary.json",
                                                 "loss.png", "loss.gp", "loss.dat"};
  for (const auto& f : files) {
    if (name == f) return true;
    // write_file_atomically's temporary: <file>.tmp.<pid>
    if (name.rfind(f + ".tmp.", 0) == 0 && all_digits(name.substr(f.size() + 5))) return true;
  }
  // rank<r>.json and its temporary
  if (name.rfind("rank", 0) != 0) return false;
  const auto dot = name.find(".json");
  if (dot == std::string::npos || !all_digits(name.substr(4, dot - 4))) return false;
  const std::string rest = name.substr(dot + 5);
  return rest.empty() || (rest.rfind(".tmp.", 0) == 0 && all_digits(rest.substr(5)));
}

std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string listing(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < 6; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > 6) os << ", ... (" << names.size() << " entries)";
  return os.str();
}

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
            << test_set.name << " " << test_set.size() << " examples";
  if (train_set.is_tokens())
    std::cout << "\ntext: windows of " << train_set.sequence_length() << " tokens; " << train_set.size() *
                 train_set.sequence_length() << " training and " << test_set.size() * test_set.sequence_length()
              << " validation tokens; tokenizer " << train_set.tokenizer;
  std::cout << "\nmodel: " << o.model() << ", " << models::parameter_count(const_cast<Trainer&>(trainer).model())
            << " parameters" << std::endl;
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
  std::cout << "; sent " << std::setprecision(2) << 4e-6 * double(r.reducer.floats_sent)
            << " MB per worker (dense: " << 4e-6 * double(r.reducer.dense_floats) << " MB), compression ratio "
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

// A language model's activations grow with seq_len² (attention): a --seq-len that cannot fit is
// refused before any process starts, instead of the kernel's OOM killer taking the machine down.
void check_activation_memory(const TrainOptions& options, int64_t workers_here) {
  if (!options.language_model()) return;
  const auto lo = models::llama_options(options.input_spec(), options.model_size());
  const int64_t need = models::llama_activation_bytes(lo, options.batch_size()) * workers_here;
  const int64_t have = available_memory_bytes();
  if (have < 0) return;  // unknown: nothing to compare with
  TORCH_CHECK(need <= have, "--seq-len ", lo.seq_len(), " at --batch-size ", options.batch_size(), " needs about ",
              need >> 20, " MiB of activations for ", workers_here, " worker", workers_here > 1 ? "s" : "",
              " on this machine (attention grows with seq_len squared), but only ", have >> 20,
              " MiB are available: lower --seq-len or --batch-size, or start fewer workers per machine");
  if (need > have / 2)
    std::cout << "warning: the activations need about " << (need >> 20) << " MiB of the " << (have >> 20)
              << " MiB available on this machine" << std::endl;
}

// One worker: rendezvous, data, training, outputs.
int worker_body(const TrainOptions& options, const JobOptions& job, bool alone) {
  comm::LaunchEnv env = alone ? comm::LaunchEnv{} : comm::detect_launch_env();
  RunInfo info;
  info.launch = started_by_launcher() ? "launcher" : (env.source == "none" ? "local" : env.source);
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
  const bool quiet_rank = started_by_launcher() && env.rank != 0;  // its stdout is /dev/null anyway
  if (!quiet_rank) co.on_wait = [](const std::string& line) { std::cout << "lowrank train: " << line << std::endl; };
  std::shared_ptr<comm::Communicator> comm =
      comm::make_tcp_communicator(env.rank, env.world_size, env.master_addr, env.master_port, co);
  const bool lead = comm->rank() == 0;
  // External launches: rank 0 checks the output directories now; every rank learns the outcome.
  const bool prepared = alone || started_by_launcher();
  if (!prepared)  // (a local launch checked before it started the workers)
    run_together(*comm, "checking the memory the activations need",
                 [&] { check_activation_memory(options, local_processes()); });
  OutputLocks locks;  // held by rank 0 until this worker returns
  run_together(*comm, "preparing the output directories", [&] {
    if (lead && !prepared) locks = prepare_outputs(options, job.overwrite());
  });

  data::Dataset train_set, test_set;
  // Text is prepared once (the cache's lock makes concurrent ranks wait for the first).
  run_together(*comm, "loading the data", [&] {
    train_set = data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTrain, options.text_options());
    test_set = data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTest, options.text_options());
  });
  Trainer trainer(options, train_set, test_set, comm);
  int64_t resumed = -1;
  if (!options.resume().empty()) resumed = trainer.resume_from(options.resume());
  if (lead) {
    print_start(options, info, trainer, train_set, test_set);
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
  if (resumed >= 0 && resumed >= trainer.total_steps()) {
    // Nothing to train. A finished run's outputs (summary.json with its timings) stay as they are;
    // a run that reached its last checkpoint but failed writing its outputs (a full disk) gets them
    // now. Rank 0 sees --out and decides for every rank.
    at::Tensor finished = at::zeros({1}, at::kLong);
    if (lead)
      finished[0] = options.out_dir().empty() || ::access((options.out_dir() + "/summary.json").c_str(), F_OK) == 0;
    comm->broadcast_(finished, 0);
    if (finished.item<int64_t>() != 0) {
      if (lead)
        std::cout << "the checkpoint is at the run's last step (" << resumed << " of " << trainer.total_steps()
                  << "): the run is finished, nothing to do"
                  << (options.out_dir().empty() ? std::string() : "; " + options.out_dir() + " is left as it is")
                  << std::endl;
      return 0;
    }
    if (lead)
      std::cout << "the checkpoint is at the run's last step, but " << options.out_dir()
                << " has no summary.json (the run failed writing its outputs): writing them now" << std::endl;
  }
  if (resumed >= 0 && lead) remove_finished_outputs(options.out_dir());

  std::unique_ptr<MetricsWriter> metrics;
  if (lead && !options.out_dir().empty()) metrics = std::make_unique<MetricsWriter>(options.out_dir(), resumed);
  trainer.set_log(lead ? &std::cout : nullptr);
  trainer.set_metrics(metrics.get());
  const int fail_rank = env_int(kFailRankEnv, -1);
  if (fail_rank == comm->rank()) {
    const int fail_step = env_int(kFailStepEnv, 0);
    trainer.set_step_hook([fail_rank, fail_step](int64_t step) {
      TORCH_CHECK(step != fail_step, "injected failure at step ", step, " (", kFailRankEnv, "=", fail_rank, ")");
    });
  }

  const int kill_rank = env_int(kKillRankEnv, -1);
  if (kill_rank == comm->rank()) {
    const int kill_step = env_int(kKillStepEnv, 0);
    trainer.set_step_hook([kill_step](int64_t step) {
      if (step == kill_step) ::raise(SIGKILL);
    });
  }
  const int hang_rank = env_int(kHangRankEnv, -1);
  if (hang_rank == comm->rank()) {
    const int hang_step = env_int(kHangStepEnv, 0);
    trainer.set_step_hook([hang_step](int64_t step) {
      if (step != hang_step) return;
      std::cerr << "lowrank test hook: stopping (SIGSTOP) at step " << step << std::endl;
      ::raise(SIGSTOP);  // stops answering, as a hung process would
    });
  }
  const int nan_rank = env_int(kNanRankEnv, -1);
  if (nan_rank == comm->rank()) {
    const int nan_step = env_int(kNanStepEnv, 0);
    auto hook = std::make_shared<int64_t>(-1);  // the tensor hook's handle while one is registered
    trainer.set_grad_hook([nan_step, hook](int64_t step, torch::nn::Module& model) {
      at::Tensor first = model.parameters().front();
      if (*hook >= 0) {
        first.remove_hook(static_cast<unsigned>(*hook));
        *hook = -1;
      }
      if (step != nan_step) return;
      *hook = first.register_hook([](const at::Tensor& g) {
        at::Tensor bad = g.clone();
        bad.view(-1)[0] = std::nan("");
        return bad;
      });
    });
  }

  const TrainResult result = trainer.run();
  if (result.stopped_early) {
    if (lead)
      std::cout << "stopped after " << options.stop_after() << " steps of this run, at step " << result.steps << " of "
                << trainer.total_steps()
                << (result.last_checkpoint.empty()
                        ? std::string(" (no --checkpoint-dir: nothing to resume from)")
                        : "; checkpoint " + result.last_checkpoint + "; continue with --resume " +
                              trainer.checkpoint_root())
                << std::endl;
    return 0;  // metrics.csv.partial stays for the resumed run; no summary for an unfinished run
  }
  if (!options.out_dir().empty()) {
    // Every rank's files first, then the summary: "done" is said only once all of them are written.
    const int fail_outputs = env_int(kFailOutputsRankEnv, -1);
    run_together(*comm, "writing the run's outputs to " + options.out_dir(), [&] {
      TORCH_CHECK(fail_outputs != comm->rank(), "injected failure writing the outputs (", kFailOutputsRankEnv, "=",
                  fail_outputs, ")");
      if (metrics) metrics->close();
      write_rank_record(options.out_dir(), info, result);
    });
    run_together(*comm, "writing " + options.out_dir() + "/summary.json", [&] {
      if (lead) write_summary(options.out_dir(), options, info, result);
    });
  }
  if (lead) print_end(info, result);
  if (lead && !options.out_dir().empty()) {
    // The loss curve, for a look without tools; a machine without gnuplot still has its run.
    try {
      std::cout << "plot: " << plot_run_loss(options.out_dir()) << std::endl;
    } catch (const std::exception& e) {
      const auto* c = dynamic_cast<const c10::Error*>(&e);
      std::cout << "warning: no loss plot: " << (c ? c->what_without_backtrace() : e.what()) << std::endl;
    }
  }
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
  // (1e6 s is 11.6 days: far beyond any sane collective, and far from overflowing milliseconds.)
  TORCH_CHECK(std::isfinite(timeout_seconds()) && timeout_seconds() >= 0.001 && timeout_seconds() <= 1e6,
              "timeout must be a number of seconds in [0.001, 1e6], got ", timeout_seconds());
  TORCH_CHECK(!nproc().has_value() || *nproc() <= 1024, "nproc must be <= 1024, got ", nproc().value_or(0));
  TORCH_CHECK(threads() >= 0 && threads() <= 1024, "threads must lie in [0, 1024] (0 = automatic), got ", threads());
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

OutputLocks prepare_outputs(const TrainOptions& options, bool overwrite) {
  const bool resuming = !options.resume().empty();
  // Validate first: a typo in --resume must not cost a file.
  const std::string resume_root = resuming ? checkpoint_root_of(find_checkpoint(options.resume()).dir) : "";
  // Where this run's checkpoints go (Trainer::checkpoint_root).
  const std::string ck = !options.checkpoint_dir().empty() ? options.checkpoint_dir() : resume_root;
  const std::string& out = options.out_dir();

  // Lock every directory this run writes before looking into it (one lock when they coincide).
  OutputLocks locks;
  if (!out.empty()) {
    make_directories(out);
    locks.emplace_back(out, "output directory (--out)");
  }
  if (!ck.empty()) {
    make_directories(ck);
    if (!same_path(ck, out)) locks.emplace_back(ck, "checkpoint directory");
  }

  // Everything is checked before anything is removed: a refusal leaves every file as it was.
  std::vector<std::string> remove_from_out;
  if (!out.empty()) {
    const bool out_holds_checkpoints = same_path(out, ck) || same_path(out, resume_root);
    std::vector<std::string> entries;
    for (const auto& e : entries_of(out)) {
      const std::string path = out + "/" + e;
      if (e == kLockFileName) continue;
      if (same_path(path, ck) || same_path(path, resume_root)) continue;  // checked below
      if (out_holds_checkpoints && is_checkpoint_entry(e)) continue;          // (--out X --checkpoint-dir X)
      entries.push_back(e);
    }
    std::vector<std::string> foreign;
    for (const auto& e : entries)
      if (!is_own_output(e)) foreign.push_back(e);
    // A resumed run continues metrics.csv(.partial) here and leaves anything else alone (a user's
    // train.log from `| tee`); its old summary and rank records go only once the checkpoint has
    // loaded (remove_finished_outputs), so a refused resume loses nothing.
    if (!resuming && !entries.empty()) {
      TORCH_CHECK(overwrite, "output directory ", out, " is not empty (", listing(entries),
                  "): pass --overwrite to replace a previous run's files, --resume CHECKPOINT_DIR to continue it, "
                  "or choose another --out");
      TORCH_CHECK(foreign.empty(), "output directory ", out, " holds files lowrank did not write (", listing(foreign),
                  "); --overwrite only removes lowrank's own (metrics.csv, summary.json, rank<r>.json, loss.*): choose "
                  "another --out");
      remove_from_out = entries;
    }
  }
  std::vector<CheckpointRef> remove_checkpoints;
  if (!options.checkpoint_dir().empty() && !(resuming && same_path(options.checkpoint_dir(), resume_root))) {
    // A fresh run, or a resumed one writing somewhere else than where it resumes from: the
    // directory must not hold another run's checkpoints.
    const std::string& dir = options.checkpoint_dir();
    const auto existing = list_checkpoints(dir);
    if (!existing.empty()) {
      TORCH_CHECK(overwrite, "checkpoint directory ", dir, " already holds checkpoints (newest: step ",
                  existing.back().step, "): pass --resume ", dir, " to continue that run (with no --checkpoint-dir "
                  "or this one), --overwrite to delete them, or choose another --checkpoint-dir");
      std::vector<std::string> foreign;
      for (const auto& c : existing) {
        // never what --resume points at (that would be the same directory)
        TORCH_CHECK(!resuming || !same_path(c.dir, options.resume()), "--overwrite would delete ", c.dir,
                    ", the checkpoint --resume ", options.resume(), " continues from; choose another --checkpoint-dir");
        for (const auto& e : entries_of(c.dir))
          if (!is_checkpoint_file(e)) foreign.push_back(c.dir + "/" + e);
      }
      TORCH_CHECK(foreign.empty(), "checkpoint directory ", dir, " holds files lowrank did not write (",
                  listing(foreign), "); --overwrite only removes checkpoints: move them, or choose another "
                  "--checkpoint-dir");
      remove_checkpoints = existing;
    }
  }
  for (const auto& e : remove_from_out) {
    const std::string path = out + "/" + e;
    TORCH_CHECK(std::remove(path.c_str()) == 0, "--overwrite: cannot remove ", path, ": ", std::strerror(errno));
  }
  for (const auto& c : remove_checkpoints)
    TORCH_CHECK(remove_checkpoint_dir(c.dir), "--overwrite: cannot remove ", c.dir, ": ", std::strerror(errno));
  return locks;
}

void remove_finished_outputs(const std::string& out) {
  if (out.empty()) return;
  for (const auto& e : entries_of(out))
    if (e == "summary.json" || (is_own_output(e) && e.rfind("rank", 0) == 0)) std::remove((out + "/" + e).c_str());
}

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

int run_train_job(const TrainOptions& options, const JobOptions& job) {
  job.validate();
  if (const char* v = std::getenv(kCheckOnlyEnv); v && std::string(v) == "1") {
    // `lowrank compare` checks every config this way before it runs the first: nothing is written.
    options.validate();
    (void)options.make_compressor();
    std::cout << "lowrank train: options valid (" << kCheckOnlyEnv << "=1: nothing run)" << std::endl;
    return 0;
  }
  if (started_by_launcher() || (!job.nproc().has_value() && comm::launched_externally()))
    return run_worker(options, job, /*alone=*/false);

  // Local job: check everything that can be checked before starting a process.
  options.validate();
  check_activation_memory(options, job.nproc().value_or(2));
  // (Text: prepared here once, so that workers find the tokenizer and token ids cached.)
  (void)data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTrain, options.text_options());
  (void)data::load_dataset(options.dataset(), options.data_dir(), data::Split::kTest, options.text_options());
  const OutputLocks locks = prepare_outputs(options, job.overwrite());  // held until the workers are done
  const int nproc = job.nproc().value_or(2);
  if (nproc == 1) return run_worker(options, job, /*alone=*/true);

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

}  // namespace train
}  // namespace lowrank
