// skip_nonfinite: a NaN or Inf in one rank's gradient makes every rank skip the step without
// touching any state (issue 10).
#include <gtest/gtest.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "lowrank/compressors/registry.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "support/compressor_cases.h"
#include "support/multi_rank.h"
#include "support/seeded.h"

namespace lowrank {
namespace {

using testing::mix;
using testing::randn_seeded;
using State = std::vector<std::pair<std::string, at::Tensor>>;

torch::nn::Sequential make_net() {
  torch::nn::Sequential net(torch::nn::Linear(24, 32), torch::nn::ReLU(), torch::nn::Linear(32, 16));
  torch::NoGradGuard no_grad;
  uint64_t k = 0;
  for (auto& p : net->parameters()) p.copy_(0.2 * randn_seeded(p.sizes(), mix({3, k++}), at::kFloat));
  return net;
}

std::vector<std::pair<std::string, at::Tensor>> named(torch::nn::Sequential& net) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : net->named_parameters()) out.emplace_back(kv.key(), kv.value());
  return out;
}

// Backward on a seeded batch; `poison` plants `bad` in the second weight's gradient during
// backward (a tensor hook), where overlap sees it: a bucket may start before backward() returns.
void backward(torch::nn::Sequential& net, int rank, int64_t step, bool poison = false,
              double bad = std::nan("")) {
  for (auto& p : net->parameters()) {
    p.mutable_grad().detach_();
    p.mutable_grad().zero_();
  }
  at::Tensor x = randn_seeded({8, 24}, mix({11, uint64_t(rank), uint64_t(step)}), at::kFloat);
  at::Tensor w = net->parameters()[2];
  unsigned hook = 0;
  if (poison)
    hook = w.register_hook([bad](const at::Tensor& g) {
      at::Tensor c = g.clone();
      c.view(-1)[5] = bad;
      return c;
    });
  net->forward(x).pow(2).mean().backward();
  if (poison) w.remove_hook(hook);
}

void sgd(torch::nn::Sequential& net) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.sub_(0.1 * p.grad());
}

State cloned(const State& s) {
  State out;
  for (const auto& kv : s) out.emplace_back(kv.first, kv.second.clone());
  return out;
}

void expect_same_state(const State& a, const State& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first) << what;
    if (a[i].first == state_keys::kStats) continue;  // counts the skip itself (checked separately)
    EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << what << " " << a[i].first;
  }
}

// Two reducers on each of 2 ranks see the same steps, except that the "hit" one also sees a step
// where rank 1's gradient holds NaN (or Inf): that step must be skipped on both ranks with no state
// changed, so afterwards both reducers give bit-identical gradients.
TEST(NonFinite, OneRanksNanSkipsTheStepEverywhereAndTouchesNoState) {
  auto cases = testing::compressor_cases();
  cases.push_back({"noop", {}});  // sends nothing, but every rank still skips the same steps
  for (const auto& c : cases) {
    for (double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
      for (bool overlap : {true, false}) {
        testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> comm) {
          const std::string what = c.compressor + " bad=" + std::to_string(bad) + " overlap=" + std::to_string(overlap);
          auto net_hit = make_net(), net_ref = make_net();
          const auto opts = ReducerOptions().min_compression_rate(0).overlap(overlap);
          GradientReducer hit(named(net_hit), make_compressor(c.compressor, c.config), comm, opts);
          GradientReducer ref(named(net_ref), make_compressor(c.compressor, c.config), comm, opts);
          const int r = comm->rank();
          for (int64_t s = 0; s < 6; ++s) {
            if (s == 3) {
              const State before = cloned(hit.state_dict());
              const int64_t step_before = hit.step();
              backward(net_hit, r, 100, /*poison=*/r == 1, bad);
              EXPECT_FALSE(hit.reduce()) << what;
              expect_same_state(before, hit.state_dict(), what);
              EXPECT_EQ(hit.step(), step_before) << what;
              EXPECT_EQ(hit.last_nonfinite_ranks(), std::vector<int>{1}) << what;
              EXPECT_EQ(hit.last_nonfinite_param(), r == 1 ? "2.weight" : "") << what;
              EXPECT_EQ(hit.stats().skipped_steps, 1) << what;
            }
            // One reducer's backward and reduce at a time: both share the communicator, and with
            // overlap a bucket's collectives start during backward().
            backward(net_hit, r, s);
            EXPECT_TRUE(hit.reduce()) << what;
            backward(net_ref, r, s);
            EXPECT_TRUE(ref.reduce()) << what;
            auto ph = net_hit->named_parameters(), pr = net_ref->named_parameters();
            for (const auto& kv : ph)
              EXPECT_TRUE(at::equal(kv.value().grad(), pr[kv.key()].grad())) << what << " step " << s << " " << kv.key();
            sgd(net_hit);
            sgd(net_ref);
          }
          EXPECT_EQ(hit.stats().steps, ref.stats().steps) << what;
          EXPECT_EQ(hit.stats().bytes_sent, ref.stats().bytes_sent) << what;
        });
      }
    }
  }
}

// Without the check a NaN on one rank reaches every rank through the collectives (what the check
// prevents), and reduce() reports nothing.
TEST(NonFinite, WithoutTheCheckANanSpreadsToEveryRank) {
  testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> comm) {
    auto net = make_net();
    GradientReducer red(named(net), make_compressor("powersgd", Config{{"rank", "2"}}), comm,
                        // overlap off: with it on, the hooks would start the bucket before the NaN is planted
                        ReducerOptions().min_compression_rate(0).skip_nonfinite(false).overlap(false));
    backward(net, comm->rank(), 0, /*poison=*/comm->rank() == 1);
    EXPECT_TRUE(red.reduce());
    bool any_nan = false;
    for (auto& p : net->parameters()) any_nan = any_nan || at::isnan(p.grad()).any().item<bool>();
    EXPECT_TRUE(any_nan) << "rank " << comm->rank();
  });
}

}  // namespace
}  // namespace lowrank
