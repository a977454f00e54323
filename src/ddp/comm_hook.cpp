#include "lowrank/ddp/comm_hook.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <limits>
#include <sstream>

#include "lowrank/reducer/bucket_plan.h"

namespace lowrank {
namespace ddp {

DdpHookState::DdpHookState(NamedParams params, std::unique_ptr<Compressor> compressor,
                           std::shared_ptr<comm::Communicator> comm, ReducerOptions options)
    : given_(std::move(params)), compressor_(std::move(compressor)), comm_(std::move(comm)), options_(std::move(options)) {
  TORCH_CHECK(compressor_, "DDP hook: compressor is null");
  TORCH_CHECK(comm_, "DDP hook: communicator is null");
  options_.validate();
  if (!given_.empty()) {
    for (size_t i = 0; i < given_.size(); ++i) index_of_[given_[i].second.unsafeGetTensorImpl()] = i;
    engine_ = std::make_unique<ReductionEngine>(given_, std::move(compressor_), comm_, options_, "scheduler ddp\n");
    plan();
  }
  worker_ = std::thread([this] { worker_loop(); });
}

DdpHookState::~DdpHookState() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

namespace {

void fail_all(std::vector<c10::intrusive_ptr<c10::ivalue::Future>>& futures, const std::exception_ptr& error) {
  for (auto& f : futures)
    if (!f->completed()) f->setError(error);  // runs callbacks (a Python .then takes the GIL): no lock held
  futures.clear();
}

}  // namespace

c10::intrusive_ptr<c10::ivalue::Future> DdpHookState::run(c10d::GradBucket& bucket) {
  auto future = c10::make_intrusive<c10::ivalue::Future>(c10::TensorType::get());
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lk(mu_);
    error = error_;
    if (!error) {
      queue_.push_back({std::make_shared<c10d::GradBucket>(bucket), future});
      cv_.notify_all();
    }
  }
  // An earlier step failed part-way: the ranks' states may differ, so no later step may run.
  if (error) future->setError(error);
  return future;
}

void DdpHookState::worker_loop() {
  at::init_num_threads();
  torch::NoGradGuard no_grad;
  std::vector<Pending> step;  // this step's DDP buckets, their futures not yet completed
  std::vector<c10::intrusive_ptr<c10::ivalue::Future>> to_fail;
  for (;;) {
    Pending item;
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stop_ || !queue_.empty(); });
      if (stop_) {
        // Destroyed with a step in flight (DDP abandoned it): fail its futures, run nothing more.
        for (auto& p : queue_) to_fail.push_back(p.future);
        queue_.clear();
        break;
      }
      item = std::move(queue_.front());
      queue_.pop_front();
      error = error_;
    }
    if (error) {
      to_fail.push_back(item.future);
      fail_all(to_fail, error);
      continue;
    }
    try {
      std::lock_guard<std::mutex> state_lock(state_mu_);
      step.push_back(item);
      if (engine_) take(item);
      if (!item.bucket->isLast()) continue;
      if (!engine_) {  // the first step without given parameters: build, then take every bucket
        build_engine(step);
        for (auto& p : step) take(p);
      }
      finish(step);
    } catch (...) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        error_ = std::current_exception();
        error = error_;
      }
      for (auto& p : step) to_fail.push_back(p.future);
      step.clear();
      open_ = false;
      fail_all(to_fail, error);
    }
  }
  for (auto& p : step) to_fail.push_back(p.future);
  fail_all(to_fail, std::make_exception_ptr(c10::Error("lowrank DDP hook destroyed with a step in flight", "")));
}

void DdpHookState::take(const Pending& p) {
  if (!open_) {
    engine_->begin_step(/*guarded=*/true);
    std::fill(arrived_.begin(), arrived_.end(), 0);
    std::fill(seen_.begin(), seen_.end(), 0);
    next_ = 0;
    open_ = true;
  }
  auto& params = engine_->params();
  const auto grads = p.bucket->getGradients();  // views into DDP's buffer
  const auto& tensors = p.bucket->getParameters();
  for (size_t j = 0; j < tensors.size(); ++j) {
    auto it = index_of_.find(tensors[j].unsafeGetTensorImpl());
    TORCH_CHECK(it != index_of_.end(), "lowrank DDP hook: DDP bucket ", p.bucket->getIndex(),
                " holds a parameter of shape ", tensors[j].sizes(),
                " that this hook state was not made for (a state made for another model?)");
    ParamState& ps = params[it->second];
    TORCH_CHECK(!seen_[it->second], "lowrank DDP hook: parameter '", ps.name, "' handed over twice in one step");
    seen_[it->second] = 1;
    ps.grad_view.copy_(grads[j]);
    arrived_[ps.bucket] += 1;
  }
  while (next_ < buckets_.size() && arrived_[next_] == static_cast<int64_t>(buckets_[next_].members.size()))
    engine_->reduce_bucket(buckets_[next_++]);
}

