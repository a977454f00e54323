#include "lowrank/launch/memory.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "lowrank/models/llama.h"

namespace lowrank {
namespace launch {

int64_t parse_mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream ls(line.substr(13));
    int64_t kb = -1;
    std::string unit;
    if (!(ls >> kb) || kb < 0) return -1;
    ls >> unit;
    return unit == "kB" || unit.empty() ? kb * 1024 : -1;
  }
  return -1;
}

int64_t available_memory_bytes() {
  auto read_all = [](const std::string& path) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return f ? ss.str() : std::string();
  };
  auto read_number = [&](const std::string& path) -> int64_t {
    const std::string s = read_all(path);
    if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return -1;  // "max", or no such file
    return std::strtoll(s.c_str(), nullptr, 10);
  };
  int64_t avail = parse_mem_available(read_all("/proc/meminfo"));
  // The room left under a cgroup limit (v2, else v1): a container may have far less than the host.
  // (A cgroup nested below the root one is not followed: /sys/fs/cgroup is the container's own
  // in the usual namespace setup.)
  int64_t limit = read_number("/sys/fs/cgroup/memory.max");
  int64_t used = read_number("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    limit = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  // v1 reports "no limit" as a huge number (about 2^63 rounded to the page size).
  // The usage counts the page cache, which the kernel reclaims before it kills anything: the
  // inactive file pages (memory.stat: v2 inactive_file, v1 total_inactive_file) are room too.
  auto stat_field = [&](const std::string& path, const std::string& key) -> int64_t {
    std::istringstream in(read_all(path));
    for (std::string k; in >> k;) {
      long long v = 0;
      if (!(in >> v)) break;
      if (k == key) return v;
    }
    return 0;
  };
  int64_t reclaimable = stat_field("/sys/fs/cgroup/memory.stat", "inactive_file");
  if (reclaimable == 0) reclaimable = stat_field("/sys/fs/cgroup/memory/memory.stat", "total_inactive_file");
  if (limit > 0 && limit < (int64_t(1) << 60) && used >= 0) {
    const int64_t room = std::max<int64_t>(0, limit - std::max<int64_t>(0, used - reclaimable));
    avail = avail < 0 ? room : std::min(avail, room);
  }
  return avail;
}

void check_activation_memory(const train::TrainOptions& options, int64_t workers_here) {
  if (!options.language_model()) return;
  const auto lo = models::llama_options(options.input_spec(), options.model_size());
  const int64_t need = models::llama_activation_bytes(lo, options.batch_size()) * workers_here;
  const int64_t have = available_memory_bytes();
  if (have < 0) return;  // unknown: nothing to compare with
  TORCH_CHECK(need <= have, "--seq-len ", lo.seq_len(), " at --batch-size ", options.batch_size(), " needs about ",
              need >> 20, " MiB of activations for ", workers_here, " worker", workers_here > 1 ? "s" : "",
              " on this machine (attention grows with seq_len squared), but only ", have >> 20,
              " MiB are available: lower --seq-len or --batch-size, or start fewer workers per machine");
  if (need > have / 2)
    std::cout << "warning: the activations need about " << (need >> 20) << " MiB of the " << (have >> 20)
              << " MiB available on this machine" << std::endl;
}

}  // namespace launch
}  // namespace lowrank
