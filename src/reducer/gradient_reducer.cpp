#include "lowrank/reducer/gradient_reducer.h"

#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include "lowrank/compressors/greedylore.h"
#include "lowrank/reducer/agreement.h"
#include "lowrank/reducer/bucket_plan.h"
#include "lowrank/reducer/compression_plan.h"

namespace lowrank {

void ReducerOptions::validate() const {
  TORCH_CHECK(start_iter() >= 0, "start_iter must be >= 0, got ", start_iter());
  TORCH_CHECK(std::isfinite(min_compression_rate()) && min_compression_rate() >= 0,
              "min_compression_rate must be a finite number >= 0, got ", min_compression_rate());
  TORCH_CHECK(error_feedback() >= -1 && error_feedback() <= 1, "error_feedback must be -1, 0 or 1, got ",
              error_feedback());
  TORCH_CHECK(ef_residual() == "local" || ef_residual() == "global", "ef_residual must be local or global, got '",
              ef_residual(), "'");
  TORCH_CHECK(std::isfinite(ef_beta()) && ef_beta() >= 0 && ef_beta() < 1, "ef_beta must be in [0, 1), got ",
              ef_beta());
  TORCH_CHECK(stats_every() >= 1, "stats_every must be >= 1, got ", stats_every());
  TORCH_CHECK(std::isfinite(bucket_cap_mb()) && bucket_cap_mb() >= 0,
              "bucket_cap_mb must be a finite number >= 0 (0 = one bucket), got ", bucket_cap_mb());
}

std::ostream& operator<<(std::ostream& os, const ReducerOptions& o) {
  os << "start_iter=" << o.start_iter() << " min_compression_rate=" << o.min_compression_rate()
     << " error_feedback=" << (o.error_feedback() < 0 ? "default" : (o.error_feedback() ? "on" : "off"))
     << " ef_residual=" << o.ef_residual();
  if (o.ef_beta() > 0) os << " ef_beta=" << o.ef_beta();
  os << " batch_same_shape=" << (o.batch_same_shape() ? "true" : "false")
     << " seed=" << o.seed() << (o.norm_stats() ? "" : " norm_stats=false");
  if (o.stats_every() != 1) os << " stats_every=" << o.stats_every();
  os << " bucket_cap_mb=" << o.bucket_cap_mb() << " overlap=" << (o.overlap() ? "true" : "false") << " skip_nonfinite=" << (o.skip_nonfinite() ? "true" : "false")
     << " uncompressed_names=[";
  for (size_t i = 0; i < o.uncompressed_names().size(); ++i) os << (i ? "," : "") << o.uncompressed_names()[i];
  return os << "]";
}

double ReducerStats::compression_ratio() const {
  if (compressed_steps == 0) return whole_run_compression_ratio();
  return compressed_bytes_sent > 0 ? double(compressed_dense_bytes) / double(compressed_bytes_sent) : 0.0;
}

double ReducerStats::whole_run_compression_ratio() const {
  return bytes_sent > 0 ? double(dense_bytes) / double(bytes_sent) : 0.0;
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool name_matches(const std::string& name, const std::vector<std::string>& patterns) {
  return matching_pattern(name, patterns) != nullptr;
}

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

}  // namespace

GradientReducer::GradientReducer(std::vector<std::pair<std::string, at::Tensor>> params,
                                 std::unique_ptr<Compressor> compressor, std::shared_ptr<comm::Communicator> comm,
                                 ReducerOptions options)
    : compressor_(std::move(compressor)),
      comm_(std::move(comm)),
      options_(std::move(options)),
      ef_(false, false, 0.0) {
  TORCH_CHECK(compressor_, "GradientReducer: compressor is null");
  TORCH_CHECK(comm_, "GradientReducer: communicator is null");
  options_.validate();
  const bool ef_on = options_.error_feedback() < 0 ? compressor_->default_error_feedback()
                                                   : options_.error_feedback() == 1;
  ef_ = ErrorFeedback(ef_on && compressor_->communicates(), options_.ef_residual() == "global", options_.ef_beta());

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
    dense_bytes_ += p.param.numel() * static_cast<int64_t>(c10::elementSize(p.work_dtype));
    // The rule lives in reducer/compression_plan.h, shared with `lowrank inspect`.
    const CompressionDecision d = decide_compression(p.name, p.param.sizes(), *compressor_, options_);
    p.m = d.m;
    p.n = d.n;
    p.compressed = d.compressed;
    params_.push_back(std::move(p));
  }

