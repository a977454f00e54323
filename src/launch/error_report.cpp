#include "lowrank/launch/error_report.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "lowrank/launch/worker_env.h"

namespace lowrank {
namespace launch {

int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

std::string format_error_report(const std::string& message, int64_t ns) {
  return std::string(kErrorReportHeader) + "\n" + std::to_string(ns) + "\n" + message + "\n";
}

ErrorReport parse_error_report(const std::string& raw) {
  ErrorReport report;
  std::string text = raw;
  const std::string head = std::string(kErrorReportHeader) + "\n";
  if (text.rfind(head, 0) == 0) {
    text = text.substr(head.size());
    const auto nl = text.find('\n');
    report.error_ns = std::strtoll(text.substr(0, nl).c_str(), nullptr, 10);
    text = nl == std::string::npos ? "" : text.substr(nl + 1);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  report.error = text;
  return report;
}

bool report_error_to_launcher(const std::string& message) {
  const char* v = std::getenv(kErrorFdEnv);
  if (!v || !*v) return false;
  const int fd = std::atoi(v);
  if (fd < 0 || ::fcntl(fd, F_GETFD) < 0) return false;
  const std::string text = format_error_report(message, monotonic_ns());
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace launch
}  // namespace lowrank
