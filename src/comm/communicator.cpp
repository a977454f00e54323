#include "lowrank/comm/communicator.h"

#include <c10/util/Exception.h>

#include <condition_variable>
#include <mutex>

namespace lowrank {
namespace comm {

// Adds the time spent in wait() to the owning communicator's stats.
class TimedHandle : public Handle {
 public:
  TimedHandle(HandlePtr inner, Communicator* owner) : inner_(std::move(inner)), owner_(owner) {}
  void wait() override {
    if (done_) return;
    auto t0 = std::chrono::steady_clock::now();
    inner_->wait();
    owner_->stats_.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    done_ = true;
  }

 private:
  HandlePtr inner_;
  Communicator* owner_;
  bool done_ = false;
};

namespace {
int64_t bytes_of(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

class DoneHandle : public Handle {
 public:
  void wait() override {}
};
}  // namespace

HandlePtr Communicator::all_reduce_async(at::Tensor t, ReduceOp op) {
  TORCH_CHECK(t.is_contiguous(), "all_reduce needs a contiguous tensor, got strides ", t.strides());
  stats_.bytes_sent += bytes_of(t);
  stats_.collectives += 1;
  auto t0 = std::chrono::steady_clock::now();
  auto inner = do_all_reduce(std::move(t), op);
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return std::make_shared<TimedHandle>(std::move(inner), this);
}

void Communicator::all_reduce_(at::Tensor t, ReduceOp op) { all_reduce_async(std::move(t), op)->wait(); }

void Communicator::all_reduce_mean_(at::Tensor t) {
  if (size() > 1) t.div_(size());
  all_reduce_(std::move(t), ReduceOp::kSum);
}

std::vector<at::Tensor> Communicator::all_gather(const at::Tensor& t) {
  stats_.bytes_sent += bytes_of(t);
  stats_.collectives += 1;
  stats_.all_gathers += 1;
  stats_.all_gather_bytes += bytes_of(t);
  auto t0 = std::chrono::steady_clock::now();
  auto out = do_all_gather(t.contiguous());
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

void Communicator::broadcast_(at::Tensor t, int root) {
  TORCH_CHECK(root >= 0 && root < size(), "broadcast root ", root, " is outside [0, ", size(), ")");
  TORCH_CHECK(t.is_contiguous(), "broadcast needs a contiguous tensor");
  stats_.bytes_sent += bytes_of(t);
  stats_.collectives += 1;
  auto t0 = std::chrono::steady_clock::now();
  do_broadcast(std::move(t), root);
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Communicator::barrier() {
  // A one-element all-reduce is a barrier on every backend and keeps the issue order simple.
  auto t = at::zeros({1}, at::kFloat);
  auto saved = stats_;
  all_reduce_(t);
  stats_ = saved;  // bookkeeping, not payload
}

std::vector<int64_t> Communicator::all_gather_flags(int64_t value) {
  auto saved = stats_;
  auto all = all_gather(at::full({1}, value, at::kLong));
  stats_ = saved;  // bookkeeping, not payload
  std::vector<int64_t> out;
  for (const auto& t : all) out.push_back(t.item<int64_t>());
  return out;
}

// ---------------------------------------------------------------------------------------------
// World size 1.
namespace {
class LocalCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }

 protected:
  HandlePtr do_all_reduce(at::Tensor, ReduceOp) override { return std::make_shared<DoneHandle>(); }
  std::vector<at::Tensor> do_all_gather(const at::Tensor& t) override { return {t.clone()}; }
  void do_broadcast(at::Tensor, int) override {}
};

// ---------------------------------------------------------------------------------------------
// Threads of one process. Each collective is two phases around a shared slot table:
// every rank deposits its tensor, the last arrival computes the result in rank order, and
// everyone copies it out; a generation counter separates consecutive collectives.
struct SharedState {
  explicit SharedState(int w) : world(w), slots(w) {}
  int world;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int departed = 0;
  int64_t generation = 0;
  std::vector<at::Tensor> slots;
  std::vector<at::Tensor> result;
};

class InProcessCommunicator : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<SharedState> s, int rank) : s_(std::move(s)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return s_->world; }
  std::string backend() const override { return "in-process"; }

 protected:
  HandlePtr do_all_reduce(at::Tensor t, ReduceOp op) override {
    auto res = exchange(t, [op](std::vector<at::Tensor>& in) {
      at::Tensor acc = in[0].clone();
      for (size_t j = 1; j < in.size(); ++j) {
        if (op == ReduceOp::kSum) acc.add_(in[j]);
        else if (op == ReduceOp::kMax) acc = at::maximum(acc, in[j]);
        else acc = at::minimum(acc, in[j]);
      }
      return std::vector<at::Tensor>{acc};
    });
    t.copy_(res[0]);
    return std::make_shared<DoneHandle>();
  }
  std::vector<at::Tensor> do_all_gather(const at::Tensor& t) override {
    auto res = exchange(t, [](std::vector<at::Tensor>& in) { return in; });
    std::vector<at::Tensor> out;
    for (auto& r : res) out.push_back(r.clone());
    return out;
  }
  void do_broadcast(at::Tensor t, int root) override {
    auto res = exchange(t, [root](std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{in[root]}; });
    if (rank_ != root) t.copy_(res[0]);
  }

 private:
  template <typename F>
  std::vector<at::Tensor> exchange(const at::Tensor& t, F combine) {
    std::unique_lock<std::mutex> lock(s_->mu);
    // Wait until the previous collective has been fully consumed.
    s_->cv.wait(lock, [&] { return s_->departed == 0 || s_->arrived == 0; });
    const int64_t gen = s_->generation;
    s_->slots[rank_] = t.clone();
    if (++s_->arrived == s_->world) {
      s_->result = combine(s_->slots);
      ++s_->generation;
      s_->cv.notify_all();
    } else {
      s_->cv.wait(lock, [&] { return s_->generation != gen; });
    }
    std::vector<at::Tensor> out = s_->result;
    if (++s_->departed == s_->world) {
      s_->arrived = 0;
      s_->departed = 0;
      for (auto& x : s_->slots) x = at::Tensor();
      s_->cv.notify_all();
    }
    return out;
  }

  std::shared_ptr<SharedState> s_;
  int rank_;
};
}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

std::vector<std::shared_ptr<Communicator>> make_in_process_group(int world_size) {
  TORCH_CHECK(world_size >= 1, "world_size must be >= 1, got ", world_size);
  auto s = std::make_shared<SharedState>(world_size);
  std::vector<std::shared_ptr<Communicator>> out;
  for (int r = 0; r < world_size; ++r) out.push_back(std::make_shared<InProcessCommunicator>(s, r));
  return out;
}

}  // namespace comm
}  // namespace lowrank
