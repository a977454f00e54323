#include "lowrank/reducer/gradient_reducer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "support/multi_rank.h"
#include "support/seeded.h"

namespace lowrank {
namespace {

using testing::mix;
using testing::randn_seeded;

// fp32 rounding of a handful of bmm/orth steps on O(10) entries.
constexpr double kExactTol = 1e-4;

using Params = std::vector<std::pair<std::string, at::Tensor>>;
using State = std::vector<std::pair<std::string, at::Tensor>>;

TEST(GradientReducer, PowerSgdIsExactWhenTheMeanHasRankAtMostR) {
  for (int W : {1, 2, 3, 4}) {
    testing::run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
      at::Tensor w = at::zeros({8, 6});
      at::Tensor b = at::zeros({6});
      GradientReducer red({{"w", w}, {"b", b}}, make_compressor("powersgd", Config{{"rank", "2"}}), c,
                          ReducerOptions().min_compression_rate(0));
      // Every rank's gradient lies in the same 2-D column space: the mean has rank <= 2.
      at::Tensor u = at::arange(8, at::kFloat).unsqueeze(1);
      at::Tensor v = at::ones({8, 1});
      const double r = c->rank();
      w.mutable_grad() = u.matmul(at::full({1, 6}, r + 1)) + v.matmul(at::arange(6, at::kFloat).unsqueeze(0) * (r - 1));
      b.mutable_grad() = at::full({6}, r);
      at::Tensor want_w = at::zeros({8, 6});
      for (int q = 0; q < W; ++q)
        want_w += u.matmul(at::full({1, 6}, q + 1.0)) + v.matmul(at::arange(6, at::kFloat).unsqueeze(0) * (q - 1.0));
      want_w /= W;
      red.reduce();
      EXPECT_LT((w.grad() - want_w).abs().max().item<double>(), kExactTol) << "W=" << W;
      EXPECT_TRUE(at::allclose(b.grad(), at::full({6}, (W - 1) / 2.0)));
      EXPECT_EQ(red.stats().last_floats_sent, red.expected_bytes(0) / 4);
      EXPECT_EQ(red.stats().last_floats_sent, 2 * (8 + 6) + 6);
    });
  }
}

// Small integers times W: x/W (pre-division) and every sum of them are exact in fp32, so the mean
// is exact and known.
at::Tensor exact_grad(at::IntArrayRef shape, uint64_t seed, int W) {
  auto gen = at::detail::createCPUGenerator(seed);
  return at::randint(-6, 7, shape, gen, at::TensorOptions().dtype(at::kFloat)) * W;
}

at::Tensor entry(const State& state, const std::string& key) {
  for (const auto& kv : state)
    if (kv.first == key) return kv.second;
  return at::Tensor();
}

// ---------------------------------------------------------------------------------------------
// 6. Reported floats == floats handed to the communicator == expected_floats(s) == §8 by hand.

struct Spec {
  std::string name;
  std::vector<int64_t> shape;
};
// With r = 2 and ρ = 2: w1 is compressed in both modes, w2 [4, 4] in neither (alternating: 16 > 16
// is false), w4 [6, 6] only in alternating mode (36 > 2·24 false, 36 > 2·12 true), w3 views as
// [10, 12] and is compressed in both, bias never.
const std::vector<Spec> kSpecs = {
    {"w1", {16, 8}}, {"w2", {4, 4}}, {"w3", {10, 3, 2, 2}}, {"w4", {6, 6}}, {"bias", {16}},
};

// docs/algorithms.md §1.3 and §8, written out independently of the library: k(m+n) per compressed matrix
// (alternating: k·n on even half steps, k·m on odd ones) plus Σ numel of the dense tensors.
int64_t floats_by_hand(const std::string& mode, int64_t r, double rho, int64_t s,
                       std::vector<std::string>* compressed) {
  int64_t total = 0;
  for (const auto& p : kSpecs) {
    int64_t numel = 1;
    for (int64_t d : p.shape) numel *= d;
    if (s < 0 || p.shape.size() < 2) {  // dense warm-up, or a vector
      total += numel;
      continue;
    }
    const int64_t m = p.shape[0], n = numel / m, k = std::min({r, m, n});
    const double c = mode == "alternating" ? 0.5 * double((m + n) * k) : double((m + n) * k);
    if (!(double(m * n) > rho * c)) {
      total += numel;
      continue;
    }
    if (compressed) compressed->push_back(p.name);
    total += mode == "alternating" ? (s % 2 == 0 ? k * n : k * m) : k * (m + n);
  }
  return total;
}

