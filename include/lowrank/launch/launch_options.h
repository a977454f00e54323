#pragma once
// LaunchOptions: how launch_local (launcher.h) starts its workers.
//
// Example:
//   launch::LaunchOptions o;
//   o.nproc(4).master_port(29500).grace_seconds(10);
//   launch::launch_local(o);
#include <torch/arg.h>

#include <string>
#include <utility>
#include <vector>

namespace lowrank {
namespace launch {

/// Extra environment variables: (name, value) pairs.
using EnvList = std::vector<std::pair<std::string, std::string>>;

struct LaunchOptions {
  /// Worker processes (ranks 0..nproc-1). Default 2.
  TORCH_ARG(int, nproc) = 2;
  /// Program each worker runs. Default "/proc/self/exe" (this binary).
  TORCH_ARG(std::string, executable) = "/proc/self/exe";
  /// The workers' argv, argv[0] included; empty = this process's own. Default empty.
  TORCH_ARG(std::vector<std::string>, argv) = {};
  /// Rendezvous address handed to the workers. Default "127.0.0.1".
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// Rendezvous port; 0 = a free port the launcher picks. A given port must be free. Default 0.
  TORCH_ARG(int, master_port) = 0;
  /// Seconds between SIGTERM and SIGKILL when stopping workers; also how long a rank that another
  /// rank's report says failed may take to report its own error before it is stopped. Default 5.
  TORCH_ARG(double, grace_seconds) = 5.0;
  /// Send the stdout of ranks > 0 to /dev/null. Default true.
  TORCH_ARG(bool, quiet_workers) = true;
  /// Extra environment variables for every worker. Default empty.
  TORCH_ARG(EnvList, env) = {};

 public:
  /// Throws c10::Error naming the field and its value when one is out of range.
  void validate() const;
};

}  // namespace launch
}  // namespace lowrank
