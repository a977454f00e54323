// The counterexample of Theorem 1 (PowerSGD+ paper, arXiv:2509.11254, Sec. 3 and Appendix A;
// docs/algorithms.md §7). Walk-through of one run, on every worker i of N (one thread each):
//
//   X = x0()                                  // [2, 2] fp64 parameter, identical on all workers
//   for t = 0 … T−1:
//     record X_t and e_i (the reducer's "ef/X" buffer)
//     ξ = counterexample_noise(seed, t, i)   // ±1; ξ_0 = +1 in conditioned mode
//     X.grad = problem.oracle(X, ξ)           // g_i = ∇f + ξ(σB − ∇f)
//     reducer.reduce()                        // the registered compressor: Δ_i = g_i + e_i → ĝ, e_i
//     optimizer.step()                        // SGD(momentum) or Adam on ĝ (§1.10)
//   record X_T, e_i
// then, on the calling thread: check the N traces of X are bit-identical, and compute
// ‖∇f(X_t)‖² and ‖mean_i e_i‖ per step.
//
// Wire per worker and step for the 2×2 matrix at r = 1 (§8): PowerSGD k(m+n) = 4 floats;
// PowerSGD+ 4 floats, and m·n + n·k = 6 on restart steps (every τ-th, from s = 0).
#include "lowrank/counterexample/counterexample.h"

#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <sstream>
#include <thread>
#include <utility>

