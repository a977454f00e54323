// With tcp_rendezvous.cpp, the only code that talks to c10d: wraps a c10d::ProcessGroup (gloo over
// TCP by default, after the rendezvous of tcp_rendezvous.cpp through a TCPStore hosted by rank 0).
#include "lowrank/comm/process_group_communicator.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <sstream>
#include <thread>

#include "lowrank/util/threads.h"
#include "tcp_rendezvous.h"

namespace lowrank {
namespace comm {
namespace {

using detail::message_of;

// After a collective failed (typically gloo's timeout): which peers stopped answering? Every rank
// whose collective fails announces it in the rendezvous store and waits briefly for the others;
// the ranks that never announce are the ones that hung or died. Without a store, or when the
// store itself is gone (rank 0 hosts it), the message says so.
class FailureReport {
 public:
  FailureReport(c10::intrusive_ptr<c10d::Store> store, int rank, int world, std::chrono::milliseconds timeout)
      : store_(std::move(store)), rank_(rank), world_(world), timeout_(timeout) {}

  [[noreturn]] void fail(const std::string& op, int64_t id, const std::exception& e) {
    std::ostringstream msg;
    const double t = std::chrono::duration<double>(timeout_).count();
    msg << "rank " << rank_ << ": " << op << " #" << id << " failed (collective timeout " << t
        << " s): " << message_of(e);
    if (store_ && world_ > 1) {
      try {
        const std::string prefix = "lowrank/failed/" + std::to_string(id) + "/";
        store_->setTimeout(kProbe);
        store_->set(prefix + std::to_string(rank_), std::vector<uint8_t>{1});
        std::vector<int> silent;
        const auto t0 = std::chrono::steady_clock::now();
        for (;;) {
          silent.clear();
          for (int r = 0; r < world_; ++r)
            if (r != rank_ && !store_->check({prefix + std::to_string(r)})) silent.push_back(r);
          if (silent.empty() || std::chrono::steady_clock::now() - t0 > wait_for_peers()) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (silent.empty()) {
          msg << "\n  every other rank failed in the same collective (a peer died, or the network failed)";
        } else {
          msg << "\n  rank" << (silent.size() > 1 ? "s " : " ");
          for (size_t i = 0; i < silent.size(); ++i) msg << (i ? ", " : "") << silent[i];
          msg << (silent.size() > 1 ? " have" : " has") << " stopped answering (hung, died, or far behind): "
              << (silent.size() > 1 ? "they" : "it") << " did not report this failure within "
              << std::chrono::duration<double>(wait_for_peers()).count() << " s more";
        }
      } catch (const std::exception& store_error) {
        msg << "\n  the rendezvous store hosted by rank 0 does not answer either (" << message_of(store_error)
            << "): rank 0 has probably stopped or died";
      }
    }
    TORCH_CHECK(false, msg.str());
  }
  /// The id of the next collective: the same on every rank, as collectives are issued in one order.
  int64_t next() { return ++count_; }

 private:
  // A peer that entered the collective later times out later: wait a quarter of the timeout for
  // its report, within [3 s, 15 s].
  std::chrono::milliseconds wait_for_peers() const {
    return std::min(std::chrono::milliseconds(15000), std::max(std::chrono::milliseconds(3000), timeout_ / 4));
  }
  static constexpr std::chrono::milliseconds kProbe{3000};
  c10::intrusive_ptr<c10d::Store> store_;
  int rank_, world_;
  std::chrono::milliseconds timeout_;
  std::atomic<int64_t> count_{0};
};
constexpr std::chrono::milliseconds FailureReport::kProbe;

class WorkHandle : public Handle {
 public:
  WorkHandle(c10::intrusive_ptr<c10d::Work> w, std::shared_ptr<FailureReport> report, std::string op, int64_t id)
      : work_(std::move(w)), report_(std::move(report)), op_(std::move(op)), id_(id) {}
  void wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      if (!report_) throw;
      report_->fail(op_, id_, e);
    }
  }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
  std::shared_ptr<FailureReport> report_;
  std::string op_;
  int64_t id_;
};

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return c10d::ReduceOp::SUM;
    case ReduceOp::kMin: return c10d::ReduceOp::MIN;
    case ReduceOp::kMax: return c10d::ReduceOp::MAX;
  }
  TORCH_INTERNAL_ASSERT(false, "unknown ReduceOp");
}

