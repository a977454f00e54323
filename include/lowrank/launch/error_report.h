#pragma once
// A worker's error report to the local launcher: the text a failing worker writes to the pipe at
// fd LOWRANK_ERROR_FD (worker_env.h) before it exits non-zero, so that the launcher can name the
// failure (root_cause.h). A pipe, not a file: nothing is left behind, even when the launcher is
// SIGKILLed.
//
// Format: "lowrank-error v1\n<CLOCK_MONOTONIC ns>\n<message>\n". The timestamp orders the reports
// of several ranks by when they were written, not by when the launcher's poll saw them.
#include <cstdint>
#include <string>

namespace lowrank {
namespace launch {

constexpr const char* kErrorReportHeader = "lowrank-error v1";

/// CLOCK_MONOTONIC in ns: the clock of the reports' timestamps and of the launcher's exit times.
int64_t monotonic_ns();

/// What a worker's pipe held once it exited.
struct ErrorReport {
  /// The message, trailing newlines and spaces removed; "" when there is none.
  std::string error;
  /// The report's timestamp (ns); -1 when the text has no header (a worker that wrote plain text).
  int64_t error_ns = -1;
};

/// The report's text for `message` written at `ns`.
std::string format_error_report(const std::string& message, int64_t ns);
/// Reads what a worker wrote to its pipe; text without the header is the message as it is.
ErrorReport parse_error_report(const std::string& raw);

/// In a launched worker: writes `message` to the launcher's pipe (LOWRANK_ERROR_FD), stamped now,
/// and returns true; returns false when there is no such file to write.
bool report_error_to_launcher(const std::string& message);

}  // namespace launch
}  // namespace lowrank