#include "lowrank/comm/communicator.h"
#include "lowrank/util/threads.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {
namespace counterexample {

// ---------------------------------------------------------------------------------------------
// Options.

CounterexampleOptions CounterexampleOptions::for_mode(CounterexampleMode mode) {
  CounterexampleOptions o;
  o.mode(mode);
  if (mode == CounterexampleMode::kUnconditioned) {
    o.steps(3000);
    o.seeds(400);
  }
  return o;
}

Config CounterexampleOptions::compressor_config(const std::string& method) const {
  Config c;
  if (method != "none") c.set("rank", rank());
  // τ is PowerSGD+'s restart period and GreedyLore's / GaLore-style's refresh period (§1.1).
  if (method == "powersgd+") c.set("restart_period", restart_period());
  if (method == "greedylore" || method == "galore") c.set("refresh_period", restart_period());
  for (const auto& spec : compressor_options()) {
    const auto colon = spec.find(':');
    const auto eq = spec.find('=', colon == std::string::npos ? 0 : colon);
    TORCH_CHECK(colon != std::string::npos && colon > 0 && eq != std::string::npos && eq > colon + 1,
                "counterexample: compressor option '", spec, "' is not of the form method:key=value");
    if (spec.substr(0, colon) == method) c.set(spec.substr(colon + 1, eq - colon - 1), spec.substr(eq + 1));
  }
  return c;
}

namespace {

const std::string& name_of(const std::string& method) { return method; }
std::string name_of(CounterexampleOptimizer optimizer) { return to_string(optimizer); }

// Throws naming the first entry of `list` that appears in it twice.
template <typename T>
void check_unique(const std::vector<T>& list) {
  for (size_t i = 0; i < list.size(); ++i)
    TORCH_CHECK(std::find(list.begin(), list.begin() + i, list[i]) == list.begin() + i, "counterexample: '",
                name_of(list[i]), "' is listed twice");
}

}  // namespace

void CounterexampleOptions::validate() const {
  TORCH_CHECK(workers() >= 1 && workers() % 2 == 1, "counterexample: workers must be odd (an even N lets the "
              "workers' draws cancel, xi_bar = 0, and the construction degenerate, §7.2), got ", workers());
  TORCH_CHECK(std::isfinite(sigma()) && sigma() > 0, "counterexample: sigma must be a finite number > 0, got ",
              sigma(), " (sigma = 0 makes the first step zero, §7.2)");
  TORCH_CHECK(rank() >= 1, "counterexample: rank must be >= 1, got ", rank());
  TORCH_CHECK(restart_period() >= 1, "counterexample: restart_period must be >= 1, got ", restart_period());
  TORCH_CHECK(steps() >= 1, "counterexample: steps must be >= 1, got ", steps());
  TORCH_CHECK(seeds() >= 1, "counterexample: seeds must be >= 1, got ", seeds());
  TORCH_CHECK(!methods().empty(), "counterexample: methods is empty; valid: a registered compressor name");
  TORCH_CHECK(!optimizers().empty(), "counterexample: optimizers is empty; valid: ",
              choice_list(kCounterexampleOptimizers));
  check_unique(methods());
  check_unique(optimizers());
  TORCH_CHECK(std::isfinite(lr_msgd()) && lr_msgd() > 0, "counterexample: lr_msgd must be > 0, got ", lr_msgd());
  TORCH_CHECK(std::isfinite(lr_adam()) && lr_adam() > 0, "counterexample: lr_adam must be > 0, got ", lr_adam());
  TORCH_CHECK(momentum() >= 0 && momentum() < 1, "counterexample: momentum must be in [0, 1), got ", momentum());
  TORCH_CHECK(parallel() >= 0, "counterexample: parallel must be >= 0, got ", parallel());
  TORCH_CHECK(tail_window() >= 1, "counterexample: tail_window must be >= 1, got ", tail_window());
  TORCH_CHECK(std::isfinite(converged_below()) && converged_below() > 0,
              "counterexample: converged_below must be > 0, got ", converged_below());
  for (const auto& spec : compressor_options()) {
    const std::string method = spec.substr(0, spec.find(':'));
    TORCH_CHECK(std::find(methods().begin(), methods().end(), method) != methods().end(),
                "counterexample: compressor option '", spec, "' names method '", method,
                "', which is not among the methods being run");
  }
  for (const auto& m : methods()) make_compressor(m, compressor_config(m));  // names the bad name or key
}

namespace {

template <typename T>
std::string render(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Collects the shown fields as (key, value) like util/fields.h's field_pairs(), which has no list
// fields: a list prints as its elements, comma-separated.
struct OptionPairs {
  std::vector<std::pair<std::string, std::string>>* out;

  template <typename T>
  void operator()(const char* key, const T& field, bool shown = true) const {
    if (shown) out->emplace_back(key, render(field));
  }
  template <typename E>
  void operator()(const char* key, const E& field, const Choices<E>& choices, bool shown = true) const {
    if (shown) out->emplace_back(key, choice_name(field, choices));
  }
  void operator()(const char* key, const std::vector<std::string>& field, bool shown = true) const {
    std::string s;
    for (const auto& x : field) s += (s.empty() ? "" : ",") + x;
    if (shown) out->emplace_back(key, s);
  }
  template <typename E>
  void operator()(const char* key, const std::vector<E>& field, const Choices<E>& choices, bool shown = true) const {
    std::vector<std::string> names;
    for (E x : field) names.push_back(choice_name(x, choices));
    (*this)(key, names, shown);
  }
};

}  // namespace

std::ostream& operator<<(std::ostream& os, const CounterexampleOptions& o) {
  std::vector<std::pair<std::string, std::string>> pairs;
  CounterexampleOptions::fields(o, OptionPairs{&pairs});
  for (size_t i = 0; i < pairs.size(); ++i) {
    // The seeds print as the range they cover (first_seed itself is not shown).
    const std::string value = pairs[i].first == "seeds" ? render(o.first_seed()) + ".." +
                                                              render(o.first_seed() + o.seeds() - 1)
                                                        : pairs[i].second;
    os << (i ? " " : "") << pairs[i].first << "=" << value;
  }
  return os;
}

// ---------------------------------------------------------------------------------------------
// Simulation.

namespace {

struct WorkerTrace {
  std::vector<Mat2> x;  // X_t, t = 0 … T
  std::vector<Mat2> e;  // e_i entering step t
};

Mat2 read_mat2(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  Mat2 out;
  std::memcpy(out.data(), c.data_ptr<double>(), sizeof(out));
  return out;
}

Mat2 ef_of(const GradientReducer& reducer) {
  for (const auto& kv : reducer.state_dict())
    if (kv.first == "ef/X") return read_mat2(kv.second);
  return Mat2{0, 0, 0, 0};  // no compressed step yet, or EF off
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const CounterexampleOptions& o,
                                                        CounterexampleOptimizer optimizer, const at::Tensor& X) {
  switch (optimizer) {
    case CounterexampleOptimizer::kMsgd:
      return std::make_unique<torch::optim::SGD>(
          std::vector<at::Tensor>{X},
          torch::optim::SGDOptions(o.lr_msgd()).momentum(o.momentum()).dampening(0).nesterov(false).weight_decay(0));
    case CounterexampleOptimizer::kAdam:
      return std::make_unique<torch::optim::Adam>(
          std::vector<at::Tensor>{X},
          torch::optim::AdamOptions(o.lr_adam()).betas(std::make_tuple(0.9, 0.999)).eps(1e-8).weight_decay(0));
  }
  TORCH_INTERNAL_ASSERT(false, "optimizer ", static_cast<int>(optimizer), " has no case");
}

void run_worker(const CounterexampleOptions& o, const CounterexampleProblem& problem,
                std::shared_ptr<comm::Communicator> comm, std::unique_ptr<Compressor> compressor,
                CounterexampleOptimizer optimizer, uint64_t seed, WorkerTrace& trace) {
  const int rank = comm->rank();
  const int64_t T = o.steps();
  const Mat2 x0 = problem.x0();
  at::Tensor X = at::empty({2, 2}, at::kDouble);
  std::memcpy(X.data_ptr<double>(), x0.data(), sizeof(x0));
  X.set_requires_grad(true);
  X.mutable_grad() = at::zeros({2, 2}, at::kDouble);
  // Nothing here is differentiated: skipping the autograd dispatch keys cuts the per-op overhead,
  // which dominates on 2×2 tensors. X and its .grad are normal tensors made before the guard; the
  // reducer's and optimizer's state is made and used only inside it.
  c10::InferenceMode no_autograd;
  GradientReducer reducer(
      {{"X", X}}, std::move(compressor), std::move(comm),
      ReducerOptions().start_iter(0).min_compression_rate(0).ef_residual(EfResidual::kLocal).seed(seed).norm_stats(false));
  auto opt = make_optimizer(o, optimizer, X);

  trace.x.resize(T + 1);
  trace.e.resize(T + 1);
  for (int64_t t = 0;; ++t) {
    std::memcpy(trace.x[t].data(), X.data_ptr<double>(), sizeof(Mat2));  // X is a contiguous fp64 leaf
    trace.e[t] = ef_of(reducer);
    if (t == T) break;
    const Mat2 g = problem.oracle(trace.x[t], counterexample_noise(seed, t, rank, o.conditioned()));
    std::memcpy(X.mutable_grad().data_ptr<double>(), g.data(), sizeof(g));
    reducer.reduce();
    opt->step();
  }
}

}  // namespace

CounterexampleRun simulate_counterexample(const CounterexampleOptions& o, const std::string& method,
                                          CounterexampleOptimizer optimizer, uint64_t seed) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const CounterexampleProblem problem(o.basis(), o.sigma());
  const int W = o.workers();
  // Compressors are made here, not in the workers: a bad option then fails before any worker
  // waits in a collective for a rank that already gave up.
  std::vector<std::unique_ptr<Compressor>> compressors;
  for (int i = 0; i < W; ++i) compressors.push_back(make_compressor(method, o.compressor_config(method)));
  auto comms = comm::make_in_process_group(W);
  std::vector<WorkerTrace> traces(W);
  run_threads(W, [&](int i) { run_worker(o, problem, comms[i], std::move(compressors[i]), optimizer, seed, traces[i]); });

