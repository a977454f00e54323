#pragma once
// Reading a launcher's environment: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT), mpirun (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK) and srun (SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID). MASTER_ADDR/MASTER_PORT default to 127.0.0.1:29500.
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "lowrank/comm/communicator.h"

namespace lowrank {
namespace comm {

struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "none";  ///< "torchrun", "mpirun", "srun" or "none"
};

/// Reads the environment through `getenv` (injectable for tests). Throws c10::Error naming the
/// variable and value when a variable is present but malformed (e.g. RANK=abc, RANK >= WORLD_SIZE).
LaunchEnv detect_launch_env(
    const std::function<const char*(const char*)>& getenv_fn = nullptr);

/// True when one of the launchers' variables is set.
bool launched_externally(const std::function<const char*(const char*)>& getenv_fn = nullptr);

/// Communicator for the detected environment (local communicator when world_size is 1).
std::unique_ptr<Communicator> make_communicator_from_env(const CommOptions& options = {});

}  // namespace comm
}  // namespace lowrank
