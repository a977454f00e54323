#pragma once
// The directories a `lowrank train` run writes: --out (metrics.csv, summary.json, rank<r>.json,
// loss.*) and its checkpoint root. A non-empty --out (or a --checkpoint-dir that already holds
// checkpoints) is refused before any worker starts, unless --overwrite (which removes lowrank's own
// files there and nothing else) or --resume (which continues the files) says otherwise. The
// directories are locked for the run's life (by the local launcher, or by rank 0 of an external
// job), so a second run on one of them is refused naming the first.
#include <string>
#include <vector>

#include "lowrank/train/train_options.h"
#include "lowrank/util/files.h"

namespace lowrank {
namespace launch {

/// Locks held on the directories a run writes, for its life (files.h, DirectoryLock).
using OutputLocks = std::vector<DirectoryLock>;

/// Checks and prepares the output and checkpoint directories as described above; throws naming
/// the directory and what is in it. Validates --resume first (a complete checkpoint must exist),
/// then locks --out and the checkpoint root (a second run on either is refused, naming the first),
/// and only then removes anything: with --overwrite, lowrank's own files in --out and the old
/// checkpoints of a --checkpoint-dir that is not the one resumed from (paths are compared as files,
/// so "ck", "ck/" and "./ck" are one directory). A resumed run removes nothing here.
OutputLocks prepare_outputs(const train::TrainOptions& options, bool overwrite);
/// After a resumed run's checkpoint has loaded: removes the summary.json and rank<r>.json of `out`
/// (the run writes new ones when it finishes; stale ones must not sit beside its partial metrics).
void remove_finished_outputs(const std::string& out);

/// True for a file name `lowrank train` writes into --out (metrics.csv, metrics.csv.partial,
/// summary.json, loss.png, loss.gp, loss.dat, rank<r>.json) or write_file_atomically's temporary
/// of one (<name>.tmp.<pid>): the only files --overwrite removes.
bool is_own_output(const std::string& name);

}  // namespace launch
}  // namespace lowrank
