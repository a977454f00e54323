#include "lowrank/launch/worker_threads.h"

#include <c10/util/Exception.h>
#include <sched.h>

#include <algorithm>
#include <thread>

#include "lowrank/launch/worker_env.h"

namespace lowrank {
namespace launch {

int cores_available() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

int local_processes() {
  for (const char* name : {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"}) {
    const int v = env_int(name, 0);
    if (v > 0) return v;
  }
  return 1;
}

int choose_threads(int requested, int cores, int processes) {
  TORCH_CHECK(requested >= 0, "threads must be >= 0 (0 = automatic), got ", requested);
  if (requested > 0) return requested;
  return std::max(1, cores / std::max(1, processes));
}

}  // namespace launch
}  // namespace lowrank
