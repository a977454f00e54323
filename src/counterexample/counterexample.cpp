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

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace lowrank {
namespace counterexample {

// ---------------------------------------------------------------------------------------------
// Options.

CounterexampleOptions CounterexampleOptions::for_mode(const std::string& mode) {
  CounterexampleOptions o;
  o.mode(mode);
  if (mode == "unconditioned") {
    o.steps(3000);
    o.seeds(400);
  } else {
    TORCH_CHECK(mode == "conditioned", "counterexample: unknown mode '", mode, "'; valid: conditioned, unconditioned");
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

void CounterexampleOptions::validate() const {
  TORCH_CHECK(mode() == "conditioned" || mode() == "unconditioned", "counterexample: mode must be conditioned or ",
              "unconditioned, got '", mode(), "'");
  TORCH_CHECK(workers() >= 1 && workers() % 2 == 1, "counterexample: workers must be odd (an even N lets the "
              "workers' draws cancel, xi_bar = 0, and the construction degenerate, §7.2), got ", workers());
  TORCH_CHECK(std::isfinite(sigma()) && sigma() > 0, "counterexample: sigma must be a finite number > 0, got ",
              sigma(), " (sigma = 0 makes the first step zero, §7.2)");
  TORCH_CHECK(rank() >= 1, "counterexample: rank must be >= 1, got ", rank());
  TORCH_CHECK(restart_period() >= 1, "counterexample: restart_period must be >= 1, got ", restart_period());
  TORCH_CHECK(steps() >= 1, "counterexample: steps must be >= 1, got ", steps());
  TORCH_CHECK(seeds() >= 1, "counterexample: seeds must be >= 1, got ", seeds());
  parse_counterexample_basis(basis());
  TORCH_CHECK(!methods().empty(), "counterexample: methods is empty; valid: a registered compressor name");
  TORCH_CHECK(!optimizers().empty(), "counterexample: optimizers is empty; valid: msgd, adam");
  for (const auto& opt : optimizers())
    TORCH_CHECK(opt == "msgd" || opt == "adam", "counterexample: unknown optimizer '", opt, "'; valid: msgd, adam");
  for (const auto* list : {&methods(), &optimizers()})
    for (size_t i = 0; i < list->size(); ++i)
      TORCH_CHECK(std::find(list->begin(), list->begin() + i, (*list)[i]) == list->begin() + i,
                  "counterexample: '", (*list)[i], "' is listed twice");
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

std::ostream& operator<<(std::ostream& os, const CounterexampleOptions& o) {
  auto list = [&os](const std::vector<std::string>& v) {
    for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  };
  os << "mode=" << o.mode() << " workers=" << o.workers() << " sigma=" << o.sigma() << " rank=" << o.rank()
     << " restart_period=" << o.restart_period() << " steps=" << o.steps() << " seeds=" << o.first_seed() << ".."
     << o.first_seed() + o.seeds() - 1 << " basis=" << o.basis() << " methods=";
  list(o.methods());
  os << " optimizers=";
  list(o.optimizers());
  os << " lr_msgd=" << o.lr_msgd() << " momentum=" << o.momentum() << " lr_adam=" << o.lr_adam();
  if (!o.compressor_options().empty()) {
    os << " compressor_options=";
    list(o.compressor_options());
  }
  return os << " tail_window=" << o.tail_window() << " converged_below=" << o.converged_below();
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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const CounterexampleOptions& o, const std::string& name,
                                                        const at::Tensor& X) {
  if (name == "msgd")
    return std::make_unique<torch::optim::SGD>(
        std::vector<at::Tensor>{X},
        torch::optim::SGDOptions(o.lr_msgd()).momentum(o.momentum()).dampening(0).nesterov(false).weight_decay(0));
  TORCH_INTERNAL_ASSERT(name == "adam", "optimizer '", name, "' passed validation");
  return std::make_unique<torch::optim::Adam>(
      std::vector<at::Tensor>{X},
      torch::optim::AdamOptions(o.lr_adam()).betas(std::make_tuple(0.9, 0.999)).eps(1e-8).weight_decay(0));
}

void run_worker(const CounterexampleOptions& o, const CounterexampleProblem& problem,
                std::shared_ptr<comm::Communicator> comm, std::unique_ptr<Compressor> compressor,
                const std::string& optimizer, uint64_t seed, WorkerTrace& trace) {
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
      ReducerOptions().start_iter(0).min_compression_rate(0).ef_residual("local").seed(seed).norm_stats(false));
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
                                          const std::string& optimizer, uint64_t seed) {
  o.validate();
  const auto t0 = std::chrono::steady_clock::now();
  const CounterexampleProblem problem(parse_counterexample_basis(o.basis()), o.sigma());
  const int W = o.workers();
  // Compressors are made here, not in the workers: a bad option then fails before any worker
  // waits in a collective for a rank that already gave up.
  std::vector<std::unique_ptr<Compressor>> compressors;
  for (int i = 0; i < W; ++i) compressors.push_back(make_compressor(method, o.compressor_config(method)));
  auto comms = comm::make_in_process_group(W);
  std::vector<WorkerTrace> traces(W);
  std::vector<std::exception_ptr> errors(W);
  std::vector<std::thread> threads;
  for (int i = 0; i < W; ++i) {
    threads.emplace_back([&, i] {
      try {
        run_worker(o, problem, comms[i], std::move(compressors[i]), optimizer, seed, traces[i]);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);

  const int64_t T = o.steps();
  for (int i = 1; i < W; ++i) {
    for (int64_t t = 0; t <= T; ++t) {
      TORCH_CHECK(std::memcmp(traces[i].x[t].data(), traces[0].x[t].data(), sizeof(Mat2)) == 0,
                  "counterexample: X differs between worker 0 and worker ", i, " at step ", t, " (", method, ", ",
                  optimizer, ", seed ", seed, "): the reduced gradient was not identical on all workers");
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
    std::string method, optimizer;
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
