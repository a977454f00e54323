// The only translation unit that talks to c10d: wraps a c10d::ProcessGroup (gloo over TCP by
// default, rendezvous through a TCPStore hosted by rank 0).
#include "lowrank/comm/process_group_communicator.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <thread>

namespace lowrank {
namespace comm {
namespace {

class WorkHandle : public Handle {
 public:
  explicit WorkHandle(c10::intrusive_ptr<c10d::Work> w) : work_(std::move(w)) {}
  void wait() override { work_->wait(); }

 private:
  c10::intrusive_ptr<c10d::Work> work_;
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
  explicit ProcessGroupCommunicator(c10::intrusive_ptr<c10d::ProcessGroup> pg) : pg_(std::move(pg)) {}
  int rank() const override { return pg_->getRank(); }
  int size() const override { return pg_->getSize(); }
  std::string backend() const override { return pg_->getBackendName(); }

 protected:
  HandlePtr do_all_reduce(at::Tensor t, ReduceOp op) override {
    std::vector<at::Tensor> ts{std::move(t)};
    c10d::AllreduceOptions o;
    o.reduceOp = to_c10d(op);
    return std::make_shared<WorkHandle>(pg_->allreduce(ts, o));
  }
  std::vector<at::Tensor> do_all_gather(const at::Tensor& t) override {
    std::vector<at::Tensor> in{t};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < size(); ++r) out[0].push_back(at::empty_like(t));
    pg_->allgather(out, in)->wait();
    return out[0];
  }
  void do_broadcast(at::Tensor t, int root) override {
    std::vector<at::Tensor> ts{std::move(t)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    pg_->broadcast(ts, o)->wait();
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
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

  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(master_port);
  so.isServer = rank == 0;
  so.numWorkers = world_size;
  so.waitWorkers = true;
  so.timeout = options.timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, so);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rank ", rank, ": rendezvous at ", master_addr, ":", master_port,
                " failed: ", e.what(),
                rank == 0 ? " (hint: is the port already in use?)" : " (hint: is rank 0 up and reachable?)");
  }
  store = c10::make_intrusive<c10d::PrefixStore>("lowrank", store);

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
                " ranks failed: ", e.what());
  }
  return wrap_process_group(pg);
}

std::vector<std::shared_ptr<Communicator>> make_loopback_gloo_group(int world_size, const CommOptions& options) {
  TORCH_CHECK(world_size >= 1, "world_size must be >= 1, got ", world_size);
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::shared_ptr<Communicator>> out(world_size);
  std::vector<std::string> errors(world_size);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto go = c10d::ProcessGroupGloo::Options::create(options.timeout);
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        out[r] = wrap_process_group(c10::make_intrusive<c10d::ProcessGroupGloo>(store, r, world_size, go));
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world_size; ++r)
    TORCH_CHECK(errors[r].empty(), "loopback gloo group: rank ", r, " failed: ", errors[r]);
  return out;
}

}  // namespace comm
}  // namespace lowrank