  std::vector<BucketPlanEntry> plan_in;
  for (const auto& p : params_)
    plan_in.push_back({p.param.numel() * static_cast<int64_t>(c10::elementSize(p.work_dtype)), p.work_dtype});
  const auto plan = plan_buckets(plan_in, static_cast<int64_t>(options_.bucket_cap_mb() * 1024 * 1024));
  int64_t ordinal = 0;
  for (size_t b = 0; b < plan.size(); ++b)
    buckets_.push_back(Bucket::build(params_, plan[b], b, ef_, *compressor_, options_.batch_same_shape(), &ordinal));
  foreign_.assign(params_.size(), 0);

  // Gradients become views into the buckets (where the dtype allows), keeping any values they had.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : params_) {
      const at::Tensor g = p.param.grad();
      if (g.defined()) p.grad_view.copy_(g);
      if (p.param.scalar_type() == p.work_dtype) p.param.mutable_grad() = p.grad_view;
    }
  }

  std::ostringstream fp;
  fp << "world_size " << comm_->size() << "\n"
     << "compressor " << compressor_->describe() << "\n"
     << "reducer " << options_ << "\n";
  for (const auto& p : params_)
    fp << "param " << p.name << " " << shape_string(p.param.sizes()) << " " << p.param.scalar_type() << " "
       << (p.compressed ? "compressed" : "dense") << "\n";
  // The bucket plan is a function of the parameter lines and bucket_cap_mb, compared above.
  check_agreement(*comm_, fp.str(), "the reducer set-up");

  ready_count_.assign(buckets_.size(), 0);
  hooked_count_.assign(buckets_.size(), 0);
  launched_.assign(buckets_.size(), false);
  if (options_.overlap()) {
    register_hooks();
    // Buffers made under InferenceMode can only be updated under it: the thread inherits the mode.
    const bool inference = c10::InferenceMode::is_enabled();
    worker_ = std::thread([this, inference] { worker_loop(inference); });
  }
}

GradientReducer::~GradientReducer() {
  for (auto& h : hooks_) h.accumulator->del_post_hook(h.key);
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
}

void GradientReducer::register_hooks() {
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor& t = params_[i].param;
    if (!t.requires_grad() || !t.is_leaf()) continue;
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(t);
    if (!acc) continue;
    const uintptr_t key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_gradient_ready(i);
          return outputs;
        }));
    hooks_.push_back({acc, key});
    hooked_count_[params_[i].bucket] += 1;
  }
}

void GradientReducer::on_gradient_ready(size_t param) {
  std::lock_guard<std::mutex> lk(mu_);
  const size_t b = params_[param].bucket;
  TORCH_CHECK(!launched_[b] && ready_count_[b] < hooked_count_[b], "GradientReducer: the gradient of '",
              params_[param].name, "' was accumulated twice before reduce(); with overlap on, call reduce() after "
              "every backward() (for gradient accumulation over several backward() calls, set overlap(false))");
  ready_count_[b] += 1;
  launch_ready_locked();
}

void GradientReducer::open_step_locked() {
  if (step_open_) return;
  step_open_ = true;
  step_bytes_before_ = comm_->stats().bytes_sent;
}

void GradientReducer::launch_ready_locked() {
  if (options_.skip_nonfinite()) return;  // buckets start from reduce(), after the finiteness check
  bool any = false;
  while (next_launch_ < buckets_.size() && hooked_count_[next_launch_] > 0 &&
         ready_count_[next_launch_] == hooked_count_[next_launch_]) {
    open_step_locked();
    launched_[next_launch_] = true;
    queue_.push_back(next_launch_++);
    stats_.buckets_from_backward += 1;
    any = true;
  }
  if (any) cv_.notify_all();
}

