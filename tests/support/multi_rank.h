#pragma once
// Multi-rank test harness: runs a function on W threads, each one rank of a real gloo group over
// loopback (or of the in-process group), with a short timeout so a bug fails instead of hanging.
#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/util/threads.h"

namespace lowrank {
namespace testing {

constexpr std::chrono::milliseconds kTestTimeout{20000};

/// Runs fn(comm) on every rank of `comms` concurrently; rethrows the first rank's exception.
inline void run_on(const std::vector<std::shared_ptr<comm::Communicator>>& comms,
                   const std::function<void(comm::Communicator&)>& fn) {
  run_threads(static_cast<int>(comms.size()), [&](int r) { fn(*comms[r]); });
}

/// fn on W gloo ranks over loopback.
inline void run_ranks(int world_size, const std::function<void(comm::Communicator&)>& fn,
                      std::chrono::milliseconds timeout = kTestTimeout) {
  comm::CommOptions o;
  o.timeout = timeout;
  run_on(comm::make_loopback_gloo_group(world_size, o), fn);
}

/// Shared-pointer form for code that keeps the communicator (reducers).
inline void run_ranks_shared(int world_size,
                             const std::function<void(std::shared_ptr<comm::Communicator>)>& fn,
                             std::chrono::milliseconds timeout = kTestTimeout) {
  comm::CommOptions o;
  o.timeout = timeout;
  auto comms = comm::make_loopback_gloo_group(world_size, o);
  run_threads(world_size, [&](int r) { fn(comms[r]); });
}

}  // namespace testing
}  // namespace lowrank
