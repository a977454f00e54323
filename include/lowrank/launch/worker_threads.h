#pragma once
// Intra-op threads per worker: threads if given, else max(1, cores available / processes on this
// machine), the latter from LOCAL_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_SIZE or SLURM_NTASKS_PER_NODE,
// so that the workers of one machine do not oversubscribe its cores.

namespace lowrank {
namespace launch {

/// CPUs this process may run on (sched_getaffinity), at least 1.
int cores_available();
/// Processes of this job on this machine, from the launchers' variables; 1 when none is set.
int local_processes();
/// requested if > 0, else max(1, cores / processes).
int choose_threads(int requested, int cores, int processes);

}  // namespace launch
}  // namespace lowrank
