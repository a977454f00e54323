#pragma once
// Set-up agreement: every rank hands in a text fingerprint of what must be equal on all ranks (one
// item per line); if any differs, every rank throws a message that names the first differing line
// of each other rank next to its own. Collective; costs one 16-byte all-gather when ranks agree.
#include <string>

#include "lowrank/comm/communicator.h"

namespace lowrank {

/// Throws "rank r: ranks disagree on <what>." plus the differing lines. No-op at world size 1.
void check_agreement(comm::Communicator& comm, const std::string& fingerprint, const std::string& what);

}  // namespace lowrank