void GradientReducer::worker_loop(bool inference_mode) {
  at::init_num_threads();
  c10::InferenceMode inference(inference_mode);
  torch::NoGradGuard no_grad;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_
    const size_t b = queue_.front();
    queue_.pop_front();
    if (!error_) {
      lk.unlock();
      try {
        reduce_bucket(b);
      } catch (...) {
        lk.lock();
        error_ = std::current_exception();
        lk.unlock();
      }
      lk.lock();
    }
    ++done_;
    cv_.notify_all();
  }
}

bool GradientReducer::measuring_norms() const {
  return options_.norm_stats() && (step_ + 1) % options_.stats_every() == 0;
}

void GradientReducer::gather_gradients(Bucket& bucket) {
  for (size_t i : bucket.members) {
    ParamState& p = params_[i];
    const at::Tensor g = p.param.grad();
    if (g.defined() && g.data_ptr() == p.grad_view.data_ptr() && g.sizes() == p.grad_view.sizes()) {
      foreign_[i] = 0;
      continue;
    }
    foreign_[i] = g.defined() ? 1 : 2;
    if (g.defined()) p.grad_view.copy_(g);
    else p.grad_view.zero_();
  }
}

void GradientReducer::scatter_results(Bucket& bucket) {
  for (size_t i : bucket.members) {
    ParamState& p = params_[i];
    if (foreign_[i] == 1) {
      p.param.mutable_grad().copy_(p.grad_view);  // the caller's own tensor gets ĝ
    } else if (foreign_[i] == 2) {
      p.param.mutable_grad() =
          p.param.scalar_type() == p.work_dtype ? p.grad_view : p.grad_view.to(p.param.scalar_type());
    }
  }
}

