#pragma once
// Files written safely, shared by every layer that writes them (run outputs, checkpoints, the text
// cache).
#include <string>

namespace lowrank {

/// Creates `dir` and its parents; throws naming the directory when that fails, or when it is not a
/// writable directory.
void make_directories(const std::string& dir);
/// Writes `text` to `path` through a temporary file (<path>.tmp.<pid>) and a rename, so readers
/// never see half a file.
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace lowrank
