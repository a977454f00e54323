// Buckets, overlap with backward() and the allocation-free steady state (issue 8).
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/activation.h>

#include <atomic>
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

// A small MLP whose weights are bit-identical for one seed: 32 -> 64 -> 64 -> 10.
torch::nn::Sequential make_net(uint64_t seed) {
  torch::nn::Sequential net(torch::nn::Linear(32, 64), torch::nn::ReLU(), torch::nn::Linear(64, 64),
                            torch::nn::ReLU(), torch::nn::Linear(64, 10));
  torch::NoGradGuard no_grad;
  uint64_t k = 0;
  for (auto& p : net->parameters()) p.copy_(0.2 * randn_seeded(p.sizes(), mix({seed, k++}), at::kFloat));
  return net;
}

std::vector<std::pair<std::string, at::Tensor>> named(torch::nn::Sequential& net) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : net->named_parameters()) out.emplace_back(kv.key(), kv.value());
  return out;
}

// One training step of rank `rank`: loss on a seeded batch, backward, reduce, SGD.
void train_step(torch::nn::Sequential& net, GradientReducer& red, int rank, int64_t step) {
  for (auto& p : net->parameters()) {  // what LibTorch's Optimizer::zero_grad() does
    p.mutable_grad().detach_();
    p.mutable_grad().zero_();
  }
  at::Tensor x = randn_seeded({16, 32}, mix({7, uint64_t(rank), uint64_t(step)}), at::kFloat);
  net->forward(x).pow(2).mean().backward();
  red.reduce();
}

void sgd(torch::nn::Sequential& net) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.sub_(0.1 * p.grad());
}

// The same steps through autograd hooks (overlap on, buckets start during backward) and through
// reduce() alone (overlap off) give bit-identical gradients, for several buckets and compressors
// whose steps differ (restarts, refreshes, the alternating mode).
TEST(Overlap, HookedAndManualPathsGiveBitIdenticalGradients) {
  const auto cases = testing::compressor_cases();
  for (const auto& c : cases) {
    testing::run_ranks_shared(2, [&](std::shared_ptr<comm::Communicator> comm) {
      auto net_a = make_net(1), net_b = make_net(1), net_c = make_net(1);
      // 2 KiB buckets: each layer's weight closes one, so the net spans 3 buckets. The finiteness
      // check (skip_nonfinite): off for a, on for c (guarded buckets, still started by the hooks).
      const auto opts = ReducerOptions().min_compression_rate(0).bucket_cap_mb(2.0 / 1024).ef_residual(EfResidual::kGlobal);
      GradientReducer a(named(net_a), make_compressor(c.compressor, c.config), comm,
                        ReducerOptions(opts).overlap(true).skip_nonfinite(false));
      GradientReducer b(named(net_b), make_compressor(c.compressor, c.config), comm, ReducerOptions(opts).overlap(false));
      GradientReducer cr(named(net_c), make_compressor(c.compressor, c.config), comm, ReducerOptions(opts).overlap(true));
      ASSERT_GE(a.bucket_names().size(), 3u) << a.describe();
      for (int64_t s = 0; s < 5; ++s) {
        train_step(net_a, a, comm->rank(), s);
        train_step(net_b, b, comm->rank(), s);
        train_step(net_c, cr, comm->rank(), s);
        auto pa = net_a->named_parameters(), pb = net_b->named_parameters(), pc = net_c->named_parameters();
        for (const auto& kv : pa) {
          const at::Tensor& ga = kv.value().grad();
          const at::Tensor& gb = pb[kv.key()].grad();
          EXPECT_TRUE(at::equal(ga, gb)) << c.compressor << " step " << s << " " << kv.key();
          EXPECT_TRUE(at::equal(ga, pc[kv.key()].grad())) << c.compressor << " step " << s << " " << kv.key();
          EXPECT_GT(ga.abs().max().item<double>(), 0.0) << c.compressor << " " << kv.key();
        }
        sgd(net_a);
        sgd(net_b);
        sgd(net_c);
      }
      // The hooks really started buckets during backward, with the check on too; the manual path
      // never does.
      EXPECT_GE(a.stats().buckets_from_backward, 5 * 3) << c.compressor;
      EXPECT_EQ(b.stats().buckets_from_backward, 0) << c.compressor;
      EXPECT_GE(cr.stats().buckets_from_backward, 5 * 3) << c.compressor;
      EXPECT_EQ(a.stats().bytes_sent, b.stats().bytes_sent);
      EXPECT_EQ(cr.stats().bytes_sent, b.stats().bytes_sent);
    });
  }
}

// The gradients really are views into the reducer's buffers: backward() accumulates into them and
// reduce() writes the average back without replacing the tensors.
TEST(Overlap, GradientsAreStableViewsIntoTheBuckets) {
  auto comm = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
  auto net = make_net(2);
  GradientReducer red(named(net), make_compressor("powersgd", Config{{"rank", "2"}}), comm,
                      ReducerOptions().min_compression_rate(0));
  std::vector<void*> before;
  for (auto& p : net->parameters()) before.push_back(p.grad().data_ptr());
  for (int64_t s = 0; s < 3; ++s) {
    train_step(net, red, 0, s);
    size_t i = 0;
    for (auto& p : net->parameters()) EXPECT_EQ(p.grad().data_ptr(), before[i++]) << "step " << s;
  }
}

