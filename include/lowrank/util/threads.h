#pragma once
// run_threads: the fork-join every in-process multi-rank piece needs (loopback groups, the
// counterexample's workers, the tests' ranks): fn(i) on n threads at once, then the first error.
#include <exception>
#include <thread>
#include <vector>

namespace lowrank {

/// Runs fn(i) for i in [0, n) on n threads concurrently and joins them all; then rethrows the
/// exception of the lowest i that threw, if any (every thread has finished by then).
template <typename Fn>
void run_threads(int n, Fn&& fn) {
  std::vector<std::exception_ptr> errors(n > 0 ? n : 0);
  std::vector<std::thread> threads;
  threads.reserve(errors.size());
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      try {
        fn(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace lowrank
