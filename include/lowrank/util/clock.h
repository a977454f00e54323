#pragma once
// The one clock lowrank times itself with (steady: it never jumps), and elapsed time from it.
#include <chrono>

namespace lowrank {

using Clock = std::chrono::steady_clock;

/// Seconds from `t0` to now.
inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
/// Milliseconds from `t0` to now.
inline double ms_since(Clock::time_point t0) { return 1e3 * seconds_since(t0); }

}  // namespace lowrank
