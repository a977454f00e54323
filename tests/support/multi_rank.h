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

namespace lowrank {
namespace testing {

constexpr std::chrono::milliseconds kTestTimeout{20000};

/// Runs fn(comm) on every rank of `comms` concurrently; rethrows the first rank's exception.
inline void run_on(const std::vector<std::shared_ptr<comm::Communicator>>& comms,
                   const std::function<void(comm::Communicator&)>& fn) {
  std::vector<std::exception_ptr> errors(comms.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < comms.size(); ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(*comms[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
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
  std::vector<std::exception_ptr> errors(comms.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < comms.size(); ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(comms[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace testing
}  // namespace lowrank
