#include "lowrank/launch/launch_options.h"

#include <c10/util/Exception.h>

#include <cmath>

namespace lowrank {
namespace launch {

void LaunchOptions::validate() const {
  TORCH_CHECK(nproc() >= 1, "nproc must be >= 1, got ", nproc());
  TORCH_CHECK(!executable().empty(), "executable must not be empty");
  TORCH_CHECK(!master_addr().empty(), "master_addr must not be empty");
  TORCH_CHECK(master_port() >= 0 && master_port() < 65536, "master_port must lie in [0, 65535] (0 = pick a free one), got ",
              master_port());
  TORCH_CHECK(std::isfinite(grace_seconds()) && grace_seconds() >= 0, "grace_seconds must be >= 0, got ",
              grace_seconds());
}

}  // namespace launch
}  // namespace lowrank