void GradientReducer::reduce_bucket(size_t index) {
  const auto t0 = Clock::now();
  const double comm0 = comm_->stats().seconds;
  Bucket& bucket = buckets_[index];
  gather_gradients(bucket);
  const int W = comm_->size();
  const bool compressed_phase = step_ >= options_.start_iter();
  const int64_t s = step_ - options_.start_iter();
  double res_sq = 0, delta_sq = 0;

  if (!compressor_->communicates()) {
    // noop: every rank keeps its own gradient.
  } else if (!compressed_phase) {
    // Dense warm-up: one mean all-reduce of the whole bucket, no error feedback.
    if (bucket.grads.numel() > 0) {
      if (W > 1) bucket.grads.div_(W);
      comm_->all_reduce_(bucket.grads);
    }
  } else {
    // 1. Dense members, issued first: they travel while the compressor works.
    comm::HandlePtr dense_handle;
    if (bucket.dense_grads.numel() > 0) {
      if (ef_.dense()) {
        ef_.dense_before(bucket.dense_grads, bucket.dense_errors, bucket.dense_scratch, W);
        for (size_t i : bucket.dense) params_[i].ef_valid = true;
      } else if (W > 1) {
        bucket.dense_grads.div_(W);
      }
      dense_handle = comm_->all_reduce_async(bucket.dense_grads);
    }
    // 2. Compressed members, one shape group at a time inside the compressor.
    if (!bucket.groups.empty()) {
      const bool in_place = ef_.in_place(*compressor_);
      const bool measure = measuring_norms();
      std::vector<ShapeGroup> shapes;
      shapes.reserve(bucket.groups.size());
      for (auto& g : bucket.groups) {
        ShapeGroup x = g.shape;
        if (in_place) {
          // The compressor adds g into E itself when it can fuse that into its first pass over Δ
          // (not when the norm of Δ must be measured first).
          if (compressor_->fuses_delta() && !measure) x.pending = g.G;
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
          if (compressor_->wants_raw_gradient()) x.grad = g.G;
        }
        if (measure) delta_sq += squared_norm(x.delta);
        shapes.push_back(std::move(x));
      }
      StepContext ctx;
      ctx.step = s;
      ctx.seed = options_.seed();
      ctx.comm = comm_.get();
      compressor_->compress(shapes, ctx);
      const bool reset = compressor_->resets_error_feedback(s);
      for (size_t k = 0; k < bucket.groups.size(); ++k) {
        auto& g = bucket.groups[k];
        if (measure) res_sq += squared_norm(shapes[k].residual);
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
    // 3. The dense mean is in place in the gradient buffer.
    if (dense_handle) {
      dense_handle->wait();
      if (ef_.dense()) ef_.dense_after(bucket.dense_grads, bucket.dense_errors, bucket.dense_scratch);
    }
  }
  scatter_results(bucket);

  const double in_comm = comm_->stats().seconds - comm0;
  std::lock_guard<std::mutex> lk(mu_);
  step_res_sq_ += res_sq;
  step_delta_sq_ += delta_sq;
  step_comm_seconds_ += in_comm;
  step_busy_seconds_ += seconds_since(t0);
}

bool GradientReducer::gradients_finite_everywhere() {
  torch::NoGradGuard no_grad;
  bool finite = true;
  for (auto& bucket : buckets_) {
    gather_gradients(bucket);
    // One read pass: a NaN or Inf makes the sum non-finite. A sum that overflowed from finite
    // values (all of them huge) is told apart by the exact test.
    if (bucket.grads.numel() > 0 && !std::isfinite(bucket.grads.sum().item<double>()) &&
        !at::isfinite(bucket.grads).all().item<bool>())
      finite = false;
  }
  nonfinite_ranks_.clear();
  nonfinite_param_.clear();
  if (comm_->size() > 1) {  // noop too: every rank must skip (and count) the same steps
    const auto all = comm_->all_gather_flags(finite ? 0 : 1);
    for (size_t r = 0; r < all.size(); ++r)
      if (all[r] != 0) nonfinite_ranks_.push_back(static_cast<int>(r));
  } else if (!finite) {
    nonfinite_ranks_.push_back(comm_->rank());
  }
  if (!finite)
    for (auto& p : params_)
      if (!at::isfinite(p.grad_view).all().item<bool>()) {
        nonfinite_param_ = p.name;
        break;
      }
  return nonfinite_ranks_.empty();
}

bool GradientReducer::reduce() {
  const auto t0 = Clock::now();
  TORCH_CHECK(!broken_, "GradientReducer: an earlier reduce() failed; this reducer's state is no longer consistent "
              "across ranks (restart from a checkpoint)");
  if (options_.skip_nonfinite() && !gradients_finite_everywhere()) {
    std::lock_guard<std::mutex> lk(mu_);
    std::fill(ready_count_.begin(), ready_count_.end(), 0);
    stats_.skipped_steps += 1;
    return false;
  }
  if (options_.overlap()) {
    std::unique_lock<std::mutex> lk(mu_);
    open_step_locked();
    while (next_launch_ < buckets_.size()) {
      launched_[next_launch_] = true;
      queue_.push_back(next_launch_++);
    }
    cv_.notify_all();
    cv_.wait(lk, [this] { return done_ == buckets_.size(); });
    std::fill(ready_count_.begin(), ready_count_.end(), 0);
    std::fill(launched_.begin(), launched_.end(), false);
    next_launch_ = 0;
    done_ = 0;
    step_open_ = false;
    if (error_) {
      broken_ = true;
      std::rethrow_exception(error_);
    }
  } else {
    torch::NoGradGuard no_grad;
    step_bytes_before_ = comm_->stats().bytes_sent;
    for (size_t b = 0; b < buckets_.size(); ++b) reduce_bucket(b);
  }
  finish_step(seconds_since(t0));
  return true;
}

void GradientReducer::zero_grad() {
  torch::NoGradGuard no_grad;
  for (auto& b : buckets_) b.grads.zero_();
  for (auto& p : params_) {
    const at::Tensor g = p.param.grad();
    if (g.defined() && g.data_ptr() == p.grad_view.data_ptr()) continue;
    if (p.param.scalar_type() == p.work_dtype) p.param.mutable_grad() = p.grad_view;
    else if (g.defined()) p.param.mutable_grad().zero_();
  }
}

void GradientReducer::finish_step(double wait_seconds) {
  const bool compressed_phase = step_ >= options_.start_iter();
  const int64_t sent = comm_->stats().bytes_sent - step_bytes_before_;
  stats_.steps += 1;
  stats_.bytes_sent += sent;
  stats_.dense_bytes += dense_bytes_;
  stats_.last_bytes_sent = sent;
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
    for (const auto& b : buckets_)
      if (b.errors.defined()) ef_sq += squared_norm(b.errors);
    stats_.ef_norm = std::sqrt(ef_sq);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.last_comm_seconds = step_comm_seconds_;
    stats_.last_compress_seconds = std::max(0.0, step_busy_seconds_ - step_comm_seconds_);
    step_res_sq_ = step_delta_sq_ = step_busy_seconds_ = step_comm_seconds_ = 0;
  }
  stats_.last_wait_seconds = wait_seconds;
  stats_.comm_seconds += stats_.last_comm_seconds;
  stats_.compress_seconds += stats_.last_compress_seconds;
  stats_.wait_seconds += wait_seconds;
  ++step_;
}

std::vector<std::string> GradientReducer::unmatched_uncompressed_names() const {
  std::vector<std::string> out;
  for (const auto& pattern : options_.uncompressed_names()) {
    const std::vector<std::string> one{pattern};
    if (std::none_of(params_.begin(), params_.end(), [&](const ParamState& p) { return name_matches(p.name, one); }))
      out.push_back(pattern);
  }
  return out;
}

std::vector<std::string> GradientReducer::compressed_names() const {
  std::vector<std::string> out;
  for (const auto& p : params_)
    if (p.compressed) out.push_back(p.name);
  return out;
}

std::vector<std::vector<std::string>> GradientReducer::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& b : buckets_) {
    out.emplace_back();
    for (size_t i : b.members) out.back().push_back(params_[i].name);
  }
  return out;
}

