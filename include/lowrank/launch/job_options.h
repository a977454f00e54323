#pragma once
// JobOptions: how `lowrank train` runs as a job (train_job.h): local workers or one worker of an
// external job, rendezvous, timeout, threads, and whether its output directories may be reused.
//
// Example:
//   launch::JobOptions job;
//   job.nproc(4).timeout_seconds(60).overwrite(true);
//   launch::run_train_job(train::TrainOptions(), job);
#include <torch/arg.h>

#include <optional>
#include <string>

namespace lowrank {
namespace launch {

struct JobOptions {
  /// Local worker processes; nullopt = not given (join an external job, else 2). Default nullopt.
  TORCH_ARG(std::optional<int>, nproc) = std::nullopt;
  /// Rendezvous address; "" = MASTER_ADDR, else 127.0.0.1. Default "".
  TORCH_ARG(std::string, master_addr) = "";
  /// Rendezvous port; 0 = MASTER_PORT (external job) or a free port (local launcher). Default 0.
  TORCH_ARG(int, master_port) = 0;
  /// Address of this machine for gloo's transport (CommOptions::hostname); "" = derived. Default "".
  TORCH_ARG(std::string, hostname) = "";
  /// Seconds before a rendezvous or collective fails instead of hanging. Default 300.
  TORCH_ARG(double, timeout_seconds) = 300.0;
  /// Intra-op threads per worker; 0 = max(1, cores / local processes). Default 0.
  TORCH_ARG(int, threads) = 0;
  /// Let a non-empty --out (and a --checkpoint-dir with checkpoints) be reused: lowrank's own files
  /// there are removed first. Default false.
  TORCH_ARG(bool, overwrite) = false;

 public:
  /// Throws c10::Error naming the field and its value when one is out of range.
  void validate() const;
};

}  // namespace launch
}  // namespace lowrank
