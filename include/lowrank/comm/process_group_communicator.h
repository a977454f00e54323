#pragma once
// Wrapping an existing c10d::ProcessGroup (e.g. one the caller created for other purposes).
// This header includes c10d; only code that owns a ProcessGroup needs it.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "lowrank/comm/communicator.h"

namespace lowrank {
namespace comm {

std::unique_ptr<Communicator> wrap_process_group(c10::intrusive_ptr<c10d::ProcessGroup> group);

}  // namespace comm
}  // namespace lowrank
