// `lowrank bench`: the reducer's cost per step on a real model's gradients, next to the memory-
// bandwidth floor measured in the same process (docs/performance.md).
//
// One process, world size 1, the model's real gradients from one forward/backward on a real batch.
// Each round runs every configuration for --steps steps (its state carries over between rounds, so
// restarts and refreshes happen at their period) and times a gradient-sized copy_ between them:
// configurations and the floor are interleaved, so a slower or contended core slows all of them
// alike. The floor is 2 copies: reading the gradient and the error buffer and writing the error
// buffer and the output once each is what any error-feedback compressor must do.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "lowrank/util/clock.h"
#include "lowrank/comm/communicator.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/util/files.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "lowrank/util/blas_info.h"
#include "lowrank/util/choices.h"
#include "lowrank/util/stats.h"
#include "lowrank/train/train_options.h"
#include "number_flags.h"

namespace lowrank {
namespace cli {
namespace {

// Limits of --rounds, --steps and --warmup (every timed step is kept: rounds x steps values per
// configuration) and of --threads.
constexpr int64_t kMaxRepeats = 10000;
constexpr int64_t kMaxThreads = 1024;

struct BenchFlags {
  std::string model = "resnet18";
  std::string dataset = "fashion-mnist";
  // GreedyLore without its dense warm-up, so that every timed step is a compressed one.
  std::vector<std::string> configs = {"none", "noop", "powersgd", "powersgd+:restart_period=100",
                                      "greedylore:dense_steps=0", "greedylore:dense_steps=0,scores=local_energy",
                                      "galore"};
  int64_t rank = 4;
  int64_t batch = 32;
  int rounds = 10;
  int steps = 10;
  int warmup = 1;
  int threads = 1;
  std::string json;
};

// "name" or "name:key=value,key=value".
struct Spec {
  std::string text, name;
  Config config;
  // Keys of ReducerOptions (reducer/reducer_options.h) set the reducer's options instead. Here
  // overlap defaults to false: reduce() runs the buckets on the caller's thread after checking
  // first; overlap=true hands them to the reducer's thread, guarded (each keeps a copy of its state
  // until the ranks agree) as when backward() starts them. skip_nonfinite=false turns the check off.
  ReducerOptions reducer = ReducerOptions().overlap(false).norm_stats(false);
};

Spec parse_spec(const std::string& s) {
  Spec spec;
  spec.text = s;
  const auto colon = s.find(':');
  spec.name = s.substr(0, colon);
  if (colon == std::string::npos) return spec;
  std::istringstream is(s.substr(colon + 1));
  const std::vector<std::string> reducer_keys = field_keys<ReducerOptions>();
  Config reducer_config;
  for (std::string kv; std::getline(is, kv, ',');) {
    const auto eq = kv.find('=');
    TORCH_CHECK(eq != std::string::npos && eq > 0, "bench: '", kv, "' in '", s,
                "' is not KEY=VALUE (e.g. powersgd+:restart_period=100)");
    const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    const bool reducer_key = std::find(reducer_keys.begin(), reducer_keys.end(), key) != reducer_keys.end();
    (reducer_key ? reducer_config : spec.config).set(key, value);
  }
  spec.reducer = read_fields(reducer_config, spec.reducer);
  spec.reducer.validate();
  return spec;
}

struct Run {
  Spec spec;
  std::vector<at::Tensor> params;  // its own copies: each reducer owns its gradient buffers
  std::unique_ptr<GradientReducer> reducer;
  std::vector<double> step_ms;  // every timed step
  std::vector<double> round_ms; // mean per round
};

double mean(const std::vector<double>& v) {
  return v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

// Throws unless `path` can be written: an existing writable file, or a new name in a writable
// directory. Checked before the benchmark runs, so a bad --json fails at once.
void check_writable(const std::string& path, const std::string& flag) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    TORCH_CHECK(!S_ISDIR(st.st_mode), "bench: ", flag, " ", path, " is a directory");
    TORCH_CHECK(::access(path.c_str(), W_OK) == 0, "bench: cannot write ", flag, " ", path, ": ", std::strerror(errno));
    return;
  }
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  TORCH_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "bench: cannot write ", flag, " ", path,
              ": directory ", dir, " does not exist");
  TORCH_CHECK(::access(dir.c_str(), W_OK) == 0, "bench: cannot write ", flag, " ", path, ": directory ", dir,
              " is not writable");
}

// Prints the table (and writes --json): each configuration's time per step against the floor, 2
// copies of `copy_ms` each.
void report(const BenchFlags& f, const std::vector<Run>& runs, int64_t numel, double copy,
            const BlasInfo& blas) {
  const double floor = 2 * copy;
  std::cout << "floor: 2 x copy_ of " << numel << " floats = 2 x " << std::fixed << std::setprecision(2) << copy
            << " ms = " << floor << " ms (" << std::setprecision(1) << 8e-6 * double(numel) / copy
            << " GB/s read+write)\n\n";
  std::cout << std::left << std::setw(36) << "configuration" << std::right << std::setw(11) << "mean ms"
            << std::setw(11) << "median ms" << std::setw(11) << "x floor" << std::setw(13) << "x powersgd"
            << std::setw(14) << "MB sent/step" << "\n";
  double psgd = 0;
  for (const auto& r : runs)
    if (r.spec.text == "powersgd") psgd = mean(r.step_ms);
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : runs) {
    const double m = mean(r.step_ms), med = median(r.step_ms);
    const auto& st = r.reducer->stats();
    const double mb = 1e-6 * double(st.bytes_sent) / double(std::max<int64_t>(st.steps, 1));
    std::cout << std::left << std::setw(36) << r.spec.text << std::right << std::setprecision(2) << std::setw(11) << m
              << std::setw(11) << med << std::setw(11) << m / floor << std::setw(13);
    if (psgd > 0) std::cout << m / psgd;
    else std::cout << "-";
    std::cout << std::setw(14) << std::setprecision(3) << mb << "\n";
    rows.push_back({{"config", r.spec.text},
                    {"compressor", r.spec.name},
                    {"mean_ms", m},
                    {"median_ms", med},
                    {"x_floor", m / floor},
                    {"x_powersgd", psgd > 0 ? m / psgd : 0.0},
                    {"bytes_per_step", double(st.bytes_sent) / double(std::max<int64_t>(st.steps, 1))},
                    {"describe", r.reducer->describe()}});
  }
  std::cout << std::defaultfloat;
  if (!f.json.empty()) {
    nlohmann::json j = {{"model", f.model},       {"numel", numel},     {"threads", f.threads},
                        {"blas", blas.name},      {"copy_ms", copy},    {"floor_ms", floor},
                        {"rounds", f.rounds},     {"steps", f.steps},   {"rank", f.rank},
                        {"rows", rows}};
    write_file_atomically(f.json, j.dump(2) + "\n");
  }
}

