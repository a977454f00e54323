#pragma once
// The environment of a launched worker, both sides of it: what launch_local hands each rank
// (worker_environments, a pure function of the options), and what a worker reads back.
//
// Rank r of N gets the caller's environment less every launcher's rank variables
// (is_launcher_variable), then LaunchOptions::env, then the torchrun-style RANK=r, WORLD_SIZE=N,
// LOCAL_RANK=r, LOCAL_WORLD_SIZE=N, MASTER_ADDR, MASTER_PORT, plus LOWRANK_WORKER=1 (so the child
// acts as a worker even though its arguments say --nproc) and LOWRANK_ERROR_FD=3 (the write end of
// the pipe for its error report, error_report.h).
#include <string>
#include <vector>

#include "lowrank/launch/launch_options.h"

namespace lowrank {
namespace launch {

constexpr const char* kWorkerEnv = "LOWRANK_WORKER";
constexpr const char* kErrorFdEnv = "LOWRANK_ERROR_FD";
/// The fd a worker writes its error report to (the value of LOWRANK_ERROR_FD).
constexpr int kErrorFd = 3;

/// True for a variable the launcher sets itself (the torchrun-style ones, LOWRANK_WORKER,
/// LOWRANK_ERROR_FD) or that would make a worker read another launcher's rank: mpirun's
/// OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}, srun's SLURM_{PROCID,NTASKS,LOCALID}.
bool is_launcher_variable(const std::string& name);

/// This process's environment as "NAME=value" entries, in environ's order.
std::vector<std::string> own_environment();

/// The environment ("NAME=value" entries) of each rank 0..options.nproc()-1, in the order above:
/// `inherited` without its launcher variables, options.env(), then the eight variables of the
/// launch with MASTER_PORT=`port`. Pure: reads nothing but its arguments.
std::vector<std::vector<std::string>> worker_environments(const LaunchOptions& options, int port,
                                                          const std::vector<std::string>& inherited);

/// True in a process started by launch_local (LOWRANK_WORKER is set and not empty).
bool started_by_launcher();

/// The integer in environment variable `name`; `fallback` when it is unset or empty. Reads the
/// leading number ("2(x3)", as SLURM_NTASKS_PER_NODE may be, gives 2); throws naming the variable
/// and its value when there is no non-negative number.
int env_int(const char* name, int fallback);

}  // namespace launch
}  // namespace lowrank
