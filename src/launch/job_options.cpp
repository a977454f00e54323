#include "lowrank/launch/job_options.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace lowrank {
namespace launch {

void JobOptions::validate() const {
  TORCH_CHECK(!nproc().has_value() || *nproc() >= 1, "nproc must be >= 1, got ", nproc().value_or(0));
  TORCH_CHECK(master_port() >= 0 && master_port() < 65536, "master_port must lie in [1, 65535] (0 = automatic), got ",
              master_port());
  // (1e6 s is 11.6 days: far beyond any sane collective, and far from overflowing milliseconds.)
  TORCH_CHECK(std::isfinite(timeout_seconds()) && timeout_seconds() >= 0.001 && timeout_seconds() <= 1e6,
              "timeout must be a number of seconds in [0.001, 1e6], got ", timeout_seconds());
  TORCH_CHECK(!nproc().has_value() || *nproc() <= 1024, "nproc must be <= 1024, got ", nproc().value_or(0));
  TORCH_CHECK(threads() >= 0 && threads() <= 1024, "threads must lie in [0, 1024] (0 = automatic), got ", threads());
}

}  // namespace launch
}  // namespace lowrank