// Real gradients: one forward/backward of the model on the dataset's first --batch-size examples.
struct Gradients {
  std::vector<std::pair<std::string, at::Tensor>> params;  // copies of the weights, by name
  std::vector<at::Tensor> grads;                           // their gradients, in the same order
  int64_t numel = 0;
  std::string dataset;
};

Gradients real_gradients(const BenchFlags& f) {
  data::Dataset ds = data::load_dataset(f.dataset, "", data::Split::kTrain);
  TORCH_CHECK(f.batch <= ds.size(), "bench: --batch-size ", f.batch, " is more than the ", ds.size(),
              " examples of ", ds.name);
  models::InputSpec in;
  in.channels = ds.images.size(1);
  in.height = ds.images.size(2);
  in.width = ds.images.size(3);
  in.classes = ds.classes;
  auto model = models::make_model(f.model, in, 0);
  at::Tensor idx = at::arange(f.batch, at::kLong);
  torch::nn::functional::cross_entropy(model->forward(ds.batch_images(idx)), ds.batch_labels(idx)).backward();
  Gradients g;
  g.dataset = ds.name;
  for (const auto& kv : model->named_parameters()) {
    g.params.emplace_back(kv.key(), kv.value().detach().clone());
    g.grads.push_back(kv.value().grad().clone());
    g.numel += kv.value().numel();
  }
  return g;
}

// One reducer per configuration, each over its own copies of the parameters.
std::vector<Run> make_runs(const BenchFlags& f, const Gradients& g, const std::shared_ptr<comm::Communicator>& comm) {
  std::vector<Run> runs;
  for (const auto& text : f.configs) {
    Run r;
    r.spec = parse_spec(text);
    train::TrainOptions o;
    o.compressor(r.spec.name).default_rank(f.rank).compressor_config(r.spec.config);
    std::vector<std::pair<std::string, at::Tensor>> own;
    for (const auto& p : g.params) {
      own.emplace_back(p.first, p.second.clone());
      r.params.push_back(own.back().second);
    }
    r.reducer = std::make_unique<GradientReducer>(own, o.make_compressor(), comm, r.spec.reducer);
    runs.push_back(std::move(r));
  }
  return runs;
}

