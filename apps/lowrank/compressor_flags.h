#pragma once
// Compressor flags shared by `lowrank train` and `lowrank inspect`: both turn --opt KEY=VALUE,
// --no-warm-start and --rank into the same compressor Config.
#include <cstdint>
#include <string>
#include <vector>

#include "lowrank/util/config.h"

namespace lowrank {
namespace cli {

/// Builds the compressor Config from the flags the user actually gave (a compressor rejects keys
/// it does not read, so defaults must not be forwarded). --rank is not among them: it becomes
/// TrainOptions::default_rank, which reaches only compressors that take a rank, so the same command
/// line can be rerun with --compressor none as the dense baseline. `rank_given`: --rank was on the
/// command line (then --opt rank=... is an error).
Config compressor_config_from_flags(const std::vector<std::string>& opts, const std::string& rank, bool rank_given,
                                    bool no_warm_start);

}  // namespace cli
}  // namespace lowrank
