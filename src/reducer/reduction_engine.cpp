#include "lowrank/reducer/reduction_engine.h"

#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <sstream>
#include <tuple>

#include "lowrank/util/clock.h"
#include "lowrank/compressors/auto_rank.h"
#include "lowrank/compressors/compressor.h"
#include "lowrank/comm/agreement.h"
#include "lowrank/reducer/compression_plan.h"

namespace lowrank {

const Choices<EfResidual>& ef_residual_choices() {
  static const Choices<EfResidual> choices{{EfResidual::kLocal, "local"}, {EfResidual::kGlobal, "global"}};
  return choices;
}

void ReducerOptions::validate() const {
  TORCH_CHECK(start_iter() >= 0, "start_iter must be >= 0, got ", start_iter());
  TORCH_CHECK(std::isfinite(min_compression_rate()) && min_compression_rate() >= 0,
              "min_compression_rate must be a finite number >= 0, got ", min_compression_rate());
  TORCH_CHECK(std::isfinite(ef_beta()) && ef_beta() >= 0 && ef_beta() < 1, "ef_beta must be in [0, 1), got ",
              ef_beta());
  TORCH_CHECK(stats_every() >= 1, "stats_every must be >= 1, got ", stats_every());
  TORCH_CHECK(std::isfinite(bucket_cap_mb()) && bucket_cap_mb() >= 0,
              "bucket_cap_mb must be a finite number >= 0 (0 = one bucket), got ", bucket_cap_mb());
}

std::ostream& operator<<(std::ostream& os, const ReducerOptions& o) { return os << render_fields(o); }

namespace {

// Compressors and EF work in fp64 for fp64 parameters and in fp32 otherwise (§1.9).
at::ScalarType work_dtype(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::string shape_string(at::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

double squared_norm(const at::Tensor& t) {
  if (t.numel() == 0) return 0.0;
  const double n = t.norm().item<double>();
  return n * n;
}

// One read pass: a NaN or Inf makes the sum non-finite. A sum that overflowed from finite values
// (all of them huge) is told apart by the exact test.
bool all_finite(const at::Tensor& t) {
  return t.numel() == 0 || std::isfinite(t.sum().item<double>()) || at::isfinite(t).all().item<bool>();
}

}  // namespace

ReductionEngine::ReductionEngine(std::vector<std::pair<std::string, at::Tensor>> params,
                                 std::unique_ptr<Compressor> compressor, std::shared_ptr<comm::Communicator> comm,
                                 ReducerOptions options, const std::string& scheduler)
    : compressor_(std::move(compressor)), comm_(std::move(comm)), options_(std::move(options)), ef_(false, false, 0.0) {
  TORCH_CHECK(compressor_, "GradientReducer: compressor is null");
  TORCH_CHECK(comm_, "GradientReducer: communicator is null");
  options_.validate();
  traits_ = compressor_->traits();
  const bool ef_on = options_.error_feedback().value_or(traits_.default_error_feedback);
  ef_ = ErrorFeedback(ef_on && traits_.communicates, options_.ef_residual() == EfResidual::kGlobal, options_.ef_beta());

  std::map<std::string, int> seen;
  params_.reserve(params.size());
  for (auto& np : params) {
    TORCH_CHECK(np.second.defined(), "parameter '", np.first, "' is undefined");
    TORCH_CHECK(seen[np.first]++ == 0, "parameter name '", np.first, "' appears twice");
    ParamState p;
    p.name = np.first;
    p.param = np.second;
    p.work_dtype = work_dtype(p.param);
    numel_ += p.param.numel();
    const int64_t bytes = p.param.numel() * static_cast<int64_t>(c10::elementSize(p.work_dtype));
    dense_bytes_ += bytes;
    // The rule lives in reducer/compression_plan.h, shared with `lowrank inspect`.
    const CompressionDecision d = decide_compression(p.name, p.param.sizes(), *compressor_, options_);
    p.m = d.m;
    p.n = d.n;
    p.compressed = d.compressed;
    if (!p.compressed) uncompressed_bytes_ += bytes;
    params_.push_back(std::move(p));
  }

  if (compressor_->plans_ranks()) compressor_->check_rank_plan(planned_matrices(), uncompressed_bytes_, planning_dtype());

  std::ostringstream fp;
  fp << "world_size " << comm_->size() << "\n"
     << "compressor " << compressor_->describe() << "\n"
     << "reducer " << options_ << "\n";
  for (const auto& p : params_)
    fp << "param " << p.name << " " << shape_string(p.param.sizes()) << " " << p.param.scalar_type() << " "
       << (p.compressed ? "compressed" : "dense") << "\n";
  fp << scheduler;
  check_agreement(*comm_, fp.str(), "the reducer set-up");
}

Bucket ReductionEngine::build_bucket(const std::vector<size_t>& members, size_t index, int64_t* next_ordinal) {
  return Bucket::build(params_, members, index, ef_, *compressor_, options_.batch_same_shape(), next_ordinal);
}

bool ReductionEngine::measuring_norms() const {
  return options_.norm_stats() && (step_ + 1) % options_.stats_every() == 0;
}

void ReductionEngine::begin_step(bool guarded) {
  guarded_ = guarded && options_.skip_nonfinite();
  step_finite_ = true;
  first_nonfinite_ = SIZE_MAX;
  touched_.clear();
  step_res_sq_ = step_delta_sq_ = step_busy_seconds_ = step_comm_seconds_ = 0;
  step_comm_before_ = comm_->stats();
}

bool ReductionEngine::check_finite(const Bucket& bucket) {
  if (all_finite(bucket.grads)) return true;
  for (size_t i : bucket.members)
    if (i < first_nonfinite_ && !at::isfinite(params_[i].grad_view).all().item<bool>()) {
      first_nonfinite_ = i;
      break;
    }
  return false;
}

void ReductionEngine::backup(Bucket& bucket) {
  if (bucket.errors.defined()) {
    if (!bucket.errors_backup.defined()) bucket.errors_backup = at::empty_like(bucket.errors);
    bucket.errors_backup.copy_(bucket.errors);
  }
  bucket.state_backup.clear();
  bucket.ef_valid_backup.clear();
  for (size_t i : bucket.members) {
    bucket.ef_valid_backup.push_back(params_[i].ef_valid);
    if (!params_[i].compressed) continue;
    TensorDict copy;
    for (const auto& kv : params_[i].compressor_state) copy[kv.first] = kv.second.clone();
    bucket.state_backup.push_back(std::move(copy));
  }
}

void ReductionEngine::restore(Bucket& bucket) {
  if (bucket.errors.defined()) bucket.errors.copy_(bucket.errors_backup);
  size_t k = 0, c = 0;
  for (size_t i : bucket.members) {
    params_[i].ef_valid = bucket.ef_valid_backup[k++];
    if (params_[i].compressed) params_[i].compressor_state = std::move(bucket.state_backup[c++]);
  }
}

void ReductionEngine::reduce_bucket(Bucket& bucket) {
  torch::NoGradGuard no_grad;
  const auto t0 = Clock::now();
  const double comm0 = comm_->stats().seconds;
  if (guarded_) guard(bucket);
  touched_.push_back(&bucket);
  double res_sq = 0, delta_sq = 0;
  if (!traits_.communicates) {
    // noop: every rank keeps its own gradient.
  } else if (step_ < options_.start_iter()) {
    reduce_dense_warmup(bucket);
  } else {
    // Dense members first: they travel while the compressor works on the compressed ones, one
    // shape group at a time.
    const comm::HandlePtr dense_handle = start_dense_members(bucket);
    if (!bucket.groups.empty()) {
      const bool in_place = ef_.in_place(traits_);
      const bool measure = measuring_norms();
      const int64_t s = step_ - options_.start_iter();
      std::vector<ShapeGroup> shapes = shape_groups(bucket, in_place, measure, &delta_sq);
      StepContext ctx;
      ctx.compressed_step = s;
      ctx.seed = options_.seed();
      ctx.comm = comm_.get();
      compressor_->compress(shapes, ctx);
      finish_compressed(bucket, shapes, in_place, measure, s, &res_sq);
    }
    finish_dense_members(bucket, dense_handle);
  }
  step_res_sq_ += res_sq;
  step_delta_sq_ += delta_sq;
  step_comm_seconds_ += comm_->stats().seconds - comm0;
  step_busy_seconds_ += seconds_since(t0);
}

void ReductionEngine::guard(Bucket& bucket) {
  // Every rank reduces every bucket (the collectives must match); the verdict comes in end_step().
  // A non-finite gradient is replaced by zeros first: a compressor may refuse NaN (GreedyLore's
  // scores do), and one rank throwing would leave the others waiting in a collective.
  if (!check_finite(bucket)) {
    step_finite_ = false;
    bucket.grads.zero_();
  }
  backup(bucket);
}

void ReductionEngine::reduce_dense_warmup(Bucket& bucket) {
  // No error feedback during the warm-up.
  if (bucket.grads.numel() == 0) return;
  if (comm_->size() > 1) bucket.grads.div_(comm_->size());
  comm_->all_reduce_(bucket.grads);
}

comm::HandlePtr ReductionEngine::start_dense_members(Bucket& bucket) {
  if (bucket.dense_grads.numel() == 0) return nullptr;
  const int W = comm_->size();
  if (ef_.dense()) {
    ef_.dense_before(bucket.dense_grads, bucket.dense_errors, bucket.dense_scratch, W);
    for (size_t i : bucket.dense) params_[i].ef_valid = true;
  } else if (W > 1) {
    bucket.dense_grads.div_(W);
  }
  return comm_->all_reduce_async(bucket.dense_grads);
}

// The compressor's view of each group: Δ_i formed (or left pending for a compressor that fuses
// it), and where ĝ and e_i go.
std::vector<ShapeGroup> ReductionEngine::shape_groups(Bucket& bucket, bool in_place, bool measure, double* delta_sq) {
  std::vector<ShapeGroup> shapes;
  shapes.reserve(bucket.groups.size());
  for (auto& g : bucket.groups) {
    ShapeGroup x = g.shape;
    if (in_place) {
      // The compressor adds g into E itself when it can fuse that into its first pass over Δ
      // (not when the norm of Δ must be measured first).
      if (traits_.fuses_delta && !measure) x.pending = g.G;
      else ef_.form_delta_in_place(g.G, g.E);
      x.delta = x.residual = g.E;
      x.out = g.G;
    } else {
      if (ef_.on()) {
        ef_.form_delta(g.G, g.E, g.D);
        x.delta = g.D;
      } else {
        x.delta = g.G;
      }
      x.residual = g.R;
      x.out = g.O;
      if (traits_.wants_raw_gradient) x.grad = g.G;
    }
    if (measure) *delta_sq += squared_norm(x.delta);
    shapes.push_back(std::move(x));
  }
  return shapes;
}

void ReductionEngine::finish_compressed(Bucket& bucket, std::vector<ShapeGroup>& shapes, bool in_place, bool measure,
                                        int64_t s, double* res_sq) {
  const bool reset = compressor_->resets_error_feedback(s);
  for (size_t k = 0; k < bucket.groups.size(); ++k) {
    auto& g = bucket.groups[k];
    if (measure) *res_sq += squared_norm(shapes[k].residual);
    if (in_place) {
      ef_.finish_in_place(g.E, reset);
    } else {
      ef_.update(g.E, g.R, shapes[k].delta, g.O, reset);
      g.G.copy_(g.O);
    }
    if (ef_.on())
      for (size_t i : g.members) params_[i].ef_valid = true;
  }
}

void ReductionEngine::finish_dense_members(Bucket& bucket, const comm::HandlePtr& handle) {
  // The dense mean is then in place in the gradient buffer.
  if (!handle) return;
  handle->wait();
  if (ef_.dense()) ef_.dense_after(bucket.dense_grads, bucket.dense_errors, bucket.dense_scratch);
}

bool ReductionEngine::agree_finite(bool finite_here) {
  nonfinite_ranks_.clear();
  nonfinite_param_.clear();
  if (comm_->size() > 1) {  // noop too: every rank must skip (and count) the same steps
    const auto all = comm_->all_gather_flags(finite_here ? 0 : 1);
    for (size_t r = 0; r < all.size(); ++r)
      if (all[r] != 0) nonfinite_ranks_.push_back(static_cast<int>(r));
  } else if (!finite_here) {
    nonfinite_ranks_.push_back(comm_->rank());
  }
  if (nonfinite_ranks_.empty()) return true;
  if (first_nonfinite_ < params_.size()) nonfinite_param_ = params_[first_nonfinite_].name;
  return false;
}

bool ReductionEngine::end_step(double wait_seconds) {
  if (guarded_ && !agree_finite(step_finite_)) {
    torch::NoGradGuard no_grad;
    for (Bucket* b : touched_) restore(*b);
    touched_.clear();
    stats_.skipped_steps += 1;
    return false;
  }

  const bool compressed_phase = step_ >= options_.start_iter();
  const comm::CommStats& now = comm_->stats();
  const int64_t sent = now.bytes_sent - step_comm_before_.bytes_sent;
  stats_.steps += 1;
  stats_.bytes_sent += sent;
  stats_.dense_bytes += dense_bytes_;
  stats_.last_bytes_sent = sent;
  stats_.traffic_steps += 1;
  stats_.traffic_bytes += sent;
  stats_.collectives += now.collectives - step_comm_before_.collectives;
  stats_.all_gathers += now.all_gathers - step_comm_before_.all_gathers;
  stats_.all_gather_bytes += now.all_gather_bytes - step_comm_before_.all_gather_bytes;
  if (compressed_phase) {
    stats_.compressed_steps += 1;
    stats_.compressed_bytes_sent += sent;
    stats_.compressed_dense_bytes += dense_bytes_;
  }
  stats_.floats_sent = stats_.bytes_sent / 4;
  stats_.dense_floats = stats_.dense_bytes / 4;
  stats_.compressed_floats_sent = stats_.compressed_bytes_sent / 4;
  stats_.compressed_dense_floats = stats_.compressed_dense_bytes / 4;
  stats_.last_floats_sent = sent / 4;
  if (measuring_norms()) {
    stats_.relative_error = step_delta_sq_ > 0 ? std::sqrt(step_res_sq_ / step_delta_sq_) : 0.0;
    double ef_sq = 0;
    for (const Bucket* b : touched_)
      if (b->errors.defined()) ef_sq += squared_norm(b->errors);
    stats_.ef_norm = std::sqrt(ef_sq);
  }
  touched_.clear();
  if (compressed_phase && compressor_->measures_spectrum(step_ - options_.start_iter())) {
    torch::NoGradGuard no_grad;
    std::vector<PlannedMatrix> matrices = planned_matrices();
    compressor_->plan_ranks(matrices, step_ - options_.start_iter(), uncompressed_bytes_, planning_dtype());
  }
  stats_.last_comm_seconds = step_comm_seconds_;
  stats_.last_compress_seconds = std::max(0.0, step_busy_seconds_ - step_comm_seconds_);
  stats_.last_wait_seconds = wait_seconds;
  stats_.comm_seconds += stats_.last_comm_seconds;
  stats_.compress_seconds += stats_.last_compress_seconds;
  stats_.wait_seconds += wait_seconds;
  ++step_;
  return true;
}

void ReductionEngine::count_skipped_step() { stats_.skipped_steps += 1; }

std::vector<std::string> ReductionEngine::unmatched_uncompressed_names() const {
  std::vector<std::string> out;
  for (const auto& pattern : options_.uncompressed_names()) {
    const std::vector<std::string> one{pattern};
    if (std::none_of(params_.begin(), params_.end(),
                     [&](const ParamState& p) { return matching_pattern(p.name, one) != nullptr; }))
      out.push_back(pattern);
  }
  return out;
}

std::vector<std::string> ReductionEngine::compressed_names() const {
  std::vector<std::string> out;
  for (const auto& p : params_)
    if (p.compressed) out.push_back(p.name);
  return out;
}

std::vector<PlannedMatrix> ReductionEngine::planned_matrices() {
  std::vector<PlannedMatrix> out;
  std::map<std::tuple<size_t, int64_t, int64_t>, int64_t> group_of;  // (bucket, m, n) -> group id
  for (size_t i = 0; i < params_.size(); ++i) {
    ParamState& p = params_[i];
    if (!p.compressed) continue;
    int64_t group = static_cast<int64_t>(i);
    if (options_.batch_same_shape())
      group = group_of.emplace(std::make_tuple(p.bucket, p.m, p.n), static_cast<int64_t>(i)).first->second;
    out.push_back({p.name, p.m, p.n, group, &p.compressor_state});
  }
  return out;
}

at::ScalarType ReductionEngine::planning_dtype() const {
  for (const auto& p : params_)
    if (p.compressed) return p.work_dtype;
  return at::kFloat;
}

std::vector<RankedMatrix> ReductionEngine::ranks() const {
  std::vector<RankedMatrix> out;
  for (const auto& p : params_) {
    if (!p.compressed) continue;
    RankedMatrix r{p.name, p.m, p.n, compressor_->rank_at(p.compressor_state, p.m, p.n), {}};
    auto h = p.compressor_state.find(compressor_keys::kRankHistory);
    if (h != p.compressor_state.end()) {
      const at::Tensor t = h->second.contiguous();
      for (int64_t j = 0; j < t.size(0); ++j) r.history.emplace_back(t[j][0].item<int64_t>(), t[j][1].item<int64_t>());
    }
    out.push_back(std::move(r));
  }
  return out;
}

double ReductionEngine::mean_rank() const {
  double sum = 0;
  int64_t count = 0;
  for (const auto& p : params_)
    if (p.compressed) {
      sum += static_cast<double>(compressor_->rank_at(p.compressor_state, p.m, p.n));
      ++count;
    }
  return count > 0 ? sum / static_cast<double>(count) : 0.0;
}

int64_t ReductionEngine::expected_bytes(int64_t s) const {
  if (!traits_.communicates) return 0;
  if (s < 0) return dense_bytes_;
  int64_t total = 0;
  for (const auto& p : params_) {
    const int64_t dense = p.param.numel() * static_cast<int64_t>(c10::elementSize(p.work_dtype));
    total += p.compressed ? compressor_->wire_bytes_at(p.compressor_state, p.m, p.n, s, p.work_dtype) : dense;
  }
  return total;
}

std::string ReductionEngine::describe(size_t groups, size_t buckets) const {
  std::ostringstream os;
  int64_t cn = 0, cnumel = 0;
  for (const auto& p : params_)
    if (p.compressed) {
      ++cn;
      cnumel += p.param.numel();
    }
  os << compressor_->describe() << " | " << options_ << " | error_feedback=" << (ef_.on() ? "on" : "off") << " | "
     << cn << "/" << params_.size() << " tensors compressed (" << cnumel << "/" << numel_ << " elements) in "
     << groups << " shape groups, " << buckets << (buckets == 1 ? " bucket" : " buckets");
  return os.str();
}

std::vector<std::string> ReductionEngine::warnings() const {
  std::vector<MatrixInfo> compressed;
  for (const auto& p : params_)
    if (p.compressed) compressed.push_back({p.name, p.m, p.n});
  return compressor_->start_warnings(compressed, ef_.on());
}

std::string ReductionEngine::state_settings() const {
  return compressor_->describe() + " | error_feedback=" + (ef_.on() ? "on" : "off") +
         (ef_.on() ? std::string(" ef_residual=") + (ef_.global_residual() ? "global" : "local") : std::string());
}

std::vector<std::pair<std::string, at::Tensor>> ReductionEngine::state_dict() const {
  auto out = params_state_dict(params_, step_);
  out.emplace_back(state_keys::kStats, stats_to_tensor(stats_));
  const std::string settings = state_settings();
  at::Tensor text = at::empty({static_cast<int64_t>(settings.size())}, at::kByte);
  std::copy(settings.begin(), settings.end(), text.data_ptr<uint8_t>());
  out.emplace_back(state_keys::kSettings, text);
  return out;
}

void ReductionEngine::load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> rest;
  at::Tensor stats;
  for (const auto& kv : state) {
    if (kv.first == state_keys::kStats) {
      stats = kv.second;
    } else if (kv.first == state_keys::kSettings) {
      const at::Tensor t = kv.second.contiguous();
      TORCH_CHECK(t.scalar_type() == at::kByte && t.dim() == 1, "reducer state '", kv.first,
                  "' must be a uint8 vector, got ", t.scalar_type(), " ", t.sizes());
      const std::string saved(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), static_cast<size_t>(t.numel()));
      TORCH_CHECK(saved == state_settings(), "reducer state was saved with settings '", saved,
                  "'; this reducer has '", state_settings(), "': load it into a reducer made with the same compressor "
                  "options and error feedback");
    } else {
      rest.push_back(kv);
    }
  }
  // Without a stats entry (a hand-made state) the counters stay as they are.
  const ReducerStats loaded = stats.defined() ? stats_from_tensor(stats) : stats_;  // checks first
  step_ = load_params_state_dict(params_, rest);
  stats_ = loaded;
}

}  // namespace lowrank
