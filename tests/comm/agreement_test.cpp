// Set-up agreement (STYLE.md "Distributed bugs fail, they don't hang"): ranks that disagree on the
// compressor, its options, the reducer options or the parameters must all fail at construction,
// quickly, with a message naming the differing line.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

// Collectives time out after kCommTimeout; a mismatch must be reported well before that, by the
// agreement check itself rather than by a timed-out collective.
constexpr std::chrono::milliseconds kCommTimeout{8000};
constexpr double kMaxSeconds = 4.0;

using Params = std::vector<std::pair<std::string, at::Tensor>>;

struct RankSetup {
  Params params;
  std::string compressor = "powersgd";
  Config config;
  ReducerOptions options;
};

struct Outcome {
  std::vector<std::string> errors;  // per rank; empty string = constructed without error
  double seconds = 0;
};

// Constructs a GradientReducer on every rank of a W-rank gloo group with setup_of(rank).
Outcome construct_on_all(int W, const std::function<RankSetup(int)>& setup_of) {
  Outcome out;
  out.errors.assign(W, "");
  std::mutex mu;
  const auto start = std::chrono::steady_clock::now();
  testing::run_ranks_shared(
      W,
      [&](std::shared_ptr<comm::Communicator> c) {
        RankSetup s = setup_of(c->rank());
        std::string error;
        try {
          GradientReducer red(s.params, make_compressor(s.compressor, s.config), c, s.options);
        } catch (const c10::Error& e) {
          error = e.what_without_backtrace();
        }
        std::lock_guard<std::mutex> lock(mu);
        out.errors[c->rank()] = error;
      },
      kCommTimeout);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

Params default_params() { return {{"w", at::zeros({8, 6})}, {"b", at::zeros({6})}}; }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(ReducerAgreement, AgreeingRanksConstruct) {
  for (int W : {1, 2, 3, 4}) {
    const Outcome o = construct_on_all(W, [](int) {
      RankSetup s;
      s.params = default_params();
      s.config = Config{{"rank", "2"}};
      return s;
    });
    for (int r = 0; r < W; ++r) EXPECT_EQ(o.errors[r], "") << "W=" << W << " rank " << r;
  }
}

// Every case: rank `odd` differs from the others in one respect; all ranks must throw, and each
// message must show both versions of the differing line.
struct Mismatch {
  std::string what;
  std::function<void(RankSetup&)> change;
  std::string ours, theirs;  // substrings of the line on an agreeing rank and on the odd rank
};

TEST(ReducerAgreement, MismatchFailsOnEveryRankNamingTheLine) {
  const std::vector<Mismatch> cases = {
      {"rank",
       [](RankSetup& s) {
         s.config = Config{{"rank", "3"}};
       },
       "powersgd(rank=2", "powersgd(rank=3"},
      {"compressor",
       [](RankSetup& s) {
         s.compressor = "none";
         s.config = Config{};
       },
       "compressor powersgd", "compressor none"},
      {"shape",
       [](RankSetup& s) {
         s.params[0].second = at::zeros({8, 7});
       },
       "param w [8, 6]", "param w [8, 7]"},
      {"name", [](RankSetup& s) { s.params[0].first = "v"; }, "param w ", "param v "},
      {"extra parameter", [](RankSetup& s) { s.params.emplace_back("extra", at::zeros({3})); }, "<nothing>",
       "param extra"},
      {"start_iter", [](RankSetup& s) { s.options.start_iter(5); }, "start_iter=0", "start_iter=5"},
      {"dtype", [](RankSetup& s) { s.params[1].second = at::zeros({6}, at::kDouble); }, "param b [6] Float",
       "param b [6] Double"},
  };
  for (int W : {2, 3}) {
    for (const auto& mm : cases) {
      const int odd = W - 1;
      const Outcome o = construct_on_all(W, [&](int rank) {
        RankSetup s;
        s.params = default_params();
        s.config = Config{{"rank", "2"}};
        if (rank == odd) mm.change(s);
        return s;
      });
      EXPECT_LT(o.seconds, kMaxSeconds) << mm.what << " W=" << W;
      for (int r = 0; r < W; ++r) {
        const std::string& e = o.errors[r];
        ASSERT_FALSE(e.empty()) << mm.what << " W=" << W << ": rank " << r << " constructed without error";
        EXPECT_TRUE(contains(e, "disagree")) << e;
        EXPECT_TRUE(contains(e, "rank " + std::to_string(r))) << e;
        EXPECT_TRUE(contains(e, mm.ours)) << mm.what << " W=" << W << " rank " << r << ":\n" << e;
        EXPECT_TRUE(contains(e, mm.theirs)) << mm.what << " W=" << W << " rank " << r << ":\n" << e;
      }
    }
  }
}

}  // namespace
}  // namespace lowrank