void DdpHookState::finish(std::vector<Pending>& step) {
  // Parameters DDP did not hand over count as zero gradients; their buckets run now.
  auto& params = engine_->params();
  for (; next_ < buckets_.size(); ++next_) {
    for (size_t i : buckets_[next_].members)
      if (!seen_[i]) params[i].grad_view.zero_();
    engine_->reduce_bucket(buckets_[next_]);
  }
  open_ = false;
  const bool applied = engine_->end_step(0.0);
  for (auto& p : step) {
    if (!applied) {
      p.bucket->getBufferRef().fill_(std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    const auto grads = p.bucket->getGradients();
    const auto& tensors = p.bucket->getParameters();
    for (size_t j = 0; j < tensors.size(); ++j) grads[j].copy_(params[index_of_.at(tensors[j].unsafeGetTensorImpl())].grad_view);
  }
  last_skipped_ = !applied;
  for (auto& p : step) p.future->markCompleted(c10::IValue(p.bucket->getBuffer()));
  step.clear();
}

void DdpHookState::build_engine(const std::vector<Pending>& step) {
  NamedParams params;
  for (const auto& p : step)
    for (const auto& t : p.bucket->getParameters()) {
      const void* key = t.unsafeGetTensorImpl();
      if (index_of_.count(key)) continue;
      index_of_[key] = params.size();
      params.emplace_back("param." + std::to_string(params.size()), t);
    }
  engine_ = std::make_unique<ReductionEngine>(std::move(params), std::move(compressor_), comm_, options_,
                                              "scheduler ddp\n");
  plan();
}

void DdpHookState::plan() {
  const auto& params = engine_->params();
  const auto plan = plan_buckets(params, options_.bucket_cap_mb());
  int64_t ordinal = 0;
  for (size_t b = 0; b < plan.size(); ++b) buckets_.push_back(engine_->build_bucket(plan[b], b, &ordinal));
  arrived_.assign(buckets_.size(), 0);
  seen_.assign(params.size(), 0);
}

ReducerStats DdpHookState::stats() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return engine_ ? engine_->stats() : ReducerStats{};
}

bool DdpHookState::last_step_skipped() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return last_skipped_;
}

std::vector<std::pair<std::string, at::Tensor>> DdpHookState::state_dict() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  TORCH_CHECK(engine_, "state_dict(): this DDP hook state binds its parameters at the end of its first step (it was "
              "made without the model); there is no state before that");
  auto out = engine_->state_dict();
  for (auto& kv : out) kv.second = kv.second.clone();  // compressor state is live in the engine
  return out;
}

void DdpHookState::load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::lock_guard<std::mutex> lk(state_mu_);
  TORCH_CHECK(engine_, "load_state_dict(): this DDP hook state was made without the model, so it knows its "
              "parameters only after its first step; to resume, make it with the model (HookState(..., module=model) "
              "or register_ddp_hook)");
  engine_->load_state_dict(state);
}

std::vector<std::vector<std::string>> DdpHookState::bucket_names() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  std::vector<std::vector<std::string>> out;
  if (!engine_) return out;
  for (const auto& b : buckets_) {
    out.emplace_back();
    for (size_t i : b.members) out.back().push_back(engine_->params()[i].name);
  }
  return out;
}

std::string DdpHookState::describe() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  if (!engine_) return compressor_->describe() + " (parameters bound at the first step)";
  size_t groups = 0;
  for (const auto& b : buckets_) groups += b.groups.size();
  return engine_->describe(groups, buckets_.size());
}

std::vector<RankedMatrix> DdpHookState::ranks() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return engine_ ? engine_->ranks() : std::vector<RankedMatrix>{};
}

double DdpHookState::mean_rank() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return engine_ ? engine_->mean_rank() : 0.0;
}

}  // namespace ddp
}  // namespace lowrank
