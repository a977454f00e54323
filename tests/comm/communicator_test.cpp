#include "lowrank/comm/communicator.h"

#include <gtest/gtest.h>

#include "lowrank/comm/launch_env.h"
#include "support/multi_rank.h"

namespace lowrank {
namespace {

using testing::run_on;
using testing::run_ranks;

class CommWorldSize : public ::testing::TestWithParam<int> {};

TEST_P(CommWorldSize, AllReduceSumIsExactOnIntegers) {
  const int W = GetParam();
  run_ranks(W, [W](comm::Communicator& c) {
    ASSERT_EQ(c.size(), W);
    at::Tensor t = at::arange(5, at::kFloat) + c.rank() * 10;
    c.all_reduce_(t);
    // Σ_r (j + 10 r) = W j + 10 W(W−1)/2, exact in fp32.
    at::Tensor want = at::arange(5, at::kFloat) * W + 10.0 * W * (W - 1) / 2;
    EXPECT_TRUE(at::equal(t, want)) << t;
  });
}

TEST_P(CommWorldSize, AllGatherReturnsEveryRanksTensorInOrder) {
  const int W = GetParam();
  run_ranks(W, [W](comm::Communicator& c) {
    auto all = c.all_gather(at::full({3}, double(c.rank()), at::kDouble));
    ASSERT_EQ(static_cast<int>(all.size()), W);
    for (int r = 0; r < W; ++r) EXPECT_TRUE(at::equal(all[r], at::full({3}, double(r), at::kDouble)));
  });
}

TEST_P(CommWorldSize, AsyncHandlesCompleteInIssueOrderAndCountBytes) {
  const int W = GetParam();
  run_ranks(W, [W](comm::Communicator& c) {
    at::Tensor a = at::ones({7});
    at::Tensor b = at::full({2}, 3.0);
    auto ha = c.all_reduce_async(a);
    auto hb = c.all_reduce_async(b);
    hb->wait();
    ha->wait();
    EXPECT_TRUE(at::equal(a, at::full({7}, double(W))));
    EXPECT_TRUE(at::equal(b, at::full({2}, 3.0 * W)));
    EXPECT_EQ(c.stats().bytes_sent, (7 + 2) * 4);
    EXPECT_EQ(c.stats().collectives, 2);
  });
}

TEST_P(CommWorldSize, InProcessGroupMatchesGlooAndBroadcasts) {
  const int W = GetParam();
  run_on(comm::make_in_process_group(W), [W](comm::Communicator& c) {
    at::Tensor t = at::full({4}, double(c.rank() + 1), at::kDouble);
    c.all_reduce_(t, comm::ReduceOp::kMax);
    EXPECT_TRUE(at::equal(t, at::full({4}, double(W), at::kDouble)));
    for (int i = 0; i < 20; ++i) {  // many back-to-back collectives must not mix generations
      at::Tensor u = at::full({1}, double(c.rank() + i));
      c.all_reduce_(u);
      EXPECT_EQ(u.item<float>(), float(W * i + W * (W - 1) / 2));
    }
    at::Tensor b = at::full({2}, double(c.rank()));
    c.broadcast_(b, W - 1);
    EXPECT_TRUE(at::equal(b, at::full({2}, double(W - 1))));
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CommWorldSize, ::testing::Values(1, 2, 3, 4));

TEST(Communicator, LocalWorldSizeOneNeedsNoNetwork) {
  auto c = comm::make_local_communicator();
  at::Tensor t = at::arange(3, at::kFloat);
  c->all_reduce_mean_(t);
  EXPECT_TRUE(at::equal(t, at::arange(3, at::kFloat)));
  EXPECT_EQ(c->size(), 1);
  auto tcp = comm::make_tcp_communicator(0, 1, "127.0.0.1", 1);  // world size 1: no socket opened
  EXPECT_EQ(tcp->backend(), "local");
}

TEST(Communicator, GlooCollectiveTimesOutInsteadOfHanging) {
  comm::CommOptions o;
  o.timeout = std::chrono::milliseconds(1500);
  auto comms = comm::make_loopback_gloo_group(2, o);
  // Only rank 0 issues the collective: it must fail within the timeout.
  at::Tensor t = at::ones({1});
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_ANY_THROW(comms[0]->all_reduce_(t));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 15.0);
}

TEST(LaunchEnv, ReadsTorchrunMpirunAndSrunVariables) {
  auto env_of = [](std::map<std::string, std::string> m) {
    return [m](const char* k) -> const char* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  auto t = comm::detect_launch_env(env_of({{"RANK", "2"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                                           {"MASTER_ADDR", "10.1.2.3"}, {"MASTER_PORT", "1234"}}));
  EXPECT_EQ(t.source, "torchrun");
  EXPECT_EQ(t.rank, 2);
  EXPECT_EQ(t.world_size, 4);
  EXPECT_EQ(t.local_rank, 1);
  EXPECT_EQ(t.master_addr, "10.1.2.3");
  EXPECT_EQ(t.master_port, 1234);
  auto m = comm::detect_launch_env(env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "3"}}));
  EXPECT_EQ(m.source, "mpirun");
  EXPECT_EQ(m.world_size, 3);
  EXPECT_EQ(m.master_addr, "127.0.0.1");
  auto s = comm::detect_launch_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "0"}}));
  EXPECT_EQ(s.source, "srun");
  EXPECT_EQ(s.world_size, 8);
  EXPECT_FALSE(comm::launched_externally(env_of({})));
  EXPECT_TRUE(comm::launched_externally(env_of({{"SLURM_PROCID", "0"}})));
}

TEST(LaunchEnv, BadValuesNameTheVariable) {
  auto env_of = [](std::map<std::string, std::string> m) {
    return [m](const char* k) -> const char* {
      auto it = m.find(k);
      return it == m.end() ? nullptr : it->second.c_str();
    };
  };
  auto expect_error = [&](std::map<std::string, std::string> m, const std::string& needle) {
    try {
      comm::detect_launch_env(env_of(m));
      ADD_FAILURE() << "no error for " << needle;
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error({{"RANK", "abc"}, {"WORLD_SIZE", "2"}}, "RANK='abc'");
  expect_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}, "rank 2 is not below world size 2");
  expect_error({{"RANK", "0"}}, "WORLD_SIZE is not");
  expect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}, "MASTER_PORT=70000");
}

}  // namespace
}  // namespace lowrank
