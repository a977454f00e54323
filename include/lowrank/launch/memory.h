#pragma once
// Memory left on this machine, and the check that a language model's activations fit in it: they
// grow with seq_len² (attention), so a --seq-len that cannot fit is refused before any process
// starts, instead of the kernel's out-of-memory killer taking the machine down.
#include <cstdint>
#include <string>

#include "lowrank/train/train_options.h"

namespace lowrank {
namespace launch {

/// Bytes of memory this machine can still give a new process: /proc/meminfo's MemAvailable,
/// lowered to the room left under the cgroup memory limit in /sys/fs/cgroup (v2 or v1) when there
/// is one; -1 when neither can be read.
int64_t available_memory_bytes();
/// MemAvailable of a /proc/meminfo text, in bytes; -1 when it has none.
int64_t parse_mem_available(const std::string& meminfo);

/// For a language model: throws, naming --seq-len, --batch-size, the MiB needed and the MiB
/// available, when the activations of `workers_here` workers on this machine
/// (models::llama_activation_bytes) exceed available_memory_bytes(); prints a warning when they
/// need more than half of it. Does nothing for other models or when the memory is unknown.
void check_activation_memory(const train::TrainOptions& options, int64_t workers_here);

}  // namespace launch
}  // namespace lowrank