class ProcessGroupCommunicator : public Communicator {
 public:
  explicit ProcessGroupCommunicator(c10::intrusive_ptr<c10d::ProcessGroup> pg,
                                    std::shared_ptr<FailureReport> report = nullptr)
      : pg_(std::move(pg)), report_(std::move(report)) {}
  int rank() const override { return pg_->getRank(); }
  int size() const override { return pg_->getSize(); }
  std::string backend() const override { return pg_->getBackendName(); }

 protected:
  HandlePtr do_all_reduce(at::Tensor t, ReduceOp op) override {
    std::vector<at::Tensor> ts{std::move(t)};
    c10d::AllreduceOptions o;
    o.reduceOp = to_c10d(op);
    const int64_t id = report_ ? report_->next() : 0;
    return std::make_shared<WorkHandle>(pg_->allreduce(ts, o), report_, "all_reduce", id);
  }
  std::vector<at::Tensor> do_all_gather(const at::Tensor& t) override {
    std::vector<at::Tensor> in{t};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < size(); ++r) out[0].push_back(at::empty_like(t));
    const int64_t id = report_ ? report_->next() : 0;
    WorkHandle(pg_->allgather(out, in), report_, "all_gather", id).wait();
    return out[0];
  }
  void do_broadcast(at::Tensor t, int root) override {
    std::vector<at::Tensor> ts{std::move(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    const int64_t id = report_ ? report_->next() : 0;
    WorkHandle(pg_->broadcast(ts, o), report_, "broadcast", id).wait();
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  std::shared_ptr<FailureReport> report_;
};

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

std::unique_ptr<Communicator> wrap_process_group(c10::intrusive_ptr<c10d::ProcessGroup> group) {
  TORCH_CHECK(group, "wrap_process_group: the process group is null");
  return std::make_unique<ProcessGroupCommunicator>(std::move(group));
}

std::unique_ptr<Communicator> make_tcp_communicator(int rank, int world_size,
                                                    const std::string& master_addr, int master_port,
                                                    const CommOptions& options) {
  TORCH_CHECK(world_size >= 1, "world_size must be >= 1, got ", world_size);
  TORCH_CHECK(rank >= 0 && rank < world_size, "rank ", rank, " is outside [0, ", world_size, ")");
  TORCH_CHECK(master_port > 0 && master_port < 65536, "master port ", master_port,
              " is outside [1, 65535]");
  TORCH_CHECK(options.timeout.count() > 0, "timeout must be positive, got ", options.timeout.count(), " ms");
  if (world_size == 1) return make_local_communicator();

  // Rendezvous (tcp_rendezvous.cpp walks through it): the store, once the ranks verified their group.
  const c10::intrusive_ptr<c10d::Store> raw_store =
      detail::rendezvous_store(rank, world_size, master_addr, master_port, options);
  const c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>("lowrank", raw_store);

  auto go = c10d::ProcessGroupGloo::Options::create(options.timeout);
  std::string host = options.hostname;
  if (host.empty() && is_loopback(master_addr)) host = "127.0.0.1";
  go->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                     : c10d::ProcessGroupGloo::createDeviceForHostname(host));
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  try {
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, go);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rank ", rank, ": creating the gloo group of ", world_size,
                " ranks failed: ", message_of(e));
  }
  return std::make_unique<ProcessGroupCommunicator>(
      pg, std::make_shared<FailureReport>(raw_store, rank, world_size, options.timeout));
}

std::vector<std::shared_ptr<Communicator>> make_loopback_gloo_group(int world_size, const CommOptions& options) {
  TORCH_CHECK(world_size >= 1, "world_size must be >= 1, got ", world_size);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::shared_ptr<Communicator>> out(world_size);
  run_threads(world_size, [&](int r) {
    try {
      auto go = c10d::ProcessGroupGloo::Options::create(options.timeout);
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      out[r] = wrap_process_group(c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, world_size, go));
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "loopback gloo group: rank ", r, " failed: ", e.what());
    }
  });
  return out;
}

}  // namespace comm
}  // namespace lowrank
