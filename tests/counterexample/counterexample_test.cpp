// Tests of the Theorem 1 counterexample (docs/algorithms.md §7): the objective and oracle in both bases,
// the exact PowerSGD stall and PowerSGD+'s convergence (§7.6 thresholds), determinism, the report
// helpers, and the `lowrank counterexample` CLI.
#include "lowrank/counterexample/counterexample.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "lowrank/counterexample/counterexample_plot.h"
#include "lowrank/counterexample/counterexample_report.h"
#include "lowrank/util/stats.h"

namespace lowrank {
namespace counterexample {
namespace {

// Central differences of ψ(s) with step 1e-6 on O(1) inputs: truncation O(h²) = 1e-12 and
// cancellation O(eps/h) ≈ 1e-10.
constexpr double kFiniteDiffTol = 1e-7;
// Rotating a 2×2 matrix by R = [u_A, C] (entries 1/√2) rounds each entry by a few ulps of O(10).
constexpr double kRotationTol = 1e-13;
// §7.6 (a): PowerSGD+'s median ‖∇f‖² over the last 500 steps must be below this for every seed.
constexpr double kPlusTailBound = 1e-2;
constexpr int64_t kPlusTailSteps = 500;
// Interval end points are compared with 7-digit reference values.
constexpr double kIntervalTol = 1e-6;
// Noise balance: |mean of n ±1 draws| is below 5/√n except with probability < 1e-6.
constexpr double kNoiseSigmas = 5.0;

Mat2 random_mat(std::mt19937_64& rng, double scale) {
  std::uniform_real_distribution<double> u(-scale, scale);
  return Mat2{u(rng), u(rng), u(rng), u(rng)};
}

TEST(CounterexampleProblem, PaperBasisStartAndMatrices) {
  const CounterexampleProblem p(CounterexampleBasis::kPaper, 1.0);
  const Mat2 x0 = p.x0();
  EXPECT_EQ(x0, (Mat2{2, 0, 0, 0}));
  EXPECT_EQ(p.s(x0), 2.0);
  EXPECT_EQ(huber_psi_prime(2.0), 2.0);
  EXPECT_EQ(p.gradient(x0), (Mat2{2, -2, -2, 2}));  // ψ'(2)·A
  EXPECT_EQ(p.grad_norm_sq(x0), 16.0);
  EXPECT_EQ(p.A(), (Mat2{1, -1, -1, 1}));
  EXPECT_EQ(p.B(), (Mat2{1, 1, 1, 1}));
  // The s of §7.1 is x11 − x12 − x21 + x22 (the proof's x11 + x12 − x21 − x22 is a typo).
  EXPECT_EQ(p.s(Mat2{1, 2, 3, 5}), 1.0 - 2 - 3 + 5);
  // ψ is Huber-like: x² inside [−1, 1], 2|x| − 1 outside.
  EXPECT_EQ(huber_psi(0.5), 0.25);
  EXPECT_EQ(huber_psi(-3.0), 5.0);
  EXPECT_EQ(huber_psi_prime(-0.25), -0.5);
  EXPECT_EQ(huber_psi_prime(-7.0), -2.0);
}

TEST(CounterexampleProblem, PaperGradientMatchesFiniteDifferences) {
  const CounterexampleProblem p(CounterexampleBasis::kPaper, 1.0);
  const double h = 1e-6;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::mt19937_64 rng(seed);
    const Mat2 X = random_mat(rng, 2.0);
    if (std::abs(std::abs(p.s(X)) - 1) < 1e-3) continue;  // ψ' has a kink at |s| = 1
    const Mat2 g = p.gradient(X);
    for (int j = 0; j < 4; ++j) {
      Mat2 up = X, down = X;
      up[j] += h;
      down[j] -= h;
      const double fd = (p.value(up) - p.value(down)) / (2 * h);
      EXPECT_NEAR(g[j], fd, kFiniteDiffTol) << "seed " << seed << " entry " << j;
    }
  }
}

TEST(CounterexampleProblem, AlignedBasisIsTheRotatedPaperBasis) {
  const CounterexampleProblem paper(CounterexampleBasis::kPaper, 1.5);
  const CounterexampleProblem aligned(CounterexampleBasis::kAligned, 1.5);
  auto expect_near = [](const Mat2& a, const Mat2& b, const std::string& what) {
    for (int j = 0; j < 4; ++j) EXPECT_NEAR(a[j], b[j], kRotationTol) << what << " entry " << j;
  };
  expect_near(CounterexampleProblem::to_aligned(paper.A()), aligned.A(), "A' = RᵀAR = 2E11");
  expect_near(CounterexampleProblem::to_aligned(paper.B()), aligned.B(), "B' = RᵀBR = 2E22");
  expect_near(CounterexampleProblem::to_aligned(paper.x0()), aligned.x0(), "Y_0 = RᵀX_0R");
  EXPECT_EQ(aligned.grad_norm_sq(aligned.x0()), 16.0);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::mt19937_64 rng(seed);
    const Mat2 X = random_mat(rng, 3.0);
    const Mat2 Y = CounterexampleProblem::to_aligned(X);
    EXPECT_NEAR(aligned.value(Y), paper.value(X), kRotationTol) << "seed " << seed;
    expect_near(aligned.gradient(Y), CounterexampleProblem::to_aligned(paper.gradient(X)), "seed " + std::to_string(seed));
    for (int xi : {-1, 1})
      expect_near(aligned.oracle(Y, xi), CounterexampleProblem::to_aligned(paper.oracle(X, xi)),
                  "oracle, seed " + std::to_string(seed));
  }
}

TEST(CounterexampleProblem, OracleIsUnbiased) {
  for (auto basis : {CounterexampleBasis::kPaper, CounterexampleBasis::kAligned}) {
    const CounterexampleProblem p(basis, 1.0);
    for (uint64_t seed = 0; seed < 20; ++seed) {
      std::mt19937_64 rng(seed);
      const Mat2 X = random_mat(rng, 3.0);
      const Mat2 g = p.gradient(X), plus = p.oracle(X, 1), minus = p.oracle(X, -1);
      for (int j = 0; j < 4; ++j) {
        // ξ = +1 gives σB, ξ = −1 gives 2∇f − σB: their mean (E over uniform ξ) is ∇f.
        EXPECT_NEAR(plus[j], p.sigma() * p.B()[j], kRotationTol) << to_string(basis) << " seed " << seed;
        EXPECT_NEAR(0.5 * (plus[j] + minus[j]), g[j], kRotationTol) << to_string(basis) << " seed " << seed;
      }
    }
  }
  // The noise stream is balanced, independent across workers, and forced only at step 0 when asked.
  for (uint64_t seed = 0; seed < 5; ++seed) {
    const int64_t n = 20000;
    int64_t sum = 0, agree = 0;
    for (int64_t t = 0; t < n; ++t) {
      const int a = counterexample_noise(seed, t, 0, false), b = counterexample_noise(seed, t, 1, false);
      sum += a;
      agree += (a == b);
    }
    EXPECT_LT(std::abs(double(sum) / n), kNoiseSigmas / std::sqrt(double(n))) << "seed " << seed;
    EXPECT_LT(std::abs(2.0 * agree / n - 1), kNoiseSigmas / std::sqrt(double(n))) << "seed " << seed;
    for (int w = 0; w < 5; ++w) EXPECT_EQ(counterexample_noise(seed, 0, w, true), 1);
  }
  int forced_elsewhere = 0;
  for (uint64_t seed = 0; seed < 64; ++seed) forced_elsewhere += counterexample_noise(seed, 1, 0, true) == -1;
  EXPECT_GT(forced_elsewhere, 0) << "only step 0 is forced";
}

// §7.6 (a): in the aligned basis PowerSGD's ‖∇f‖² is exactly its initial 16 at every step.
TEST(Counterexample, ConditionedPowerSgdStallsExactly) {
  const auto o = CounterexampleOptions::for_mode(CounterexampleMode::kConditioned).seeds(3).methods({"powersgd"});
  const auto r = run_counterexample(o);
  ASSERT_EQ(r.runs.size(), 6u);
  for (const auto& run : r.runs) {
    ASSERT_EQ(run.grad_norm_sq.size(), 5001u);
    int64_t off = 0;
    for (double v : run.grad_norm_sq) off += (v != 16.0);
    EXPECT_EQ(off, 0) << to_string(run.optimizer) << " seed " << run.seed << ": steps where ||grad f||^2 != 16";
    // The A-part piles up in the error buffers (§7.2): ‖ē‖ grows about linearly, ~2e4 at T = 5000.
    EXPECT_GT(run.ef_norm.back(), 1e4) << to_string(run.optimizer) << " seed " << run.seed;
    EXPECT_EQ(summarize_run(run, o.tail_window(), o.converged_below()).outcome, RunOutcome::kStalled);
  }
}

// §7.6 (a): PowerSGD+ leaves 16 and its tail median ends below 1e-2 for every seed, both optimizers.
TEST(Counterexample, ConditionedPowerSgdPlusConverges) {
  const auto o = CounterexampleOptions::for_mode(CounterexampleMode::kConditioned).seeds(3).methods({"powersgd+"});
  const auto r = run_counterexample(o);
  ASSERT_EQ(r.runs.size(), 6u);
  for (const auto& run : r.runs) {
    const double tail = tail_median(run.grad_norm_sq, kPlusTailSteps);
    EXPECT_LT(tail, kPlusTailBound) << to_string(run.optimizer) << " seed " << run.seed;
    EXPECT_EQ(summarize_run(run, o.tail_window(), o.converged_below()).outcome, RunOutcome::kConverged)
        << to_string(run.optimizer) << " seed " << run.seed;
  }
}

// Unconditioned mode: PowerSGD stalls exactly when every worker drew ξ_0 = +1 (§7.2), whatever
// happens later; PowerSGD+ never stalls.
TEST(Counterexample, UnconditionedStallsIffAllFirstDrawsArePositive) {
  const auto o = CounterexampleOptions::for_mode(CounterexampleMode::kUnconditioned)
                     .seeds(16)
                     .steps(200)
                     .optimizers({CounterexampleOptimizer::kMsgd});
  const auto r = run_counterexample(o);
  ASSERT_EQ(r.runs.size(), 32u);
  int64_t predicted = 0;
  for (const auto& run : r.runs) {
    bool all_plus = true;
    for (int w = 0; w < o.workers(); ++w) all_plus = all_plus && counterexample_noise(run.seed, 0, w, false) == 1;
    const auto s = summarize_run(run, o.tail_window(), o.converged_below());
    if (run.method == "powersgd") {
      predicted += all_plus;
      EXPECT_EQ(s.outcome == RunOutcome::kStalled, all_plus) << "seed " << run.seed;
    } else {
      EXPECT_NE(s.outcome, RunOutcome::kStalled) << "powersgd+ seed " << run.seed;
    }
  }
  EXPECT_GT(predicted, 0) << "seeds 0..15 contain no all-positive first draw; the test proves nothing";
}

TEST(Counterexample, ResultDoesNotDependOnParallelism) {
  auto o = CounterexampleOptions::for_mode(CounterexampleMode::kUnconditioned).seeds(3).steps(100).parallel(1);
  const auto a = run_counterexample(o);
  const auto b = run_counterexample(o.parallel(3));
  ASSERT_EQ(a.runs.size(), b.runs.size());
  for (size_t i = 0; i < a.runs.size(); ++i) {
    EXPECT_EQ(a.runs[i].method, b.runs[i].method);
    EXPECT_EQ(a.runs[i].seed, b.runs[i].seed);
    EXPECT_EQ(a.runs[i].grad_norm_sq, b.runs[i].grad_norm_sq) << a.runs[i].method << " seed " << a.runs[i].seed;
    EXPECT_EQ(a.runs[i].ef_norm, b.runs[i].ef_norm) << a.runs[i].method << " seed " << a.runs[i].seed;
  }
}

TEST(Counterexample, OptionsRejectBadValuesByName) {
  auto expect_error = [](const CounterexampleOptions& o, const std::string& needle) {
    try {
      o.validate();
      ADD_FAILURE() << "no error for " << needle;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const auto base = CounterexampleOptions::for_mode(CounterexampleMode::kConditioned);
  expect_error(CounterexampleOptions(base).optimizers({CounterexampleOptimizer::kAdam, CounterexampleOptimizer::kAdam}),
               "'adam' is listed twice");
  expect_error(CounterexampleOptions(base).optimizers({}), "optimizers is empty; valid: msgd, adam");
  expect_error(CounterexampleOptions(base).methods({"powersgd", "nosuch"}), "nosuch");
  expect_error(CounterexampleOptions(base).methods({"powersgd", "powersgd"}), "listed twice");
  expect_error(CounterexampleOptions(base).sigma(-1), "sigma");
  expect_error(CounterexampleOptions(base).workers(0), "workers");
  expect_error(CounterexampleOptions(base).workers(2), "workers must be odd");
  expect_error(CounterexampleOptions(base).compressor_options({"powersgd:rank"}), "powersgd:rank");
  expect_error(CounterexampleOptions(base).compressor_options({"powersgd:bogus_key=1"}), "bogus_key");
}

// Names are parsed once, at the edge (the CLI), with errors that name the bad value and list the valid ones.
TEST(Counterexample, NamesParseToEnumsAndBadNamesAreErrors) {
  EXPECT_EQ(parse_choice("mode", "unconditioned", kCounterexampleModes), CounterexampleMode::kUnconditioned);
  EXPECT_EQ(parse_choice("optimizer", "adam", kCounterexampleOptimizers), CounterexampleOptimizer::kAdam);
  EXPECT_EQ(parse_choice("basis", "paper", kCounterexampleBases), CounterexampleBasis::kPaper);
  EXPECT_EQ(to_string(CounterexampleMode::kConditioned), "conditioned");
  EXPECT_EQ(to_string(CounterexampleOptimizer::kMsgd), "msgd");
  EXPECT_EQ(to_string(CounterexampleBasis::kAligned), "aligned");
  auto error = [](auto fn) {
    try {
      fn();
    } catch (const c10::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string m = error([] { parse_choice("mode", "sometimes", kCounterexampleModes); });
  EXPECT_NE(m.find("'sometimes' is not one of conditioned, unconditioned"), std::string::npos) << m;
  const std::string o = error([] { parse_choice("optimizer", "rmsprop", kCounterexampleOptimizers); });
  EXPECT_NE(o.find("'rmsprop' is not one of msgd, adam"), std::string::npos) << o;
  const std::string b = error([] { parse_choice("basis", "diagonal", kCounterexampleBases); });
  EXPECT_NE(b.find("'diagonal' is not one of aligned, paper"), std::string::npos) << b;
}

// The log line that reproduces a run: every shown field once, the seeds as their range.
TEST(Counterexample, OptionsPrintAsOneLine) {
  std::ostringstream os;
  os << CounterexampleOptions::for_mode(CounterexampleMode::kConditioned);
  EXPECT_EQ(os.str(),
            "mode=conditioned workers=3 sigma=1 rank=1 restart_period=10 steps=5000 seeds=0..19 basis=aligned "
            "methods=powersgd,powersgd+ optimizers=msgd,adam lr_msgd=0.001 momentum=0.9 lr_adam=0.003 "
            "tail_window=300 converged_below=0.16");
  os.str("");
  os << CounterexampleOptions::for_mode(CounterexampleMode::kUnconditioned)
            .first_seed(5)
            .basis(CounterexampleBasis::kPaper)
            .optimizers({CounterexampleOptimizer::kAdam})
            .compressor_options({"powersgd:warm_start=false", "powersgd+:rank=2"})
            .parallel(7);
  EXPECT_EQ(os.str(),
            "mode=unconditioned workers=3 sigma=1 rank=1 restart_period=10 steps=3000 seeds=5..404 basis=paper "
            "methods=powersgd,powersgd+ optimizers=adam lr_msgd=0.001 momentum=0.9 lr_adam=0.003 "
            "compressor_options=powersgd:warm_start=false,powersgd+:rank=2 tail_window=300 converged_below=0.16");
}

TEST(CounterexampleReport, ClassificationAndIntervals) {
  CounterexampleRun run;
  run.grad_norm_sq.assign(1001, 16.0);
  run.ef_norm.assign(1001, 1.0);
  EXPECT_EQ(summarize_run(run, 300, 0.16).outcome, RunOutcome::kStalled);
  run.grad_norm_sq[500] = 15.0;  // left 16 once, then back: not a stall, not converged
  auto s = summarize_run(run, 300, 0.16);
  EXPECT_EQ(s.outcome, RunOutcome::kOther);
  EXPECT_EQ(s.left_at, 500);
  std::fill(run.grad_norm_sq.begin() + 600, run.grad_norm_sq.end(), 0.01);
  s = summarize_run(run, 300, 0.16);
  EXPECT_EQ(s.outcome, RunOutcome::kConverged);
  EXPECT_EQ(s.tail_min, 0.01);
  EXPECT_EQ(median({3, 1, 2}), 2.0);
  EXPECT_EQ(median({4, 1, 3, 2}), 2.5);
  // Wilson 95% interval of 48/400 (§7.6's PowerSGD stall count), evaluated by hand in Python:
  // (p + z²/2n ± z√(p(1−p)/n + z²/4n²)) / (1 + z²/n) = [0.0917154, 0.1555140].
  const auto b = binomial_interval_95(48, 400);
  EXPECT_NEAR(b.p, 0.12, kIntervalTol);
  EXPECT_NEAR(b.lo, 0.0917154, kIntervalTol);
  EXPECT_NEAR(b.hi, 0.1555140, kIntervalTol);
  const auto none = binomial_interval_95(0, 400);  // Wilson stays inside [0, 1] and is not empty at k = 0
  EXPECT_EQ(none.lo, 0.0);
  EXPECT_GT(none.hi, 0.0);
  const auto band = stall_fraction_band(3, 400);  // 0.125 ± 3·√(0.125·0.875/400)
  EXPECT_NEAR(band.first, 0.125 - 0.0496078, kIntervalTol);
  EXPECT_NEAR(band.second, 0.125 + 0.0496078, kIntervalTol);
}

// The plot's script: the first seed's run of each method and optimizer, data inline, 0 as NaN.
TEST(CounterexamplePlot, ScriptCarriesTheFirstSeedsCurves) {
  CounterexampleResult r;
  r.options = CounterexampleOptions::for_mode(CounterexampleMode::kConditioned).seeds(2).methods({"powersgd"});
  for (const auto opt : r.options.optimizers()) {
    for (uint64_t seed : {0, 1}) {
      CounterexampleRun run;
      run.method = "powersgd";
      run.optimizer = opt;
      run.seed = seed;
      run.grad_norm_sq = {16, 16, 16};
      run.ef_norm = {0, 1.5, 3};
      r.runs.push_back(run);
    }
  }
  const auto curves = plotted_runs(r);
  ASSERT_EQ(curves.size(), 2u);
  EXPECT_EQ(curves[0]->seed, 0u);
  EXPECT_EQ(curves[1]->optimizer, CounterexampleOptimizer::kAdam);
  const std::string gp = counterexample_plot_script(r, "out/it's.png");
  EXPECT_NE(gp.find("set output 'out/it''s.png'\n"), std::string::npos) << gp;
  EXPECT_NE(gp.find("$data << EOD\n0 16 16 NaN NaN\n1 16 16 1.5 1.5\n2 16 16 3 3\nEOD\n"), std::string::npos) << gp;
  EXPECT_NE(gp.find("conditioned, aligned basis, N = 3, seed 0"), std::string::npos) << gp;
  EXPECT_NE(gp.find("title 'powersgd, msgd'"), std::string::npos) << gp;
  EXPECT_NE(gp.find("$data using 1:5 with lines"), std::string::npos) << gp;  // ‖ē‖ of the second curve
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream is(p, std::ios::binary);
  std::ostringstream ss;
  ss << is.rdbuf();
  return ss.str();
}

TEST(CounterexampleCli, WritesCsvAndPlot) {
  const auto dir = std::filesystem::temp_directory_path() / ("lowrank_counterexample_cli_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::string cmd = std::string(LOWRANK_BINARY) + " counterexample --steps 40 --seeds 2 --out " + dir.string() +
                          " > " + (dir.string() + ".log") + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_all(dir.string() + ".log");
  const std::string log = read_all(dir.string() + ".log");
  EXPECT_NE(log.find("powersgd+"), std::string::npos) << log;

  std::istringstream csv(read_all(dir / "counterexample.csv"));
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "step,method,optimizer,seed,grad_norm_sq,ef_norm");
  int64_t rows = 0;
  std::set<std::string> curves;
  while (std::getline(csv, line)) {
    ++rows;
    std::vector<std::string> f;
    std::stringstream ls(line);
    for (std::string x; std::getline(ls, x, ',');) f.push_back(x);
    ASSERT_EQ(f.size(), 6u) << line;
    curves.insert(f[1] + "/" + f[2]);
    if (f[0] == "0") {
      EXPECT_EQ(f[4], "16") << line;  // ‖∇f(X_0)‖² printed exactly
    }
  }
  EXPECT_EQ(rows, 2 * 2 * 2 * 41);  // methods × optimizers × seeds × (T + 1)
  EXPECT_EQ(curves, (std::set<std::string>{"powersgd/msgd", "powersgd/adam", "powersgd+/msgd", "powersgd+/adam"}));
  EXPECT_TRUE(std::filesystem::exists(dir / "counterexample_summary.csv"));

  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed: no PNG";
  const std::string png = read_all(dir / "counterexample.png");
  ASSERT_GT(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  std::filesystem::remove_all(dir);
  std::filesystem::remove(dir.string() + ".log");
}

TEST(CounterexampleCli, BadBasisIsAnErrorNamingIt) {
  const auto log = std::filesystem::temp_directory_path() / ("lowrank_counterexample_bad_" + std::to_string(::getpid()));
  const std::string cmd = std::string(LOWRANK_BINARY) + " counterexample --basis sideways --steps 5 --seeds 1 --no-plot > " +
                          log.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  EXPECT_NE(status, 0);
  const std::string out = read_all(log);
  EXPECT_NE(out.find("sideways"), std::string::npos) << out;
  EXPECT_NE(out.find("aligned, paper"), std::string::npos) << out;
  std::filesystem::remove(log);
}

}  // namespace
}  // namespace counterexample
}  // namespace lowrank