// With overlap on, a second backward() before reduce() would add to gradients that are already
// being sent: it throws, naming a parameter and the remedy.
TEST(Overlap, ASecondBackwardBeforeReduceThrows) {
  auto comm = std::shared_ptr<comm::Communicator>(comm::make_local_communicator());
  auto net = make_net(3);
  GradientReducer red(named(net), make_compressor("powersgd", Config{{"rank", "2"}}), comm,
                      ReducerOptions().min_compression_rate(0));
  at::Tensor x = randn_seeded({4, 32}, 1, at::kFloat);
  net->forward(x).sum().backward();
  try {
    net->forward(x).sum().backward();
    FAIL() << "a second backward() before reduce() did not throw";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("accumulated twice before reduce()"), std::string::npos) << msg;
    EXPECT_NE(msg.find("overlap(false)"), std::string::npos) << msg;
  }
  red.reduce();  // the first backward's buckets still complete
  // Without overlap, accumulating over two backward() calls is fine.
  auto net2 = make_net(3);
  GradientReducer plain(named(net2), make_compressor("none"), comm, ReducerOptions().overlap(false));
  net2->forward(x).sum().backward();
  net2->forward(x).sum().backward();
  plain.reduce();
  auto p1 = net->named_parameters();
  EXPECT_TRUE(at::allclose(net2->named_parameters()["0.bias"].grad(), 2 * p1["0.bias"].grad(), 1e-5, 1e-6));
}

// Counts allocations of at least `threshold` bytes made through the CPU allocator.
struct CountingAllocator : public c10::Allocator {
  explicit CountingAllocator(c10::Allocator* base, size_t threshold) : base_(base), threshold_(threshold) {}
  c10::DataPtr allocate(size_t n) const override {
    if (n >= threshold_) big_.fetch_add(1);
    return base_->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return base_->raw_deleter(); }
  int64_t big() const { return big_.load(); }
  c10::Allocator* base_;
  size_t threshold_;
  mutable std::atomic<int64_t> big_{0};
};

// Steady-state steps allocate no gradient-sized memory: every gradient, error and output buffer is
// allocated once, at construction. Matrices are 128x256 fp32 (128 KiB); the rank-4 factors and
// the biases stay under 16 KiB, the threshold. Covers the dense path, PowerSGD in both modes, the
// non-restart steps of PowerSGD+, the general EF path (EMA) and W = 2.
TEST(Overlap, SteadyStateStepsAllocateNoGradientSizedMemory) {
  const std::vector<std::pair<testing::CompressorCase, ReducerOptions>> cases = {
      {{"none", {}}, ReducerOptions()},
      {{"powersgd", {{"rank", "4"}}}, ReducerOptions()},
      {{"powersgd", {{"rank", "4"}, {"powersgd_mode", "alternating"}}}, ReducerOptions()},
      {{"powersgd+", {{"rank", "4"}, {"restart_period", "1000"}}}, ReducerOptions()},
      {{"powersgd", {{"rank", "4"}}}, ReducerOptions().ef_beta(0.5).ef_residual(EfResidual::kGlobal)},
  };
  for (int W : {1, 2}) {
    for (const auto& c : cases) {
      std::vector<int64_t> counts(W, -1);
      testing::run_ranks_shared(W, [&](std::shared_ptr<comm::Communicator> comm) {
        std::vector<std::pair<std::string, at::Tensor>> params;
        for (int i = 0; i < 3; ++i) params.emplace_back("w" + std::to_string(i), at::zeros({128, 256}));
        params.emplace_back("b", at::zeros({128}));
        GradientReducer red(params, make_compressor(c.first.compressor, c.first.config), comm,
                            ReducerOptions(c.second).overlap(false));
        std::vector<at::Tensor> grads;
        for (auto& p : params)
          grads.push_back(randn_seeded(p.second.sizes(), mix({uint64_t(comm->rank()), uint64_t(grads.size())}), at::kFloat));
        auto step = [&] {
          for (size_t i = 0; i < params.size(); ++i) params[i].second.grad().copy_(grads[i]);  // as backward() would
          red.reduce();
        };
        step();
        step();  // warm-start state exists from here on
        static CountingAllocator* counter = nullptr;
        static std::mutex mu;
        {
          std::lock_guard<std::mutex> lk(mu);
          if (!counter) {
            counter = new CountingAllocator(c10::GetCPUAllocator(), 16 * 1024);
            c10::SetCPUAllocator(counter, /*priority=*/100);
          }
        }
        const int64_t before = counter->big();
        for (int s = 0; s < 3; ++s) step();
        counts[comm->rank()] = counter->big() - before;
      });
      for (int r = 0; r < W; ++r)
        EXPECT_EQ(counts[r], 0) << c.first.compressor << " " << c.second << " W=" << W << " rank " << r;
    }
  }
}

}  // namespace
}  // namespace lowrank
