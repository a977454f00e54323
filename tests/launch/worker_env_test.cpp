// The environment launch_local hands each rank (launch/worker_env.h), as a pure function of the
// options: no process is started.
#include "lowrank/launch/worker_env.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>
#include <vector>

namespace lowrank {
namespace {

using Env = std::vector<std::string>;

// A caller's environment with a variable of every kind: kept, and every launcher's rank variable.
const Env kInherited = {"PATH=/usr/bin", "RANK=7", "WORLD_SIZE=9", "LOCAL_RANK=7", "LOCAL_WORLD_SIZE=9",
                        "MASTER_ADDR=10.0.0.1", "MASTER_PORT=1", "OMPI_COMM_WORLD_RANK=7",
                        "OMPI_COMM_WORLD_SIZE=9", "OMPI_COMM_WORLD_LOCAL_RANK=7", "OMPI_COMM_WORLD_LOCAL_SIZE=9",
                        "SLURM_PROCID=7", "SLURM_NTASKS=9", "SLURM_LOCALID=7", "LOWRANK_WORKER=0",
                        "LOWRANK_ERROR_FD=9", "HOME=/root", "RANKING=a=b", "EMPTY="};

class WorkerEnv : public ::testing::TestWithParam<int> {};

TEST_P(WorkerEnv, EveryRankGetsItsRankTheRendezvousAndNoInheritedRankVariable) {
  const int n = GetParam();
  launch::LaunchOptions o;
  o.nproc(n).master_addr("::1").env({{"LOWRANK_TEST_FAIL_RANK", "1"}, {"OMP_NUM_THREADS", "2"}});
  const auto envs = launch::worker_environments(o, 29511, kInherited);
  ASSERT_EQ(envs.size(), static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    const std::string rank = std::to_string(r), size = std::to_string(n);
    const Env want = {"PATH=/usr/bin", "HOME=/root", "RANKING=a=b", "EMPTY=",
                      "LOWRANK_TEST_FAIL_RANK=1", "OMP_NUM_THREADS=2",
                      "RANK=" + rank, "WORLD_SIZE=" + size, "LOCAL_RANK=" + rank, "LOCAL_WORLD_SIZE=" + size,
                      "MASTER_ADDR=::1", "MASTER_PORT=29511", "LOWRANK_WORKER=1", "LOWRANK_ERROR_FD=3"};
    EXPECT_EQ(envs[r], want) << "rank " << r << " of " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, WorkerEnv, ::testing::Values(1, 2, 3, 4));

TEST(WorkerEnvVariables, OnlyTheLaunchersOwnAreLauncherVariables) {
  for (const std::string name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                                 "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                                 "SLURM_LOCALID", "LOWRANK_WORKER", "LOWRANK_ERROR_FD"})
    EXPECT_TRUE(launch::is_launcher_variable(name)) << name;
  // SLURM_NTASKS_PER_NODE stays: local_processes reads it in a worker of an srun job.
  for (const std::string name : {"PATH", "RANKING", "rank", "SLURM_NTASKS_PER_NODE", "LOWRANK_TEST_FAIL_RANK", ""})
    EXPECT_FALSE(launch::is_launcher_variable(name)) << name;
  EXPECT_FALSE(launch::own_environment().empty());
}

TEST(WorkerEnvVariables, IntegersAreReadWithTheirLeadingNumber) {
  ::setenv("LOWRANK_TEST_ENV_INT", "2(x3)", 1);
  EXPECT_EQ(launch::env_int("LOWRANK_TEST_ENV_INT", -1), 2);
  ::setenv("LOWRANK_TEST_ENV_INT", "", 1);
  EXPECT_EQ(launch::env_int("LOWRANK_TEST_ENV_INT", -1), -1);
  ::setenv("LOWRANK_TEST_ENV_INT", "abc", 1);
  try {
    launch::env_int("LOWRANK_TEST_ENV_INT", -1);
    ADD_FAILURE() << "no error for abc";
  } catch (const c10::Error& e) {
    EXPECT_NE(e.msg().find("LOWRANK_TEST_ENV_INT='abc' is not a non-negative integer"), std::string::npos) << e.msg();
  }
  ::unsetenv("LOWRANK_TEST_ENV_INT");
  EXPECT_EQ(launch::env_int("LOWRANK_TEST_ENV_INT", 5), 5);
}

}  // namespace
}  // namespace lowrank
