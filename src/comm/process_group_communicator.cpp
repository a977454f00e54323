// The only translation unit that talks to c10d: wraps a c10d::ProcessGroup (gloo over TCP by
// default, rendezvous through a TCPStore hosted by rank 0).
#include "lowrank/comm/process_group_communicator.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <chrono>
#include <optional>
#include <sstream>
#include <thread>

namespace lowrank {
namespace comm {
namespace {

// An exception's message without a C++ backtrace.
std::string message_of(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

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

  // Rendezvous. Rank 0 hosts the store and does not wait for the others inside the store's
  // constructor: every rank announces itself under its own key, and rank 0 polls those keys, so it
  // can say at once whom it is waiting for and, after the timeout, which ranks never came. The
  // other ranks connect (retrying until the timeout) and announce themselves.
  auto say = [&](const std::string& line) {
    if (options.on_wait) options.on_wait(line);
  };
  const double timeout_s = std::chrono::duration<double>(options.timeout).count();
  std::ostringstream where;
  where << master_addr << ":" << master_port << " (timeout " << timeout_s << " s)";
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(master_port);
  so.isServer = rank == 0;
  so.numWorkers = c10::nullopt;
  so.waitWorkers = false;
  so.timeout = options.timeout;
  if (rank != 0) say("rank " + std::to_string(rank) + ": connecting to rank 0 at " + where.str());
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(master_addr, so);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rank ", rank, ": rendezvous at ", master_addr, ":", master_port, " failed: ", message_of(e),
                rank == 0 ? " (hint: is the port already in use?)"
                          : " (hint: rank 0 never answered: is it started, with this MASTER_ADDR/MASTER_PORT, and "
                            "reachable from here?)");
  }
  const std::string joined = "lowrank/joined/";
  try {
    store->set(joined + std::to_string(rank), std::vector<uint8_t>{1});
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rank ", rank, ": announcing itself at ", master_addr, ":", master_port, " failed: ",
                message_of(e));
  }
  if (rank == 0) {
    const auto t0 = std::chrono::steady_clock::now();
    bool announced = false;
    for (;;) {
      std::vector<int> missing;
      for (int r = 1; r < world_size; ++r)
        if (!store->check({joined + std::to_string(r)})) missing.push_back(r);
      if (missing.empty()) break;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::ostringstream list;
      for (size_t i = 0; i < missing.size(); ++i) list << (i ? ", " : "") << missing[i];
      if (!announced && waited >= 1.0) {
        say("rank 0: waiting for " + std::to_string(missing.size()) + " more rank" + (missing.size() > 1 ? "s" : "") +
            " (" + list.str() + ") at " + where.str());
        announced = true;
      }
      TORCH_CHECK(waited < timeout_s, "rank 0: rendezvous at ", master_addr, ":", master_port, " timed out after ",
                  timeout_s, " s: rank", (missing.size() > 1 ? "s " : " "), list.str(), " of ", world_size,
                  " never came (hint: start them with the same MASTER_ADDR/MASTER_PORT and WORLD_SIZE, or raise "
                  "--timeout)");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  const c10::intrusive_ptr<c10d::Store> raw_store = store;
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
                " ranks failed: ", message_of(e));
  }
  return std::make_unique<ProcessGroupCommunicator>(
      pg, std::make_shared<FailureReport>(raw_store, rank, world_size, options.timeout));
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