  const int64_t T = o.steps();
  for (int i = 1; i < W; ++i) {
    for (int64_t t = 0; t <= T; ++t) {
      TORCH_CHECK(std::memcmp(traces[i].x[t].data(), traces[0].x[t].data(), sizeof(Mat2)) == 0,
                  "counterexample: X differs between worker 0 and worker ", i, " at step ", t, " (", method, ", ",
                  to_string(optimizer), ", seed ", seed, "): the reduced gradient was not identical on all workers");
    }
  }
  CounterexampleRun run;
  run.method = method;
  run.optimizer = optimizer;
  run.seed = seed;
  run.grad_norm_sq.resize(T + 1);
  run.ef_norm.resize(T + 1);
  for (int64_t t = 0; t <= T; ++t) {
    run.grad_norm_sq[t] = problem.grad_norm_sq(traces[0].x[t]);
    Mat2 mean{0, 0, 0, 0};
    for (int i = 0; i < W; ++i)
      for (int j = 0; j < 4; ++j) mean[j] += traces[i].e[t][j];
    double sq = 0;
    for (int j = 0; j < 4; ++j) sq += (mean[j] / W) * (mean[j] / W);
    run.ef_norm[t] = std::sqrt(sq);
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

CounterexampleResult run_counterexample(const CounterexampleOptions& o) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  struct Job {
    std::string method;
    CounterexampleOptimizer optimizer;
    uint64_t seed;
  };
  std::vector<Job> jobs;
  for (const auto& m : o.methods())
    for (const auto& opt : o.optimizers())
      for (int64_t k = 0; k < o.seeds(); ++k) jobs.push_back({m, opt, o.first_seed() + static_cast<uint64_t>(k)});

  CounterexampleResult result;
  result.options = o;
  result.runs.resize(jobs.size());
  std::vector<std::exception_ptr> errors(jobs.size());
  std::atomic<size_t> next{0};
  auto drain = [&] {
    for (size_t j; (j = next.fetch_add(1)) < jobs.size();) {
      try {
        result.runs[j] = simulate_counterexample(o, jobs[j].method, jobs[j].optimizer, jobs[j].seed);
      } catch (...) {
        errors[j] = std::current_exception();
      }
    }
  };
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const size_t lanes = std::min<size_t>(jobs.size(), static_cast<size_t>(o.parallel() > 0 ? o.parallel() : hw));
  std::vector<std::thread> pool;
  for (size_t l = 1; l < lanes; ++l) pool.emplace_back(drain);
  drain();
  for (auto& th : pool) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

}  // namespace counterexample
}  // namespace lowrank
