#pragma once
// Checkpoints on disk: one shard per rank, then a manifest written last.
//
//   <root>/step-00000100/rank0.pt ... rank<W-1>.pt   each rank's state (a torch archive)
//   <root>/step-00000100/manifest.json               written last (temporary file + rename)
//
// A checkpoint is complete when its manifest exists. The manifest records the format and its
// version, the step, the world size, the run's settings (TrainOptions::settings) and every
// shard's size and SHA-256, and carries a SHA-256 of its own text. Loading verifies all of them
// before a byte of a shard is parsed, so a truncated, bit-flipped, missing or swapped shard, a
// damaged manifest, another format version, another model or another world size is an error
// naming the file and the problem, never a crash or a silent misload. The directory must be
// visible to every rank (a shared file system when ranks run on several machines).
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/comm/communicator.h"

namespace lowrank {
namespace train {

constexpr const char* kCheckpointFormat = "lowrank-checkpoint";
constexpr int kCheckpointVersion = 1;

/// (key, value) settings that must match on resume.
using SettingList = std::vector<std::pair<std::string, std::string>>;

/// "<root>/step-<8 digits>".
std::string checkpoint_dir(const std::string& root, int64_t step);

/// Collective. Every rank writes `archive` as its shard of checkpoint `step` under `root`; the
/// shards' digests are all-gathered and rank 0 writes the manifest, then removes all but the
/// newest `keep` complete checkpoints (and incomplete ones older than the new one). Returns the
/// checkpoint's directory. `environment` (threads, BLAS, ...) is recorded in the manifest but not
/// required to match on resume: a resumed run warns when it differs (checkpoint_environment).
std::string save_checkpoint(comm::Communicator& comm, const std::string& root, int64_t step,
                            torch::serialize::OutputArchive& archive, const SettingList& settings, int keep,
                            const SettingList& environment = {});

/// A complete checkpoint: its directory and step.
struct CheckpointRef {
  std::string dir;
  int64_t step = 0;
};

/// `path` itself when it holds a manifest.json, else the complete checkpoint with the highest
/// step under it. Throws when there is none (naming incomplete ones it skipped).
CheckpointRef find_checkpoint(const std::string& path);
/// The checkpoint root a path names: the parent of a step-* directory (one holding a manifest),
/// else the path itself. New checkpoints of a resumed run go there, next to the one resumed from.
std::string checkpoint_root_of(const std::string& path);
/// Moves the complete checkpoints under `root` newer than `step` aside (renamed to
/// "abandoned-step-<N>"): resuming from an older one starts a new timeline, and a later --resume of
/// the root must not pick up the old one. Returns the directories moved.
std::vector<std::string> abandon_newer_checkpoints(const std::string& root, int64_t step);
/// Whether `name` is an entry of a checkpoint root: step-<digits>, or abandoned-step-<digits>[.k]
/// (abandon_newer_checkpoints).
bool is_checkpoint_entry(const std::string& name);
/// Whether `name` is a file a checkpoint directory holds: manifest.json, rank<r>.pt, or one of
/// their temporaries (<file>.tmp.<pid>).
bool is_checkpoint_file(const std::string& name);
/// Removes one checkpoint directory: its checkpoint files (is_checkpoint_file), then the directory
/// itself. Anything else inside (a user's file) is kept, and so is the directory then: false when
/// it could not be removed.
bool remove_checkpoint_dir(const std::string& dir);
/// Complete checkpoints under `root`, oldest first.
std::vector<CheckpointRef> list_checkpoints(const std::string& root);

/// The environment recorded in the manifest of `ref` (empty for checkpoints written before it was
/// recorded, or when the manifest cannot be read: load_checkpoint names that).
SettingList checkpoint_environment(const CheckpointRef& ref);

/// Verifies the manifest of `ref` (format, version, its own checksum, world size, settings) and
/// the shard of `rank` (size, SHA-256, the rank recorded inside), then loads the shard into
/// `archive`. Throws c10::Error naming the file and the problem.
void load_checkpoint(const CheckpointRef& ref, int rank, int world_size, const SettingList& settings,
                     torch::serialize::InputArchive& archive);

}  // namespace train
}  // namespace lowrank