// The configurations interleaved round by round, each after a timed copy of the gradients' size (the
// memory-bandwidth floor). Returns the floor's times.
std::vector<double> time_rounds(const BenchFlags& f, const Gradients& g, std::vector<Run>& runs) {
  // Untimed warm-up: the first step allocates warm-start state. The timed steps that follow cover
  // rounds × steps consecutive steps, so a restart or refresh every τ steps is counted once per τ.
  for (auto& r : runs)
    for (int s = 0; s < f.warmup; ++s) {
      for (size_t k = 0; k < g.grads.size(); ++k) r.params[k].mutable_grad().copy_(g.grads[k]);
      r.reducer->reduce();
    }
  at::Tensor src = at::randn({g.numel}), dst = at::empty({g.numel});
  std::vector<double> copy_ms;
  for (int round = 0; round < f.rounds; ++round) {
    for (auto& r : runs) {
      const auto tc = Clock::now();
      dst.copy_(src);
      copy_ms.push_back(ms_since(tc));
      double sum = 0;
      for (int s = 0; s < f.steps; ++s) {
        for (size_t k = 0; k < g.grads.size(); ++k) r.params[k].mutable_grad().copy_(g.grads[k]);  // as backward() would
        const auto t0 = Clock::now();
        r.reducer->reduce();
        const double ms = ms_since(t0);
        r.step_ms.push_back(ms);
        sum += ms;
      }
      r.round_ms.push_back(sum / f.steps);
    }
  }
  return copy_ms;
}

int run_bench(const BenchFlags& f) {
  if (!f.json.empty()) check_writable(f.json, "--json");
  at::set_num_threads(f.threads);
  set_blas_threads(f.threads);
  const BlasInfo blas = blas_info();
  const Gradients g = real_gradients(f);
  auto comm = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
  std::vector<Run> runs = make_runs(f, g, comm);
  std::cout << "lowrank bench: " << f.model << " gradients (" << g.numel << " floats in " << g.params.size()
            << " tensors, batch " << f.batch << " of " << g.dataset << "), world size 1, " << f.threads
            << " thread" << (f.threads > 1 ? "s" : "") << ", " << f.rounds << " rounds x " << f.steps
            << " timed steps after " << f.warmup << " untimed, configurations interleaved\n"
            << blas.describe() << std::endl;
  const std::vector<double> copy_ms = time_rounds(f, g, runs);
  report(f, runs, g.numel, median(copy_ms), blas);
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "bench",
      "Time the reducer per step on a model's real gradients (world size 1), interleaved with the memory-"
      "bandwidth floor measured in the same process; see docs/performance.md");
  auto f = std::make_shared<BenchFlags>();
  sub->add_option("--model", f->model, "Model whose gradients are reduced")->capture_default_str();
  sub->add_option("--configs", f->configs,
                  "Configurations NAME or NAME:KEY=VALUE,KEY=VALUE (e.g. powersgd+:restart_period=100); keys of the "
                  "reducer's options (" + join_names(field_keys<ReducerOptions>()) + ") set those, e.g. "
                  "skip_nonfinite=false turns the NaN/Inf check off and overlap=true (default false here) runs the "
                  "buckets on the reducer's thread, guarded as when backward() starts them")
      ->delimiter(' ')
      ->capture_default_str();
  add_integer(sub, "--rank", f->rank, "Rank r for compressors that take one", {1, train::kMaxRank})
      ->capture_default_str();
  add_integer(sub, "--batch-size", f->batch, "Examples in the batch that produces the gradients",
              {1, train::kMaxBatchSize})
      ->capture_default_str();
  add_integer(sub, "--rounds", f->rounds, "Interleaved rounds", {1, kMaxRepeats})->capture_default_str();
  add_integer(sub, "--steps", f->steps, "Steps per configuration and round", {1, kMaxRepeats})->capture_default_str();
  add_integer(sub, "--warmup", f->warmup, "Untimed steps per configuration before the rounds", {0, kMaxRepeats})
      ->capture_default_str();
  add_integer(sub, "--threads", f->threads, "Intra-op (and BLAS) threads", {1, kMaxThreads})->capture_default_str();
  sub->add_option("--json", f->json, "Also write the table as JSON to FILE")->type_name("FILE");
  return {sub, [f] { return run_bench(*f); }};
}

}  // namespace cli
}  // namespace lowrank
