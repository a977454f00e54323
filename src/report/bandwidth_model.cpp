// The bandwidth model: see include/lowrank/report/bandwidth_model.h (docs/reports.md).
#include "lowrank/report/bandwidth_model.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

namespace lowrank {
namespace report {

double communication_ms(const StepProfile& p, const Link& link) {
  TORCH_CHECK(link.bits_per_second > 0 && std::isfinite(link.bits_per_second),
              "bandwidth model: bandwidth must be a finite number of bits/s > 0, got ", link.bits_per_second);
  TORCH_CHECK(link.latency_s >= 0 && std::isfinite(link.latency_s),
              "bandwidth model: latency must be a finite number of seconds >= 0, got ", link.latency_s);
  TORCH_CHECK(p.world_size >= 1, "bandwidth model: world size must be >= 1, got ", p.world_size, " (", p.label, ")");
  if (p.world_size == 1) return 0.0;
  const double hops = static_cast<double>(p.world_size - 1);
  const double W = static_cast<double>(p.world_size);
  const double bits_per_second = link.shared ? link.bits_per_second / W : link.bits_per_second;
  const double reduce_s = 2 * hops / W * 8 * p.all_reduce_bytes / bits_per_second + 2 * hops * link.latency_s * p.all_reduces;
  const double gather_s = hops * 8 * p.all_gather_bytes / bits_per_second + hops * link.latency_s * p.all_gathers;
  return 1e3 * (reduce_s + gather_s);
}

double predicted_step_ms(const StepProfile& p, const Link& link, bool overlap) {
  const double comm = communication_ms(p, link);
  const double backward_and_reduce =
      overlap ? std::max(p.compute_ms, p.compress_ms + comm) : p.compute_ms + p.compress_ms + comm;
  return p.other_ms + backward_and_reduce + p.optimizer_ms;
}

StepProfile dense_profile_of(const StepProfile& run, double dense_bytes_per_step, double buckets_per_step) {
  StepProfile d;
  d.label = run.label + " (dense)";
  d.world_size = run.world_size;
  d.compute_ms = run.compute_ms;
  d.optimizer_ms = run.optimizer_ms;
  d.other_ms = run.other_ms;
  d.all_reduce_bytes = dense_bytes_per_step;
  d.all_reduces = buckets_per_step;
  return d;
}

double break_even_bits_per_second(const StepProfile& compressed, const StepProfile& dense, double latency_s,
                                  bool overlap, bool shared) {
  // gain(B) = dense − compressed: > 0 where compression pays. Both fall toward their compute as B
  // grows, dense's faster (it sends more), so gain falls with B.
  const auto gain = [&](double log_b) {
    const Link link{std::pow(10.0, log_b), latency_s, shared};
    return predicted_step_ms(dense, link, overlap) - predicted_step_ms(compressed, link, overlap);
  };
  double lo = std::log10(kMinBitsPerSecond), hi = std::log10(kMaxBitsPerSecond);
  if (gain(lo) <= 0) return 0.0;                                        // not faster even on the slowest link
  if (gain(hi) > 0) return std::numeric_limits<double>::infinity();     // faster on every link in range
  for (int i = 0; i < 200 && hi - lo > 1e-12; ++i) {
    const double mid = 0.5 * (lo + hi);
    (gain(mid) > 0 ? lo : hi) = mid;
  }
  return std::pow(10.0, 0.5 * (lo + hi));
}

StepProfile step_profile_of(const RunSummary& s) {
  TORCH_CHECK(s.has_per_step(), s.dir, "/summary.json has no per-step traffic (\"per_step\"): it was written by an "
              "older lowrank; run it again to predict its step time by bandwidth");
  StepProfile p;
  p.label = s.label;
  p.world_size = s.world_size;
  p.compute_ms = s.forward_backward_ms;
  p.compress_ms = s.compress_ms;
  p.optimizer_ms = s.optimizer_ms;
  const double other = s.step_ms_median - s.forward_backward_ms - s.communicate_ms - s.optimizer_ms;
  p.other_ms = std::isfinite(other) && other > 0 ? other : 0.0;
  p.all_reduce_bytes = s.all_reduce_bytes_per_step;
  p.all_gather_bytes = s.all_gather_bytes_per_step;
  p.all_reduces = s.all_reduces_per_step;
  p.all_gathers = s.all_gathers_per_step;
  return p;
}

double parse_bandwidth(const std::string& text) {
  static const std::pair<const char*, double> kUnits[] = {
      {"tbit", 1e12}, {"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1.0}};
  for (const auto& [unit, scale] : kUnits) {
    const std::string u(unit);
    if (text.size() <= u.size() || text.compare(text.size() - u.size(), u.size(), u) != 0) continue;
    const std::string number = text.substr(0, text.size() - u.size());
    char* end = nullptr;
    const double v = std::strtod(number.c_str(), &end);
    TORCH_CHECK(end && *end == '\0' && std::isfinite(v) && v > 0, "bandwidth '", text,
                "' is not a positive number followed by bit, kbit, mbit, gbit or tbit (e.g. 100mbit)");
    return v * scale;
  }
  TORCH_CHECK(false, "bandwidth '", text, "' has no unit: write it as a number followed by bit, kbit, mbit, gbit or tbit "
              "(e.g. 100mbit, 1gbit)");
}

std::string bandwidth_text(double bits_per_second) {
  if (std::isinf(bits_per_second)) return "∞";
  if (!(bits_per_second > 0)) return "—";
  static const std::pair<double, const char*> kUnits[] = {{1e9, "Gbit/s"}, {1e6, "Mbit/s"}, {1e3, "kbit/s"}};
  for (const auto& [scale, unit] : kUnits) {
    if (bits_per_second >= scale) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3g %s", bits_per_second / scale, unit);
      return buf;
    }
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g bit/s", bits_per_second);
  return buf;
}

}  // namespace report
}  // namespace lowrank
