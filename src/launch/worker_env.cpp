#include "lowrank/launch/worker_env.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <set>
#include <utility>

extern char** environ;

namespace lowrank {
namespace launch {

bool is_launcher_variable(const std::string& name) {
  static const std::set<std::string> vars = {
      "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
      "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
      "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", kWorkerEnv, kErrorFdEnv};
  return vars.count(name) > 0;
}

std::vector<std::string> own_environment() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) out.emplace_back(*e);
  return out;
}

std::vector<std::vector<std::string>> worker_environments(const LaunchOptions& options, int port,
                                                          const std::vector<std::string>& inherited) {
  std::vector<std::string> base;
  for (const auto& kv : inherited)
    if (!is_launcher_variable(kv.substr(0, kv.find('=')))) base.push_back(kv);
  for (const auto& kv : options.env()) base.push_back(kv.first + "=" + kv.second);
  const std::string n = std::to_string(options.nproc());
  std::vector<std::vector<std::string>> envs(options.nproc(), base);
  for (int r = 0; r < options.nproc(); ++r) {
    const std::string rank = std::to_string(r);
    for (const auto& kv : EnvList{{"RANK", rank},
                                  {"WORLD_SIZE", n},
                                  {"LOCAL_RANK", rank},
                                  {"LOCAL_WORLD_SIZE", n},
                                  {"MASTER_ADDR", options.master_addr()},
                                  {"MASTER_PORT", std::to_string(port)},
                                  {kWorkerEnv, "1"},
                                  {kErrorFdEnv, std::to_string(kErrorFd)}})
      envs[r].push_back(kv.first + "=" + kv.second);
  }
  return envs;
}

bool started_by_launcher() {
  const char* v = std::getenv(kWorkerEnv);
  return v && *v;
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);  // SLURM_NTASKS_PER_NODE may read "2(x3)": the leading number counts
  TORCH_CHECK(end != v && x >= 0, "environment variable ", name, "='", v, "' is not a non-negative integer");
  return static_cast<int>(x);
}

}  // namespace launch
}  // namespace lowrank
