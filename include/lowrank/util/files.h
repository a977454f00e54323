#pragma once
// Files written safely, shared by every layer that writes them (run outputs, checkpoints, the text
// cache), and the two questions every path that deletes or overwrites must ask first: is this the
// same directory under another spelling, and is another run using it (docs/reliability.md, "Data
// safety").
#include <optional>
#include <string>
#include <vector>

namespace lowrank {

/// The whole content of `path`, or nullopt when it cannot be opened or read.
std::optional<std::string> try_read_file(const std::string& path);
/// The whole content of `path`; throws "cannot read <path>: <reason><hint>" when that fails.
std::string read_file(const std::string& path, const std::string& hint = "");
/// The names in `dir` (without "." and ".."), sorted; empty when it cannot be read.
std::vector<std::string> list_directory(const std::string& dir);
/// Creates `dir` and its parents; throws naming the directory when that fails, or when it is not a
/// writable directory.
void make_directories(const std::string& dir);
/// Writes `text` to `path` through a temporary file (<path>.tmp.<pid>) and a rename, so readers
/// never see half a file. On any failure (a full disk, a read-only directory) the temporary is
/// removed and the error names the file; `path` keeps its old contents.
void write_file_atomically(const std::string& path, const std::string& text);

/// True when `a` and `b` name the same file or directory: the same device and inode when both
/// exist ("ck", "ck/", "./ck" and "/abs/ck" all match), else the same absolute, normalized
/// spelling ("a/./b/", "a/b"). Empty paths match nothing.
bool same_path(const std::string& a, const std::string& b);

/// The advisory lock file a run keeps in each directory it writes (--out, the checkpoint root).
constexpr const char* kLockFileName = ".lowrank.lock";

/// An exclusive flock(2) on <dir>/.lowrank.lock, held for the object's life, so that two runs
/// never write one directory (locks of a dead process vanish with it; flock works across machines
/// on NFS v4). The file records the holder (pid, host, start time, command) for the refusal message
/// of a second run; it is left in place (unlinking a lock file races with a waiting locker).
class DirectoryLock {
 public:
  DirectoryLock() = default;
  /// Locks `dir` (which must exist), or throws naming the directory, `what` ("--out", ...) and the
  /// holder's record. On a file system without flock (ENOSYS, ENOLCK, EOPNOTSUPP) it warns on
  /// stderr and holds nothing.
  DirectoryLock(const std::string& dir, const std::string& what);
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  const std::string& dir() const { return dir_; }

 private:
  int fd_ = -1;
  std::string dir_;
};

}  // namespace lowrank
