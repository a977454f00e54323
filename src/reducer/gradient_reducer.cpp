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

#include "lowrank/util/clock.h"
#include "lowrank/reducer/bucket_plan.h"

namespace lowrank {

double ReducerStats::compression_ratio() const {
  if (compressed_steps == 0) return whole_run_compression_ratio();
  return compressed_bytes_sent > 0 ? double(compressed_dense_bytes) / double(compressed_bytes_sent) : 0.0;
}

double ReducerStats::whole_run_compression_ratio() const {
  return bytes_sent > 0 ? double(dense_bytes) / double(bytes_sent) : 0.0;
}

GradientReducer::GradientReducer(std::vector<std::pair<std::string, at::Tensor>> params,
                                 std::unique_ptr<Compressor> compressor, std::shared_ptr<comm::Communicator> comm,
                                 ReducerOptions options)
    // The bucket plan is a function of the parameter lines and bucket_cap_mb, compared by the engine.
    : engine_(std::move(params), std::move(compressor), std::move(comm), std::move(options), ""),
      params_(engine_.params()) {
  const ReducerOptions& opts = engine_.options();
  const auto plan = plan_buckets(params_, opts.bucket_cap_mb());
  int64_t ordinal = 0;
  for (size_t b = 0; b < plan.size(); ++b) buckets_.push_back(engine_.build_bucket(plan[b], b, &ordinal));
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

  ready_count_.assign(buckets_.size(), 0);
  hooked_count_.assign(buckets_.size(), 0);
  launched_.assign(buckets_.size(), false);
  if (opts.overlap()) {
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
  // With skip_nonfinite, buckets that start before the whole gradient exists are guarded: the
  // ranks agree at the end of the step and a skip restores what the buckets changed.
  engine_.begin_step(/*guarded=*/true);
}

void GradientReducer::launch_ready_locked() {
  bool any = false;
  while (next_launch_ < buckets_.size() && hooked_count_[next_launch_] > 0 &&
         ready_count_[next_launch_] == hooked_count_[next_launch_]) {
    open_step_locked();
    launched_[next_launch_] = true;
    queue_.push_back(next_launch_++);
    from_backward_ += 1;
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
  Bucket& bucket = buckets_[index];
  gather_gradients(bucket);
  engine_.reduce_bucket(bucket);
  scatter_results(bucket);
}

bool GradientReducer::reduce() {
  const auto t0 = Clock::now();
  TORCH_CHECK(!broken_, "GradientReducer: an earlier reduce() failed; this reducer's state is no longer consistent "
              "across ranks (restart from a checkpoint)");
  if (engine_.options().overlap()) {
    {
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
    }
    const int64_t from_backward = from_backward_;
    from_backward_ = 0;
    bool applied = false;
    try {
      applied = engine_.end_step(seconds_since(t0));  // the agreement is a collective: it may fail
    } catch (...) {
      broken_ = true;
      throw;
    }
    if (applied) engine_.count_buckets_from_backward(from_backward);
    return applied;
  }
  torch::NoGradGuard no_grad;
  engine_.begin_step(/*guarded=*/false);
  if (engine_.options().skip_nonfinite()) {
    // Check first: no bucket starts before the ranks agree that every gradient is finite.
    bool finite = true;
    for (auto& bucket : buckets_) {
      gather_gradients(bucket);
      if (!engine_.check_finite(bucket)) finite = false;
    }
    if (!engine_.agree_finite(finite)) {
      engine_.count_skipped_step();
      return false;
    }
  }
  for (size_t b = 0; b < buckets_.size(); ++b) reduce_bucket(b);
  return engine_.end_step(seconds_since(t0));
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

std::vector<std::string> GradientReducer::unmatched_uncompressed_names() const {
  return engine_.unmatched_uncompressed_names();
}

std::vector<std::string> GradientReducer::compressed_names() const { return engine_.compressed_names(); }

std::vector<std::vector<std::string>> GradientReducer::bucket_names() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& b : buckets_) {
    out.emplace_back();
    for (size_t i : b.members) out.back().push_back(params_[i].name);
  }
  return out;
}

int64_t GradientReducer::expected_bytes(int64_t s) const { return engine_.expected_bytes(s); }
std::vector<RankedMatrix> GradientReducer::ranks() const { return engine_.ranks(); }
double GradientReducer::mean_rank() const { return engine_.mean_rank(); }

std::string GradientReducer::describe() const {
  size_t groups = 0;
  for (const auto& b : buckets_) groups += b.groups.size();
  return engine_.describe(groups, buckets_.size());
}

std::vector<std::string> GradientReducer::warnings() const { return engine_.warnings(); }

std::vector<std::pair<std::string, at::Tensor>> GradientReducer::state_dict() const { return engine_.state_dict(); }

void GradientReducer::load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  engine_.load_state_dict(state);
}

}  // namespace lowrank
