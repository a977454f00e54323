#pragma once
// Set-up agreement: every rank hands in a text fingerprint of what must be equal on all ranks (one
// item per line); if any differs, every rank throws a message that names each differing line of
// each other rank next to its own. Collective; costs one 16-byte all-gather when ranks agree.
#include <functional>
#include <string>

#include "lowrank/comm/communicator.h"

namespace lowrank {

/// Throws "rank r: ranks disagree on <what>." plus the differing lines. No-op at world size 1.
void check_agreement(comm::Communicator& comm, const std::string& fingerprint, const std::string& what);

}  // namespace lowrank

namespace lowrank {

/// Runs fn() on every rank, then tells every rank whether any failed (one 8-byte all-gather): a
/// rank whose fn() threw rethrows its own error, the others throw "rank r: rank q failed while
/// <what>". Used for steps that can fail on one rank only (reading its checkpoint shard, preparing
/// the output directory), so that no rank walks on into a collective the failed one never joins.
void run_together(comm::Communicator& comm, const std::string& what, const std::function<void()>& fn);

}  // namespace lowrank
