#include "lowrank/launch/outputs.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "lowrank/train/checkpoint.h"

namespace lowrank {
namespace launch {

using train::CheckpointRef;
using train::TrainOptions;

namespace {

// The directories one run writes, resolved once.
struct OutputDirs {
  bool resuming = false;
  std::string out;          // --out; "" = none
  std::string checkpoints;  // where this run's checkpoints go (Trainer::checkpoint_root); "" = none
  std::string resume_root;  // the checkpoint root --resume continues from; "" = not resuming
};

bool all_digits(const std::string& s) { return !s.empty() && std::all_of(s.begin(), s.end(), ::isdigit); }

std::string listing(const std::vector<std::string>& names) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < 6; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > 6) os << ", ... (" << names.size() << " entries)";
  return os.str();
}

OutputDirs output_dirs(const TrainOptions& options) {
  OutputDirs d;
  d.resuming = !options.resume().empty();
  // Validate first: a typo in --resume must not cost a file.
  d.resume_root = d.resuming ? train::checkpoint_root_of(train::find_checkpoint(options.resume()).dir) : "";
  d.checkpoints = !options.checkpoint_dir().empty() ? options.checkpoint_dir() : d.resume_root;
  d.out = options.out_dir();
  return d;
}

// Locks every directory this run writes before looking into it (one lock when they coincide).
OutputLocks lock_outputs(const OutputDirs& d) {
  OutputLocks locks;
  if (!d.out.empty()) {
    make_directories(d.out);
    locks.emplace_back(d.out, "output directory (--out)");
  }
  if (!d.checkpoints.empty()) {
    make_directories(d.checkpoints);
    if (!same_path(d.checkpoints, d.out)) locks.emplace_back(d.checkpoints, "checkpoint directory");
  }
  return locks;
}

// What --out holds besides the lock and the checkpoints of this run (checked separately).
std::vector<std::string> run_files_in_out(const OutputDirs& d) {
  const bool out_holds_checkpoints = same_path(d.out, d.checkpoints) || same_path(d.out, d.resume_root);
  std::vector<std::string> entries;
  for (const auto& e : list_directory(d.out)) {
    const std::string path = d.out + "/" + e;
    if (e == kLockFileName) continue;
    if (same_path(path, d.checkpoints) || same_path(path, d.resume_root)) continue;
    if (out_holds_checkpoints && train::is_checkpoint_entry(e)) continue;  // (--out X --checkpoint-dir X)
    entries.push_back(e);
  }
  return entries;
}

// The files of --out that --overwrite removes; throws when --out may not be reused.
std::vector<std::string> out_files_to_remove(const OutputDirs& d, bool overwrite) {
  if (d.out.empty()) return {};
  const std::vector<std::string> entries = run_files_in_out(d);
  // A resumed run continues metrics.csv(.partial) here and leaves anything else alone (a user's
  // train.log from `| tee`); its old summary and rank records go only once the checkpoint has
  // loaded (remove_finished_outputs), so a refused resume loses nothing.
  if (d.resuming || entries.empty()) return {};
  std::vector<std::string> foreign;
  for (const auto& e : entries)
    if (!is_own_output(e)) foreign.push_back(e);
  TORCH_CHECK(overwrite, "output directory ", d.out, " is not empty (", listing(entries),
              "): pass --overwrite to replace a previous run's files, --resume CHECKPOINT_DIR to continue it, "
              "or choose another --out");
  TORCH_CHECK(foreign.empty(), "output directory ", d.out, " holds files lowrank did not write (", listing(foreign),
              "); --overwrite only removes lowrank's own (metrics.csv, summary.json, rank<r>.json, loss.*): choose "
              "another --out");
  return entries;
}

// The old checkpoints of --checkpoint-dir that --overwrite removes; throws when it may not be reused.
std::vector<CheckpointRef> checkpoints_to_remove(const TrainOptions& options, const OutputDirs& d, bool overwrite) {
  const std::string& dir = options.checkpoint_dir();
  // A fresh run, or a resumed one writing somewhere else than where it resumes from: the
  // directory must not hold another run's checkpoints.
  if (dir.empty() || (d.resuming && same_path(dir, d.resume_root))) return {};
  const auto existing = train::list_checkpoints(dir);
  if (existing.empty()) return {};
  TORCH_CHECK(overwrite, "checkpoint directory ", dir, " already holds checkpoints (newest: step ",
              existing.back().step, "): pass --resume ", dir, " to continue that run (with no --checkpoint-dir "
              "or this one), --overwrite to delete them, or choose another --checkpoint-dir");
  std::vector<std::string> foreign;
  for (const auto& c : existing) {
    // never what --resume points at (that would be the same directory)
    TORCH_CHECK(!d.resuming || !same_path(c.dir, options.resume()), "--overwrite would delete ", c.dir,
                ", the checkpoint --resume ", options.resume(), " continues from; choose another --checkpoint-dir");
    for (const auto& e : list_directory(c.dir))
      if (!train::is_checkpoint_file(e)) foreign.push_back(c.dir + "/" + e);
  }
  TORCH_CHECK(foreign.empty(), "checkpoint directory ", dir, " holds files lowrank did not write (",
              listing(foreign), "); --overwrite only removes checkpoints: move them, or choose another "
              "--checkpoint-dir");
  return existing;
}

void remove_old_outputs(const std::string& out, const std::vector<std::string>& files,
                        const std::vector<CheckpointRef>& checkpoints) {
  for (const auto& e : files) {
    const std::string path = out + "/" + e;
    TORCH_CHECK(std::remove(path.c_str()) == 0, "--overwrite: cannot remove ", path, ": ", std::strerror(errno));
  }
  for (const auto& c : checkpoints)
    TORCH_CHECK(train::remove_checkpoint_dir(c.dir), "--overwrite: cannot remove ", c.dir, ": ", std::strerror(errno));
}

}  // namespace

bool is_own_output(const std::string& name) {
  static const std::vector<std::string> files = {"metrics.csv", "metrics.csv.partial", "summary.json",
                                                 "loss.png", "loss.gp", "loss.dat"};
  for (const auto& f : files) {
    if (name == f) return true;
    // write_file_atomically's temporary: <file>.tmp.<pid>
    if (name.rfind(f + ".tmp.", 0) == 0 && all_digits(name.substr(f.size() + 5))) return true;
  }
  // rank<r>.json and its temporary
  if (name.rfind("rank", 0) != 0) return false;
  const auto dot = name.find(".json");
  if (dot == std::string::npos || !all_digits(name.substr(4, dot - 4))) return false;
  const std::string rest = name.substr(dot + 5);
  return rest.empty() || (rest.rfind(".tmp.", 0) == 0 && all_digits(rest.substr(5)));
}

OutputLocks prepare_outputs(const TrainOptions& options, bool overwrite) {
  const OutputDirs dirs = output_dirs(options);
  OutputLocks locks = lock_outputs(dirs);
  // Everything is checked before anything is removed: a refusal leaves every file as it was.
  const auto files = out_files_to_remove(dirs, overwrite);
  const auto checkpoints = checkpoints_to_remove(options, dirs, overwrite);
  remove_old_outputs(dirs.out, files, checkpoints);
  return locks;
}

void remove_finished_outputs(const std::string& out) {
  if (out.empty()) return;
  for (const auto& e : list_directory(out))
    if (e == "summary.json" || (is_own_output(e) && e.rfind("rank", 0) == 0)) std::remove((out + "/" + e).c_str());
}

}  // namespace launch
}  // namespace lowrank