constexpr int64_t kAccountingStartIter = 2, kAccountingSteps = 6, kAccountingRank = 2;

TEST(GradientReducer, ReportedFloatsEqualFloatsSentAndTheFormula) {
  for (int W : {1, 2, 3}) {
    testing::run_ranks_shared(W, [](std::shared_ptr<comm::Communicator> c) {
      for (const std::string mode : {"two_allreduce", "alternating"}) {
        Params ps;
        int64_t numel = 0;
        for (const auto& s : kSpecs) {
          ps.emplace_back(s.name, at::zeros(s.shape));
          numel += ps.back().second.numel();
        }
        GradientReducer red(
            ps, make_compressor("powersgd", Config{{"rank", std::to_string(kAccountingRank)}, {"powersgd_mode", mode}}),
            c, ReducerOptions().start_iter(kAccountingStartIter));
        std::vector<std::string> by_hand;
        floats_by_hand(mode, kAccountingRank, 2.0, 0, &by_hand);
        EXPECT_EQ(red.compressed_names(), by_hand) << mode;
        const std::vector<std::string> pinned =
            mode == "alternating" ? std::vector<std::string>{"w1", "w3", "w4"} : std::vector<std::string>{"w1", "w3"};
        EXPECT_EQ(by_hand, pinned);
        int64_t sent_all = 0, sent_compressed = 0;
        for (int64_t t = 0; t < kAccountingSteps; ++t) {
          const int64_t s = t - kAccountingStartIter;
          for (size_t j = 0; j < ps.size(); ++j)
            ps[j].second.mutable_grad() = randn_seeded(kSpecs[j].shape, mix({uint64_t(c->rank()), uint64_t(t), j}), at::kFloat);
          const int64_t bytes_before = c->stats().bytes_sent;
          red.reduce();
          const int64_t handed = (c->stats().bytes_sent - bytes_before) / 4;
          const int64_t hand = floats_by_hand(mode, kAccountingRank, 2.0, s, nullptr);
          EXPECT_EQ(red.stats().last_floats_sent, handed) << mode << " t=" << t;
          EXPECT_EQ(red.expected_bytes(s) / 4, hand) << mode << " t=" << t;
          EXPECT_EQ(red.stats().last_floats_sent, hand) << mode << " t=" << t;
          sent_all += hand;
          if (s >= 0) sent_compressed += hand;
        }
        // Spot values: two_allreduce 2·(16+8) + 16 + 2·(10+12) + 36 + 16; alternating even steps
        // 2·8 + 16 + 2·12 + 2·6 + 16, odd steps 2·16 + 16 + 2·10 + 2·6 + 16.
        if (mode == "two_allreduce") EXPECT_EQ(red.expected_bytes(0) / 4, 48 + 16 + 44 + 36 + 16);
        if (mode == "alternating") EXPECT_EQ(red.expected_bytes(0) / 4, 16 + 16 + 24 + 12 + 16);
        if (mode == "alternating") EXPECT_EQ(red.expected_bytes(1) / 4, 32 + 16 + 20 + 12 + 16);
        const auto& st = red.stats();
        EXPECT_EQ(st.steps, kAccountingSteps);
        EXPECT_EQ(st.compressed_steps, kAccountingSteps - kAccountingStartIter);
        EXPECT_EQ(st.floats_sent, sent_all);
        EXPECT_EQ(st.compressed_floats_sent, sent_compressed);
        EXPECT_EQ(st.dense_floats, kAccountingSteps * numel);
        EXPECT_DOUBLE_EQ(st.compression_ratio(),
                         double((kAccountingSteps - kAccountingStartIter) * numel) / double(sent_compressed));
        EXPECT_DOUBLE_EQ(st.whole_run_compression_ratio(), double(kAccountingSteps * numel) / double(sent_all));
        EXPECT_GT(st.compression_ratio(), 1.0);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// 9. Dense warm-up: t < start_iter is a plain mean with no EF and no state; compression starts at
// t = start_iter with e = 0 and the step-0 random stream.

constexpr int64_t kWarmUpSteps = 3;

TEST(GradientReducer, DenseWarmUpThenCompressionFromStartIter) {
  for (int W : {1, 2, 3}) {
    testing::run_ranks_shared(W, [W](std::shared_ptr<comm::Communicator> c) {
      for (const EfResidual residual : {EfResidual::kLocal, EfResidual::kGlobal}) {
        const std::string residual_name = choice_name(residual, ef_residual_choices());
        at::Tensor w = at::zeros({8, 6}), b = at::zeros({5});
        GradientReducer red({{"w", w}, {"b", b}}, make_compressor("powersgd"), c,
                            ReducerOptions().start_iter(kWarmUpSteps).ef_residual(residual));
        ASSERT_EQ(red.compressed_names(), std::vector<std::string>{"w"});
        for (int64_t t = 0; t < kWarmUpSteps; ++t) {
          at::Tensor want_w = at::zeros({8, 6}), want_b = at::zeros({5});
          for (int i = 0; i < W; ++i) {
            want_w += exact_grad({8, 6}, mix({1, uint64_t(i), uint64_t(t)}), W) / W;
            want_b += exact_grad({5}, mix({2, uint64_t(i), uint64_t(t)}), W) / W;
          }
          w.mutable_grad() = exact_grad({8, 6}, mix({1, uint64_t(c->rank()), uint64_t(t)}), W);
          b.mutable_grad() = exact_grad({5}, mix({2, uint64_t(c->rank()), uint64_t(t)}), W);
          red.reduce();
          EXPECT_TRUE(at::equal(w.grad(), want_w)) << residual_name << " W=" << W << " t=" << t;
          EXPECT_TRUE(at::equal(b.grad(), want_b)) << residual_name << " W=" << W << " t=" << t;
          EXPECT_EQ(red.stats().last_floats_sent, 48 + 5);
          EXPECT_EQ(red.stats().compressed_steps, 0);
          EXPECT_EQ(red.state_dict().size(), 4u) << "warm-up keeps no EF buffer and no compressor state (only version, step, stats, settings)";
        }
        // t = start_iter: the first compressed step, identical to step 0 of a reducer without warm-up.
        at::Tensor w0 = at::zeros({8, 6}), b0 = at::zeros({5});
        GradientReducer fresh({{"w", w0}, {"b", b0}}, make_compressor("powersgd"), c,
                              ReducerOptions().ef_residual(residual));
        for (at::Tensor* x : {&w, &w0}) x->mutable_grad() = randn_seeded({8, 6}, mix({3, uint64_t(c->rank())}), at::kFloat);
        for (at::Tensor* x : {&b, &b0}) x->mutable_grad() = randn_seeded({5}, mix({4, uint64_t(c->rank())}), at::kFloat);
        red.reduce();
        fresh.reduce();
        EXPECT_EQ(red.stats().last_floats_sent, 1 * (8 + 6) + 5);
        EXPECT_EQ(red.stats().compressed_steps, 1);
        EXPECT_TRUE(at::equal(w.grad(), w0.grad())) << residual_name << " W=" << W;
        EXPECT_TRUE(at::equal(b.grad(), b0.grad())) << residual_name << " W=" << W;
        const State s = red.state_dict();
        EXPECT_TRUE(entry(s, "ef/w").defined());
        EXPECT_TRUE(entry(s, "state/w/Q").defined());
        EXPECT_EQ(entry(s, "ef/b").defined(), residual == EfResidual::kGlobal);  // dense EF only with global residual
        EXPECT_TRUE(at::equal(entry(s, "ef/w"), entry(fresh.state_dict(), "ef/w")));
      }
    });
  }
}

TEST(GradientReducer, ErrorFeedbackOffKeepsNoBuffers) {
  auto c = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
  at::Tensor w = at::zeros({8, 6});
  GradientReducer red({{"w", w}}, make_compressor("powersgd"), c, ReducerOptions().error_feedback(0));
  EXPECT_FALSE(red.error_feedback());
  w.mutable_grad() = randn_seeded({8, 6}, 1, at::kFloat);
  red.reduce();
  EXPECT_FALSE(entry(red.state_dict(), "ef/w").defined());
  EXPECT_TRUE(entry(red.state_dict(), "state/w/Q").defined());
  EXPECT_GT(red.stats().relative_error, 0.0);  // lossy at rank 1
  EXPECT_EQ(red.stats().ef_norm, 0.0);
}

// EMA error feedback (ef_beta = β, docs/algorithms.md §1.4): after every step e = β·e_old + (1−β)·r, r the
// step's residual. With the global residual r = Δ − ĝ on every tensor (the dense vector included);
// with W = 1 the local residual is Δ − ĝ too, so the identity is checkable from the outputs alone.
// A GreedyLore refresh (s mod 3 = 0 here) still sets the compressed matrix's e to 0, under either residual.
TEST(GradientReducer, EmaErrorFeedbackMixesTheOldBufferWithTheResidual) {
  constexpr double kBeta = 0.25;
  constexpr double kTol = 1e-5;  // fp32 rounding of O(1) entries
  struct Case {
    std::string compressor;
    Config config;
    int W;
    EfResidual residual;
  };
  const std::vector<Case> cases = {
      {"powersgd", Config{{"rank", "1"}}, 2, EfResidual::kGlobal},
      {"greedylore", Config{{"rank", "1"}, {"refresh_period", "3"}, {"dense_steps", "0"}}, 1, EfResidual::kLocal},
      {"greedylore", Config{{"rank", "1"}, {"refresh_period", "3"}, {"dense_steps", "0"}}, 2, EfResidual::kGlobal},
  };
  for (const auto& k : cases) {
    testing::run_ranks_shared(k.W, [&](std::shared_ptr<comm::Communicator> c) {
      Params ps = {{"w", at::zeros({8, 6})}, {"b", at::zeros({6})}};
      GradientReducer red(ps, make_compressor(k.compressor, k.config), c,
                          ReducerOptions().min_compression_rate(0).ef_residual(k.residual).ef_beta(kBeta));
      std::vector<at::Tensor> e_old = {at::zeros({8, 6}), at::zeros({6})};
      double ema_vs_ef14 = 0;  // how far the EMA buffer is from the plain residual: must be visible
      for (int64_t s = 0; s < 5; ++s) {
        std::vector<at::Tensor> delta;
        for (size_t i = 0; i < ps.size(); ++i) {
          at::Tensor g = randn_seeded(ps[i].second.sizes(), mix({7, uint64_t(c->rank()), uint64_t(s), i}), at::kFloat);
          ps[i].second.mutable_grad() = g;
          delta.push_back(g + e_old[i]);
        }
        red.reduce();
        for (size_t i = 0; i < ps.size(); ++i) {
          const bool refresh = k.compressor == "greedylore" && s % 3 == 0 && ps[i].first == "w";  // not the dense b
          at::Tensor e = entry(red.state_dict(), "ef/" + ps[i].first);
          if (!e.defined()) e = at::zeros_like(e_old[i]);
          const at::Tensor r = delta[i] - ps[i].second.grad();
          const at::Tensor want = refresh ? at::zeros_like(r) : kBeta * e_old[i] + (1 - kBeta) * r;
          EXPECT_LT((e - want).abs().max().item<double>(), kTol)
              << k.compressor << " step " << s << " " << ps[i].first << " rank " << c->rank();
          if (!refresh) ema_vs_ef14 = std::max(ema_vs_ef14, (e - r).abs().max().item<double>());
          e_old[i] = e;
        }
      }
      EXPECT_GT(ema_vs_ef14, 0.1) << k.compressor << ": the EMA never differed from plain EF14";
    });
  }
}

// ---------------------------------------------------------------------------------------------
// 13. state_dict()/load_state_dict(): a reducer restored from another's state continues
// bit-identically.

constexpr int64_t kBefore = 3, kAfter = 3;

TEST(GradientReducer, StateDictRoundTripContinuesBitIdentically) {
  testing::run_ranks_shared(2, [](std::shared_ptr<comm::Communicator> c) {
    for (const std::string mode : {"two_allreduce", "alternating"}) {
      for (bool warm : {true, false}) {
        if (mode == "alternating" && !warm) continue;
        auto make = [&](Params& ps) {
          ps.clear();
          for (const auto& s : kSpecs) ps.emplace_back(s.name, at::zeros(s.shape));
          Config cfg{{"rank", "2"}, {"powersgd_mode", mode}, {"warm_start", warm ? "true" : "false"}};
          return std::make_unique<GradientReducer>(ps, make_compressor("powersgd", cfg), c,
                                                   ReducerOptions().start_iter(1).ef_residual(EfResidual::kGlobal).seed(3));
        };
        auto feed = [&](Params& ps, int64_t t) {
          for (size_t j = 0; j < ps.size(); ++j)
            ps[j].second.mutable_grad() = randn_seeded(kSpecs[j].shape, mix({uint64_t(c->rank()), uint64_t(t), j}), at::kFloat);
        };
        Params pa, pb;
        auto a = make(pa);
        for (int64_t t = 0; t < kBefore; ++t) {
          feed(pa, t);
          a->reduce();
        }
        auto b = make(pb);
        b->load_state_dict(a->state_dict());
        EXPECT_EQ(b->step(), kBefore);
        for (int64_t t = kBefore; t < kBefore + kAfter; ++t) {
          feed(pa, t);
          feed(pb, t);
          a->reduce();
          b->reduce();
          for (size_t j = 0; j < pa.size(); ++j)
            EXPECT_TRUE(at::equal(pa[j].second.grad(), pb[j].second.grad()))
                << mode << " warm=" << warm << " t=" << t << " " << pa[j].first;
        }
        const State sa = a->state_dict(), sb = b->state_dict();
        ASSERT_EQ(sa.size(), sb.size());
        for (size_t i = 0; i < sa.size(); ++i) {
          EXPECT_EQ(sa[i].first, sb[i].first);
          EXPECT_TRUE(at::equal(sa[i].second, sb[i].second)) << mode << " " << sa[i].first;
        }
        EXPECT_TRUE(entry(sa, "ef/w1").defined());
        EXPECT_TRUE(entry(sa, "state/w1/Q").defined());
      }
    }
  });
}

TEST(GradientReducer, LoadStateDictRejectsForeignState) {
  auto c = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
  at::Tensor w = at::zeros({8, 6});
  GradientReducer red({{"w", w}}, make_compressor("powersgd"), c);
  auto message = [&](const State& s) -> std::string {
    try {
      red.load_state_dict(s);
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "<no error>";
  };
  // A valid header (version, step, stats, settings) plus one bad entry each; the error names the entry.
  const State header = red.state_dict();
  ASSERT_EQ(header.size(), 4u);
  auto with = [&](const State& extra) {
    State s = header;
    s.insert(s.end(), extra.begin(), extra.end());
    return s;
  };
  const std::map<std::string, State> cases = {
      {"'ef/v'", with({{"ef/v", at::zeros({8, 6})}})},
      {"'state/v/Q'", with({{"state/v/Q", at::zeros({6, 1})}})},
      {"'ef/w' has shape [8, 5]", with({{"ef/w", at::zeros({8, 5})}})},
      {"'bogus'", with({{"bogus", at::zeros({1})}})},
      {"format version 7", {{"version", at::tensor({int64_t(7)})}, header[1], header[2]}},
      {"expected an int64 tensor of 11 counters", {header[0], header[1], {"stats", at::zeros({3}, at::kLong)}}},
      {"must be a uint8 vector", {header[0], header[1], {"settings", at::zeros({3}, at::kLong)}}},
  };
  for (const auto& kv : cases) {
    const std::string msg = message(kv.second);
    EXPECT_NE(msg.find(kv.first), std::string::npos) << msg;
  }
  // A state saved under other compressor settings (another rank: other factor shapes) is refused
  // by name, not left to fail inside the next reduce().
  at::Tensor w3 = at::zeros({8, 6});
  GradientReducer other({{"w", w3}}, make_compressor("powersgd", Config{{"rank", "3"}}), c);
  const std::string msg = message(other.state_dict());
  EXPECT_NE(msg.find("saved with settings 'powersgd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank=3"), std::string::npos) << msg;
  // A rejected load leaves the state as it was: step 0, no EF buffer.
  for (const auto& kv : red.state_dict()) EXPECT_NE(kv.first.rfind("ef/", 0), 0u) << kv.first;
  EXPECT_EQ(red.step(), 0);
}

}  // namespace
}  // namespace lowrank
