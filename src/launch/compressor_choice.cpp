// `--compressor auto`: see include/lowrank/launch/compressor_choice.h.
#include "lowrank/launch/compressor_choice.h"

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>

#include "lowrank/compressors/registry.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "lowrank/util/clock.h"

namespace lowrank {
namespace launch {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string ms_text(double ms) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(ms < 10 ? 2 : 1) << ms << " ms";
  return os.str();
}

// One candidate's per-step reducer costs, measured on this machine with a one-rank in-process group:
// the bytes and collectives its reducer hands over per step and its compute outside collectives.
report::StepProfile profile_of(const train::TrainOptions& o, const std::string& compressor, int world_size) {
  torch::NoGradGuard no_grad;
  train::TrainOptions c = o;
  c.compressor(compressor);
  auto model = models::make_model(c.model(), c.input_spec(), c.seed(), c.model_size());
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (const auto& kv : model->named_parameters()) params.emplace_back(kv.key(), kv.value());
  auto group = comm::make_loopback_gloo_group(1);
  GradientReducer red(params, c.make_compressor(), group[0], c.resolved_reducer().overlap(false));
  constexpr int kSteps = 4;  // the first is a warm-up
  std::vector<double> compute;
  int64_t bytes = 0, collectives = 0;
  for (int s = 0; s < kSteps; ++s) {
    for (size_t i = 0; i < params.size(); ++i)
      params[i].second.mutable_grad() = at::randn_like(params[i].second);
    const int64_t before = group[0]->stats().collectives;
    red.reduce();
    const ReducerStats& st = red.stats();
    if (s == 0) continue;
    compute.push_back(st.last_compress_seconds * 1e3);
    bytes = st.last_bytes_sent;
    collectives = group[0]->stats().collectives - before;
  }
  report::StepProfile p;
  p.label = compressor;
  p.world_size = world_size;
  p.compress_ms = compressor == "none" ? 0.0 : median(compute);
  p.all_reduce_bytes = static_cast<double>(bytes);
  p.all_reduces = static_cast<double>(collectives);
  return p;
}

}  // namespace

MeasuredLink link_from_timing(const LinkTiming& t, int world_size) {
  MeasuredLink out;
  const double ring = 2.0 * (world_size - 1) / world_size;  // bytes per byte all-reduced, per worker
  const double dt = t.large_s - t.small_s;
  if (!(std::isfinite(t.large_s) && std::isfinite(t.small_s) && t.large_s > 0 && t.small_s > 0)) {
    out.problem = "an all-reduce took a time that is not positive and finite";
    return out;
  }
  if (!(dt > 0)) {
    out.problem = "the 1 MiB all-reduce was not slower than the 4 KiB one";
    return out;
  }
  const double bits = ring * 8.0 * static_cast<double>(kProbeLargeBytes - kProbeSmallBytes) / dt;
  if (!(bits >= report::kMinBitsPerSecond && bits <= report::kMaxBitsPerSecond)) {
    out.problem = "the timing implies " + report::bandwidth_text(bits) + ", outside [1 kbit/s, 10 Tbit/s]";
    return out;
  }
  const double latency = (t.small_s - ring * 8.0 * kProbeSmallBytes / bits) / (2.0 * (world_size - 1));
  out.link = report::Link{bits, std::max(0.0, latency), false};
  return out;
}

