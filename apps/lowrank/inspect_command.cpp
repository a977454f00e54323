// `lowrank inspect`: what the reducer would do with every parameter of a model, without training
// and without loading data: the model is built by the model factory for the dataset's input shape
// (data::input_spec), and every decision and float count comes from reducer/compression_plan.h,
// the functions the reducer itself uses, so the numbers are those of a real training step.
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "commands.h"
#include "language_model_flags.h"
#include "number_flags.h"
#include "train_flags.h"
#include "lowrank/util/choices.h"
#include "lowrank/compressors/auto_rank.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/data/dataset_factory.h"
#include "lowrank/data/input_spec.h"
#include "lowrank/models/model_factory.h"
#include "lowrank/reducer/compression_plan.h"
#include "lowrank/reducer/gradient_reducer.h"
#include "lowrank/train/train_options.h"

namespace lowrank {
namespace cli {
namespace {

using nlohmann::json;

// --mean-steps evaluates every one of its steps for every parameter: the limit bounds that time.
constexpr int64_t kMaxMeanSteps = 1000000;

// The options the shared flags are bound to (train_flags.h), and inspect's own.
struct InspectFlags {
  train::TrainOptions options;
  std::vector<std::string> opts;  ///< --opt KEY=VALUE, turned into the compressor's Config
  int64_t step = 0;
  int64_t mean_steps = 100;
  bool json = false;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? "," : "") << shape[i];
  return os.str() + "]";
}

std::string num(double x, int precision = 4) {
  std::ostringstream os;
  os << std::setprecision(precision) << x;
  return os.str();
}

// Why the reducer sends this parameter as it does, in words.
std::string why(const PlannedParam& p, const Compressor& c, const ReducerOptions& r) {
  const auto& d = p.decision;
  const std::string mn = std::to_string(d.m * d.n);
  switch (d.reason) {
    case CompressionReason::kCompressed:
      if (c.traits().elementwise) return "elementwise: every tensor";
      return "4*m*n = " + std::to_string(4 * d.m * d.n) + " > rho*c = " + num(r.min_compression_rate()) + "*" +
             num(d.size_rule_bytes, 10) + " bytes";
    case CompressionReason::kSizeRule:
      return "size rule: 4*m*n = " + std::to_string(4 * d.m * d.n) + " <= rho*c = " + num(r.min_compression_rate()) +
             "*" + num(d.size_rule_bytes, 10) + " bytes";
    case CompressionReason::kOneDim:
      return "1-D: always dense";
    case CompressionReason::kUncompressedName:
      return "name matches --uncompressed-names '" + d.matched_pattern + "'";
    case CompressionReason::kCompressorDense:
      return c.traits().communicates ? "compressor " + c.name() + " compresses nothing"
                              : "compressor " + c.name() + " sends nothing";
  }
  return "";
}

std::string route(const PlannedParam& p, const Compressor& c) {
  if (!c.traits().communicates) return "none";
  return p.decision.compressed ? "compressed" : "dense";
}

json plan_json(const InspectFlags& f, const models::InputSpec& spec, const Compressor& c, const ReducerOptions& r,
               const CompressionPlan& plan) {
  json params = json::array();
  for (const auto& p : plan.params) {
    json m = p.decision.m > 0 ? json::array({p.decision.m, p.decision.n}) : json(nullptr);
    params.push_back({{"name", p.name},
                      {"shape", p.shape},
                      {"matrix", m},
                      {"dtype", std::string(c10::toString(p.dtype))},
                      {"numel", p.numel},
                      {"compressed", p.decision.compressed},
                      {"route", route(p, c)},
                      {"reason", reason_name(p.decision.reason)},
                      {"why", why(p, c, r)},
                      {"size_rule_bytes", p.decision.size_rule_bytes},
                      {"dense_bytes_per_step", p.dense_bytes},
                      {"bytes_per_step", p.bytes},
                      {"mean_bytes_per_step", p.mean_bytes}});
  }
  json copts = json::object();
  const Config resolved = f.options.resolved_compressor_config();
  for (const auto& kv : resolved.values()) copts[kv.first] = kv.second;
  return {{"model", f.options.model()},
          {"dataset", f.options.dataset()},
          {"input", {{"channels", spec.channels}, {"height", spec.height}, {"width", spec.width}, {"classes", spec.classes}}},
          {"compressor", c.name()},
          {"compressor_options", copts},
          {"compressor_description", c.describe()},
          {"min_compression_rate", r.min_compression_rate()},
          {"uncompressed_names", r.uncompressed_names()},
          {"start_iter", r.start_iter()},
          {"step", plan.step},
          {"warm_up", plan.warm_up},
          {"mean_steps", plan.mean_steps},
          {"tensors", plan.params.size()},
          {"compressed_tensors", plan.compressed_tensors},
          {"numel", plan.numel},
          {"compressed_numel", plan.compressed_numel},
          {"dense_bytes_per_step", plan.dense_bytes_per_step},
          {"bytes_sent_per_step", plan.bytes_sent_per_step},
          {"floats_sent_per_step", double(plan.bytes_sent_per_step) / 4},
          {"compression_ratio", plan.compression_ratio()},
          {"mean_bytes_sent_per_step", plan.mean_bytes_sent_per_step},
          {"mean_compression_ratio", plan.mean_compression_ratio()},
          {"parameters", params}};
}

void print_table(const InspectFlags& f, const models::InputSpec& spec, const Compressor& c, const ReducerOptions& r,
                 const CompressionPlan& plan) {
  std::cout << "model " << f.options.model() << " for " << f.options.dataset();
  if (spec.sequence_length > 0)
    std::cout << " (input " << spec.sequence_length << " tokens, vocabulary " << spec.classes << ")\n";
  else
    std::cout << " (input " << spec.channels << "x" << spec.height << "x" << spec.width << ", " << spec.classes
              << " classes)\n";
  std::cout
            << "compressor " << c.describe() << "\n"
            << "min_compression_rate " << num(r.min_compression_rate()) << ", uncompressed_names ["
            << join_names(r.uncompressed_names()) << "], start_iter " << r.start_iter() << "; counted at step "
            << plan.step << (plan.warm_up ? " (dense warm-up)" : "") << "\n\n";
  size_t wn = 4, ws = 5;
  for (const auto& p : plan.params) {
    wn = std::max(wn, p.name.size());
    ws = std::max(ws, shape_text(p.shape).size());
  }
  std::cout << std::left << std::setw(int(wn)) << "name" << "  " << std::setw(int(ws)) << "shape" << "  "
            << std::setw(12) << "matrix" << "  " << std::setw(10) << "route" << "  " << std::right << std::setw(12)
            << "bytes/step" << "  " << std::setw(12) << "dense" << "  " << "why\n";
  for (const auto& p : plan.params) {
    const std::string m = p.decision.m > 0 ? std::to_string(p.decision.m) + "x" + std::to_string(p.decision.n) : "-";
    std::cout << std::left << std::setw(int(wn)) << p.name << "  " << std::setw(int(ws)) << shape_text(p.shape) << "  "
              << std::setw(12) << m << "  " << std::setw(10) << route(p, c) << "  " << std::right << std::setw(12)
              << p.bytes << "  " << std::setw(12) << p.dense_bytes << "  " << why(p, c, r) << "\n";
  }
  std::cout << "\n"
            << plan.compressed_tensors << "/" << plan.params.size() << " tensors compressed (" << plan.compressed_numel
            << "/" << plan.numel << " elements)\n"
            << "per step: " << plan.bytes_sent_per_step << " bytes sent of " << plan.dense_bytes_per_step
            << " dense; compression ratio "
            << num(plan.compression_ratio(), 6) << "\n";
  if (plan.mean_steps > 1)
    std::cout << "mean over steps " << plan.step << ".." << plan.step + plan.mean_steps - 1 << " (restarts/refreshes "
              << "included): " << num(plan.mean_bytes_sent_per_step, 10) << " bytes per step; compression ratio "
              << num(plan.mean_compression_ratio(), 6) << "\n";
}

// rank=auto: what the plan starts with. Until the first spectrum step is planned every matrix runs at
// its ceiling; that step measures the spectrum; from then on each matrix lies between floor and ceiling.
struct AutoRankRow {
  std::string name;
  int64_t m = 0, n = 0, lo = 0, hi = 0, bytes_lo = 0, bytes_hi = 0, spectrum_bytes = 0;
};
struct AutoRankPlan {
  std::string target;
  int64_t first_spectrum_step = -1;  ///< compressed step s, -1 when none within the search window
  std::vector<AutoRankRow> rows;
  int64_t fixed_bytes = 0;           ///< the dense tensors' bytes per step
  int64_t spectrum_bytes = 0, lo_bytes = 0, hi_bytes = 0;  ///< the model's, dense tensors included
};

AutoRankPlan auto_rank_plan(const Compressor& c, const CompressionPlan& plan) {
  AutoRankPlan out;
  out.target = c.rank_plan_text();
  for (int64_t s = 0; s < train::kMaxSteps && out.first_spectrum_step < 0; ++s)
    if (c.measures_spectrum(s)) out.first_spectrum_step = s;
  for (const auto& p : plan.params) {
    if (!p.decision.compressed) {
      out.fixed_bytes += p.dense_bytes;
      continue;
    }
    const at::ScalarType work = p.dtype == at::kDouble ? at::kDouble : at::kFloat;
    AutoRankRow r{p.name, p.decision.m, p.decision.n};
    std::tie(r.lo, r.hi) = c.rank_bounds(r.m, r.n);
    int64_t normal = out.first_spectrum_step + 1;  // the first step after it that does not measure
    while (normal < out.first_spectrum_step + 1000 && c.measures_spectrum(normal)) ++normal;
    TensorDict at_lo{{compressor_keys::kRank, at::tensor({r.lo}, at::kLong)}};
    TensorDict at_hi{{compressor_keys::kRank, at::tensor({r.hi}, at::kLong)}};
    r.bytes_lo = c.wire_bytes_at(at_lo, r.m, r.n, normal, work);
    r.bytes_hi = c.wire_bytes_at(at_hi, r.m, r.n, normal, work);
    r.spectrum_bytes = out.first_spectrum_step >= 0 ? c.wire_bytes(r.m, r.n, out.first_spectrum_step, work) : 0;
    out.spectrum_bytes += r.spectrum_bytes;
    out.lo_bytes += r.bytes_lo;
    out.hi_bytes += r.bytes_hi;
    out.rows.push_back(r);
  }
  out.spectrum_bytes += out.fixed_bytes;
  out.lo_bytes += out.fixed_bytes;
  out.hi_bytes += out.fixed_bytes;
  return out;
}

json auto_rank_json(const AutoRankPlan& a) {
  json rows = json::array();
  for (const auto& r : a.rows)
    rows.push_back({{"name", r.name}, {"matrix", {r.m, r.n}}, {"rank_min", r.lo}, {"rank_max", r.hi},
                    {"bytes_per_step_at_min", r.bytes_lo}, {"bytes_per_step_at_max", r.bytes_hi},
                    {"spectrum_step_bytes", r.spectrum_bytes}});
  return {{"target", a.target}, {"first_spectrum_step", a.first_spectrum_step}, {"matrices", rows},
          {"spectrum_step_bytes", a.spectrum_bytes}, {"bytes_per_step_at_min", a.lo_bytes},
          {"bytes_per_step_at_max", a.hi_bytes}};
}

void print_auto_rank(const AutoRankPlan& a, int64_t dense_bytes) {
  std::cout << "\n" << a.target << "\n";
  size_t wn = 4;
  for (const auto& r : a.rows) wn = std::max(wn, r.name.size());
  std::cout << std::left << std::setw(int(wn)) << "name" << "  " << std::setw(12) << "matrix" << "  " << std::right
            << std::setw(8) << "ranks" << "  " << std::setw(14) << "bytes at min" << "  " << std::setw(14)
            << "bytes at max" << "  " << std::setw(14) << "spectrum step" << "\n";
  for (const auto& r : a.rows)
    std::cout << std::left << std::setw(int(wn)) << r.name << "  " << std::setw(12)
              << (std::to_string(r.m) + "x" + std::to_string(r.n)) << "  " << std::right << std::setw(8)
              << (std::to_string(r.lo) + ".." + std::to_string(r.hi)) << "  " << std::setw(14) << r.bytes_lo << "  "
              << std::setw(14) << r.bytes_hi << "  " << std::setw(14) << r.spectrum_bytes << "\n";
  std::cout << "starts: compressed step " << a.first_spectrum_step << " measures the spectrum ("
            << a.spectrum_bytes << " bytes for the model) and plans every rank; after it each matrix runs between "
            << "its floor and ceiling: " << a.lo_bytes << " to " << a.hi_bytes << " bytes per step (compression ratio "
            << num(double(dense_bytes) / double(a.hi_bytes), 4) << " to " << num(double(dense_bytes) / double(a.lo_bytes), 4)
            << ")\n";
}

// What `lowrank inspect` runs once its flags are parsed into `f`.
int run_inspect(InspectFlags& f, CLI::App* sub) {
  auto& o = f.options;
  std::vector<CLI::Option*> language_model_flags;
  for (const char* name : {"--preset", "--layers", "--width", "--heads", "--seq-len", "--vocab-size", "--compress-embeddings"})
    language_model_flags.push_back(sub->get_option(name));
  warn_ignored_language_model_flags(o.model(), language_model_flags, std::cerr);  // stdout may be JSON
  apply_flags(sub, o, f.opts);
  o.validate();
  const models::InputSpec spec = o.input_spec();
  auto model = models::make_model(o.model(), spec, o.seed(), o.model_size());
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& kv : model->named_parameters()) named.emplace_back(kv.key(), kv.value());
  const auto compressor = o.make_compressor();
  const ReducerOptions r = o.resolved_reducer();
  const CompressionPlan plan = plan_compression(named, *compressor, r, f.step, f.mean_steps);
  if (!plan.unmatched_uncompressed_names.empty()) {
    std::vector<std::string> names;
    for (const auto& p : named) names.push_back(p.first);
    TORCH_CHECK(false, "uncompressed_names (--uncompressed-names) pattern '", plan.unmatched_uncompressed_names.front(),
                "' matches no parameter of model ", o.model(), " (by substring or regex); its parameters: ",
                join_names(names));
  }
  if (f.json) {
    json out = plan_json(f, spec, *compressor, r, plan);
    if (compressor->plans_ranks()) out["auto_rank"] = auto_rank_json(auto_rank_plan(*compressor, plan));
    std::cout << out.dump(2) << "\n";
  } else {
    print_table(f, spec, *compressor, r, plan);
    if (compressor->plans_ranks()) print_auto_rank(auto_rank_plan(*compressor, plan), plan.dense_bytes_per_step);
  }
  return 0;
}

}  // namespace

Command add_inspect_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "inspect",
      "Show, without training or loading data, how the reducer treats every parameter of a model: its matrix view, "
      "compressed or dense and why, bytes sent per step, and the totals and compression ratio");
  auto f = std::make_shared<InspectFlags>();
  add_model_flags(sub, f->options, FlagSet::kInspect);
  add_compressor_flags(sub, f->options, f->opts, FlagSet::kInspect);
  add_integer(sub, "--step", f->step,
              "Training step t (0-based) whose traffic is counted: 0 is the first reduce(); restart/refresh steps "
              "(PowerSGD+, GreedyLore, GaLore at s = t - start_iter = 0, period, ...) send more",
              {0, train::kMaxSteps})
      ->capture_default_str();
  add_integer(sub, "--mean-steps", f->mean_steps,
              "Also report the mean bytes per step over steps t .. t+N-1 (what summary.json's ratio averages)",
              {1, kMaxMeanSteps})
      ->capture_default_str();
  sub->add_flag("--json", f->json,
                "Print one JSON object (compression_ratio, dense_bytes_per_step, bytes_sent_per_step, parameters[], "
                "...) instead of the table");
  return {sub, [f, sub] { return run_inspect(*f, sub); }};
}

}  // namespace cli
}  // namespace lowrank
