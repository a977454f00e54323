#pragma once
// Communicator: the small interface every layer above comm/ talks to.
//
// A Communicator is one rank of a fixed group. Collectives act in place on contiguous CPU (or
// same-device) tensors and are issued from one thread at a time, in one program order (a
// reducer's communication thread while backward() runs, the caller's thread otherwise), so every
// rank issues them in the same order as long as the calling code is rank-symmetric (all of lowrank is).
//
// Accounting: every collective adds the bytes this rank hands to it to stats().bytes_sent
// (all-reduce and broadcast: the tensor's bytes; all-gather: this rank's own contribution),
// which is the quantity docs/algorithms.md §8 calls S_t. Time spent waiting on collectives is
// accumulated in stats().seconds.
#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lowrank {
namespace comm {

/// Handle of an asynchronous collective. wait() blocks until the result is in the tensor.
class Handle {
 public:
  virtual ~Handle() = default;
  virtual void wait() = 0;
};
using HandlePtr = std::shared_ptr<Handle>;

enum class ReduceOp { kSum, kMin, kMax };

struct CommStats {
  int64_t bytes_sent = 0;   ///< bytes this rank handed to collectives
  int64_t collectives = 0;  ///< number of collectives issued
  int64_t all_gathers = 0;       ///< of which all-gathers (the bandwidth model prices them apart)
  int64_t all_gather_bytes = 0;  ///< of bytes_sent, this rank's contributions to all-gathers
  double seconds = 0.0;     ///< wall time spent waiting for collectives
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Name of the backend ("gloo", "local", "in-process", ...).
  virtual std::string backend() const = 0;

  /// In-place all-reduce. `t` must be contiguous.
  HandlePtr all_reduce_async(at::Tensor t, ReduceOp op = ReduceOp::kSum);
  void all_reduce_(at::Tensor t, ReduceOp op = ReduceOp::kSum);
  /// Mean over ranks, computed as t/W then SUM (pre-division, docs/algorithms.md §1.6).
  void all_reduce_mean_(at::Tensor t);
  /// Returns W tensors: rank j's `t` at index j. Every rank must pass the same shape.
  std::vector<at::Tensor> all_gather(const at::Tensor& t);
  /// In-place broadcast of `t` from `root`.
  void broadcast_(at::Tensor t, int root);
  /// Blocks until every rank reached the barrier.
  void barrier();
  /// Every rank's `value`, in rank order (one 8-byte all-gather). Control traffic, like barrier():
  /// not counted in stats().
  std::vector<int64_t> all_gather_flags(int64_t value);

  const CommStats& stats() const { return stats_; }

 protected:
  virtual HandlePtr do_all_reduce(at::Tensor t, ReduceOp op) = 0;
  virtual std::vector<at::Tensor> do_all_gather(const at::Tensor& t) = 0;
  virtual void do_broadcast(at::Tensor t, int root) = 0;

 private:
  friend class TimedHandle;
  CommStats stats_;
};

/// Options of a process-group communicator.
struct CommOptions {
  /// Every collective and the rendezvous fail after this long instead of hanging. Default 300 s.
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  /// Address of this host that peers connect to for the gloo transport; empty = derive from
  /// MASTER_ADDR (loopback when the master is loopback) or the hostname. Default "".
  std::string hostname;
  /// Receives progress lines while the rendezvous waits ("waiting for 3 more ranks at
  /// host:port (timeout 300 s)"); nullptr = silent. Default nullptr.
  std::function<void(const std::string&)> on_wait;
};

/// World size 1: every collective is the identity; no network is touched.
std::unique_ptr<Communicator> make_local_communicator();

/// W communicators for W threads of one process, exchanging through shared memory. Results are
/// summed in rank order, so they are bit-identical on all ranks and deterministic.
std::vector<std::shared_ptr<Communicator>> make_in_process_group(int world_size);

/// W gloo ranks in this process over loopback TCP, rendezvous through an in-memory store (for
/// tests and single-process simulations; each must then be driven from its own thread).
std::vector<std::shared_ptr<Communicator>> make_loopback_gloo_group(int world_size, const CommOptions& options = {});

/// Rank `rank` of `world_size` over gloo with a TCPStore rendezvous at master_addr:master_port
/// (rank 0 hosts the store). world_size 1 returns a local communicator. Before the gloo group is
/// built the ranks check through the store that they form one group: a master_addr that does not
/// resolve, a port held by another service, ranks started with different world sizes and two
/// processes started as the same rank fail at once (not after options.timeout) on every rank
/// concerned, naming the mistake.
std::unique_ptr<Communicator> make_tcp_communicator(int rank, int world_size,
                                                    const std::string& master_addr, int master_port,
                                                    const CommOptions& options = {});

}  // namespace comm
}  // namespace lowrank