int64_t GradientReducer::expected_floats(int64_t s) const {
  if (!compressor_->communicates()) return 0;
  if (s < 0) return numel_;
  int64_t total = 0;
  for (const auto& p : params_) total += p.compressed ? compressor_->wire_floats(p.m, p.n, s) : p.param.numel();
  return total;
}

std::string GradientReducer::describe() const {
  std::ostringstream os;
  int64_t cn = 0, cnumel = 0;
  size_t groups = 0;
  for (const auto& p : params_)
    if (p.compressed) {
      ++cn;
      cnumel += p.param.numel();
    }
  for (const auto& b : buckets_) groups += b.groups.size();
  os << compressor_->describe() << " | " << options_ << " | error_feedback=" << (ef_.on() ? "on" : "off") << " | "
     << cn << "/" << params_.size() << " tensors compressed (" << cnumel << "/" << numel_ << " elements) in "
     << groups << " shape groups, " << buckets_.size() << (buckets_.size() == 1 ? " bucket" : " buckets");
  return os.str();
}

std::vector<std::string> GradientReducer::warnings() const {
  std::vector<std::string> out;
  // A Compressor hook (shapes in, warning out) would make this generic; GreedyLore is the one case.
  const auto* greedy = dynamic_cast<const GreedyLore*>(compressor_.get());
  if (greedy && ef_.on()) {
    std::vector<std::tuple<std::string, int64_t, int64_t>> matrices;
    for (const auto& p : params_)
      if (p.compressed) matrices.emplace_back(p.name, p.m, p.n);
    std::string w = greedy->stability_warning(matrices);
    if (!w.empty()) out.push_back(std::move(w));
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> GradientReducer::state_dict() const {
  auto out = params_state_dict(params_, step_);
  out.emplace_back(state_keys::kStats, stats_to_tensor(stats_));
  return out;
}

void GradientReducer::load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> rest;
  at::Tensor stats;
  for (const auto& kv : state) {
    if (kv.first == state_keys::kStats) stats = kv.second;
    else rest.push_back(kv);
  }
  // Without a stats entry (a hand-made state) the counters stay as they are.
  const ReducerStats loaded = stats.defined() ? stats_from_tensor(stats) : stats_;  // checks first
  step_ = load_params_state_dict(params_, rest);
  stats_ = loaded;
}

}  // namespace lowrank