CompressorChoice choose_compressor(const MeasuredLink& measured, const report::StepProfile& dense,
                                   const report::StepProfile& compressed, int64_t rank) {
  CompressorChoice c;
  c.measured = measured;
  std::ostringstream why;
  if (!measured.problem.empty()) {
    c.compressor = "powersgd";
    why << "compressor auto: the link could not be measured (" << measured.problem << "); falling back to powersgd --rank "
        << rank;
    c.reason = why.str();
    return c;
  }
  c.dense_ms = report::communication_ms(dense, measured.link) + dense.compress_ms;
  c.compressed_ms = report::communication_ms(compressed, measured.link) + compressed.compress_ms;
  c.compressor = c.compressed_ms < c.dense_ms ? "powersgd" : "none";
  why << "compressor auto: measured " << report::bandwidth_text(measured.link.bits_per_second) << ", latency "
      << std::setprecision(3) << measured.link.latency_s * 1e3 << " ms per hop (all-reduces of 1 MiB and 4 KiB); "
      << "predicted reducer time per step without overlap: none " << ms_text(c.dense_ms) << " ("
      << static_cast<int64_t>(dense.all_reduce_bytes) << " bytes), powersgd --rank " << rank << " "
      << ms_text(c.compressed_ms) << " (" << static_cast<int64_t>(compressed.all_reduce_bytes) << " bytes, "
      << ms_text(compressed.compress_ms) << " of it compression); chose "
      << (c.compressor == "none" ? std::string("none: the link is fast enough for the dense all-reduce")
                                 : "powersgd --rank " + std::to_string(rank));
  c.reason = why.str();
  return c;
}

LinkTiming time_link(comm::Communicator& comm) {
  // The two sizes alternate, so that a stretch of contention (a busy core) hits both alike, and each
  // keeps its fastest round: a delay only ever adds time, and a loopback 1 MiB all-reduce takes about
  // a millisecond, less than one scheduling hiccup.
  at::Tensor large = at::ones({kProbeLargeBytes / 4}, at::kFloat), small = at::ones({kProbeSmallBytes / 4}, at::kFloat);
  double large_s = std::numeric_limits<double>::infinity(), small_s = large_s;
  for (int round = 0; round <= kProbeRounds; ++round) {
    for (auto [buf, best] : {std::pair{&large, &large_s}, std::pair{&small, &small_s}}) {
      const auto t0 = Clock::now();
      comm.all_reduce_(*buf);
      if (round > 0) *best = std::min(*best, seconds_since(t0));  // round 0 warms the connection up
    }
  }
  at::Tensor times = at::tensor({large_s, small_s}, at::kDouble);
  comm.broadcast_(times, 0);
  return {times[0].item<double>(), times[1].item<double>()};
}

train::TrainOptions resolve_auto_compressor(comm::Communicator& comm, const train::TrainOptions& options,
                                           std::ostream* log) {
  train::TrainOptions chosen = options;
  const int64_t rank = options.default_rank();
  if (comm.size() == 1) {
    chosen.compressor("none");
    if (log) *log << "compressor auto: one worker, nothing to communicate: none" << std::endl;
    return chosen;
  }
  const MeasuredLink link = link_from_timing(time_link(comm), comm.size());
  CompressorChoice c;
  if (link.problem.empty()) {
    const report::StepProfile dense = profile_of(options, "none", comm.size());
    const report::StepProfile compressed = profile_of(options, "powersgd", comm.size());
    // Rank 0's profiles decide: the compression time measured on each rank differs a little.
    at::Tensor mine = at::tensor({dense.all_reduce_bytes, dense.all_reduces, compressed.all_reduce_bytes,
                                  compressed.all_reduces, compressed.compress_ms},
                                 at::kDouble);
    comm.broadcast_(mine, 0);
    report::StepProfile d = dense, p = compressed;
    d.all_reduce_bytes = mine[0].item<double>();
    d.all_reduces = mine[1].item<double>();
    p.all_reduce_bytes = mine[2].item<double>();
    p.all_reduces = mine[3].item<double>();
    p.compress_ms = mine[4].item<double>();
    c = choose_compressor(link, d, p, rank);
  } else {
    c = choose_compressor(link, {}, {}, rank);
  }
  chosen.compressor(c.compressor);
  if (log) *log << (c.measured.problem.empty() ? "" : "warning: ") << c.reason << std::endl;
  return chosen;
}

}  // namespace launch
}  // namespace lowrank
