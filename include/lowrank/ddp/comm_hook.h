#pragma once
// lowrank as a PyTorch DDP communication hook: the ReductionEngine (reducer/reduction_engine.h)
// runs on DDP's own gradient buckets, so DistributedDataParallel's gradients become lowrank's ĝ.
//
//   auto state = std::make_shared<ddp::DdpHookState>(named_params, make_compressor("powersgd", cfg),
//                                                     comm::wrap_process_group(pg), ReducerOptions());
//   reducer.register_comm_hook(std::make_unique<ddp::CommHook>(state));   // c10d::Reducer
//
// How a step runs. DDP calls the hook on its autograd thread for each of its buckets, in bucket
// order (the same on every rank), as backward() fills it. The hook hands the bucket to the state's
// communication thread and returns at once. That thread copies the bucket's gradients into the
// engine's own buckets, planned as GradientReducer plans them (reverse parameter order, capped at
// bucket_cap_mb; same-shape matrices stacked), and reduces each of those as soon as all its
// members have arrived, in order, while backward() goes on. So ĝ does not depend on how DDP cuts
// its buckets (one bucket in DDP's first step, others after its rebuild): it equals what a
// GradientReducer with the same bucket_cap_mb gives. When DDP's last bucket is in, the thread
// finishes the step, copies ĝ back into DDP's buffers and completes every future of the step; DDP
// waits for them at the end of backward(). DDP no longer divides by the world size once a hook is
// registered; the engine averages.
//
// The step ends with DDP's last bucket. With skip_nonfinite (default on) every bucket is guarded
// and the ranks agree there. On a skipped step every DDP bucket holds NaN on every rank (as DDP's
// own all-reduce leaves a NaN on all ranks), no state changed, and stats().skipped_steps /
// last_step_skipped() say so: skip the optimizer step. A parameter DDP never hands over counts as
// a zero gradient.
//
// Parameters. Given at construction (names and tensors, in the module's order) the engine is built
// at once, collectively (the ranks compare settings and parameters). Without them (a hook state
// made before DDP exists) it is built at the end of the first step from the parameters of that
// step's buckets, named "param.<k>" in the order DDP handed them over.
#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"
#include "lowrank/compressors/compressor.h"
#include "lowrank/reducer/bucket.h"
#include "lowrank/reducer/reducer_options.h"
#include "lowrank/reducer/reduction_engine.h"

namespace lowrank {
namespace ddp {

class DdpHookState {
 public:
  using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;
  /// `params` may be empty: then the engine is built at the end of the first step (above).
  DdpHookState(NamedParams params, std::unique_ptr<Compressor> compressor, std::shared_ptr<comm::Communicator> comm,
               ReducerOptions options);
  ~DdpHookState();
  DdpHookState(const DdpHookState&) = delete;
  DdpHookState& operator=(const DdpHookState&) = delete;

  /// DDP's hook: queues `bucket` and returns a future that completes with its buffer holding ĝ.
  c10::intrusive_ptr<c10::ivalue::Future> run(c10d::GradBucket& bucket);

  /// The engine, once built (nullptr before the first step when no parameters were given).
  const ReductionEngine* engine() const { return engine_.get(); }
  ReducerStats stats() const;
  bool last_step_skipped() const;
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;
  /// Throws as GradientReducer::load_state_dict, and before the engine exists (no parameters given,
  /// no step run yet). The accessors wait while the worker handles a bucket; call them between
  /// steps (during a step they see the state part-way).
  void load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state);
  int world_size() const { return comm_->size(); }
  /// The engine's buckets' parameter names, in launch order.
  std::vector<std::vector<std::string>> bucket_names() const;
  std::string describe() const;
  /// Each compressed matrix's rank now and, for rank=auto, its history (ReductionEngine::ranks());
  /// empty before the engine exists.
  std::vector<RankedMatrix> ranks() const;
  /// The mean rank over the compressed matrices now (0 before the engine exists or without a rank).
  double mean_rank() const;

 private:
  struct Pending {
    std::shared_ptr<c10d::GradBucket> bucket;
    c10::intrusive_ptr<c10::ivalue::Future> future;
  };
  void worker_loop();
  void build_engine(const std::vector<Pending>& step);
  void take(const Pending& p);        // copies DDP's gradients in; reduces the buckets now complete
  void finish(std::vector<Pending>& step);
  void plan();                        // the engine's buckets

  NamedParams given_;
  std::unique_ptr<Compressor> compressor_;
  std::shared_ptr<comm::Communicator> comm_;
  ReducerOptions options_;
  std::unique_ptr<ReductionEngine> engine_;
  std::map<const void*, size_t> index_of_;  // TensorImpl* -> params() index
  std::vector<Bucket> buckets_;             // the engine's, in launch order
  std::vector<int64_t> arrived_;            // per bucket: members handed over this step
  std::vector<uint8_t> seen_;               // per parameter: handed over this step
  size_t next_ = 0;                         // the next bucket to reduce
  bool open_ = false;                       // a step is in progress
  bool last_skipped_ = false;

  mutable std::mutex state_mu_;  // the engine and the members above: held by the worker per bucket
  mutable std::mutex mu_;        // the queue, error_ and stop_
  std::condition_variable cv_;
  std::deque<Pending> queue_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread worker_;
};

/// The c10d::CommHookInterface that DDP's reducer calls; all state lives in DdpHookState.
class CommHook : public c10d::CommHookInterface {
 public:
  explicit CommHook(std::shared_ptr<DdpHookState> state) : state_(std::move(state)) {}
  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override { return state_->run(bucket); }
  at::Tensor parseHookResult(const c10::IValue& result) override { return result.toTensor(); }

 private:
  std::shared_ptr<DdpHookState> state_;
};

}  // namespace ddp
}  // namespace lowrank
