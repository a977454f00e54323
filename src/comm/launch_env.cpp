#include "lowrank/comm/launch_env.h"

#include <c10/util/Exception.h>

#include <cstdlib>

namespace lowrank {
namespace comm {
namespace {

using Getenv = std::function<const char*(const char*)>;

Getenv resolve(const Getenv& g) {
  if (g) return g;
  return [](const char* k) { return std::getenv(k); };
}

std::optional<int> get_int(const Getenv& g, const char* name) {
  const char* v = g(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  TORCH_CHECK(end && *end == '\0' && x >= 0 && x < (1L << 30), "environment variable ", name, "='", v,
              "' is not a non-negative integer");
  return static_cast<int>(x);
}

}  // namespace

bool launched_externally(const Getenv& getenv_fn) {
  auto g = resolve(getenv_fn);
  for (const char* k : {"RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"}) {
    const char* v = g(k);
    if (v && *v) return true;
  }
  return false;
}

LaunchEnv detect_launch_env(const Getenv& getenv_fn) {
  auto g = resolve(getenv_fn);
  LaunchEnv env;
  // Precedence: explicit torchrun-style variables, then mpirun, then srun.
  if (auto r = get_int(g, "RANK")) {
    env.source = "torchrun";
    env.rank = *r;
    auto w = get_int(g, "WORLD_SIZE");
    TORCH_CHECK(w.has_value(), "RANK is set (", *r, ") but WORLD_SIZE is not");
    env.world_size = *w;
    env.local_rank = get_int(g, "LOCAL_RANK").value_or(0);
  } else if (auto r2 = get_int(g, "OMPI_COMM_WORLD_RANK")) {
    env.source = "mpirun";
    env.rank = *r2;
    auto w = get_int(g, "OMPI_COMM_WORLD_SIZE");
    TORCH_CHECK(w.has_value(), "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not");
    env.world_size = *w;
    env.local_rank = get_int(g, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
  } else if (auto r3 = get_int(g, "SLURM_PROCID")) {
    env.source = "srun";
    env.rank = *r3;
    auto w = get_int(g, "SLURM_NTASKS");
    TORCH_CHECK(w.has_value(), "SLURM_PROCID is set but SLURM_NTASKS is not");
    env.world_size = *w;
    env.local_rank = get_int(g, "SLURM_LOCALID").value_or(0);
  } else if (auto w = get_int(g, "WORLD_SIZE")) {
    TORCH_CHECK(*w == 1, "WORLD_SIZE=", *w, " is set but RANK is not");
  }
  TORCH_CHECK(env.world_size >= 1, "world size must be >= 1, got ", env.world_size, " (from ", env.source, ")");
  TORCH_CHECK(env.rank < env.world_size, "rank ", env.rank, " is not below world size ", env.world_size,
              " (from ", env.source, ")");
  if (const char* a = g("MASTER_ADDR"); a && *a) env.master_addr = a;
  if (auto p = get_int(g, "MASTER_PORT")) {
    TORCH_CHECK(*p > 0 && *p < 65536, "MASTER_PORT=", *p, " is outside [1, 65535]");
    env.master_port = *p;
  }
  return env;
}

std::unique_ptr<Communicator> make_communicator_from_env(const CommOptions& options) {
  auto env = detect_launch_env();
  return make_tcp_communicator(env.rank, env.world_size, env.master_addr, env.master_port, options);
}

}  // namespace comm
}  // namespace lowrank
