#include "lowrank/util/files.h"

#include <c10/util/Exception.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <vector>

namespace lowrank {
namespace {

// "/abs/./a//b/../c/" -> "/abs/a/c" (lexical; `p` made absolute against the working directory).
std::string normalized_absolute(const std::string& p) {
  std::string abs = p;
  if (abs.empty() || abs[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof(cwd)) != nullptr) abs = std::string(cwd) + "/" + abs;
  }
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= abs.size()) {
    const size_t j = std::min(abs.find('/', i), abs.size());
    const std::string part = abs.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& part : parts) out += "/" + part;
  return out.empty() ? "/" : out;
}

std::string this_command() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (char& c : raw)
    if (c == '\0') c = ' ';
  while (!raw.empty() && raw.back() == ' ') raw.pop_back();
  if (raw.size() > 300) raw = raw.substr(0, 300) + " ...";
  return raw;
}

}  // namespace

std::optional<std::string> try_read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

std::string read_file(const std::string& path, const std::string& hint) {
  errno = 0;
  std::optional<std::string> text = try_read_file(path);
  TORCH_CHECK(text, "cannot read ", path, ": ", std::strerror(errno ? errno : EIO), hint);
  return *std::move(text);
}

std::vector<std::string> list_directory(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void make_directories(const std::string& dir) {
  TORCH_CHECK(!dir.empty(), "output directory name is empty");
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i < dir.size() && dir[i] != '/') continue;
    partial = dir.substr(0, i);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      TORCH_CHECK(false, "cannot create output directory ", partial, ": ", std::strerror(errno));
  }
  struct stat st {};
  TORCH_CHECK(::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "output path ", dir, " is not a directory");
  TORCH_CHECK(::access(dir.c_str(), W_OK) == 0, "output directory ", dir, " is not writable");
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TORCH_CHECK(fd >= 0, "cannot write ", tmp, ": ", std::strerror(errno));
  size_t off = 0;
  int err = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : ENOSPC;
      break;
    }
    off += static_cast<size_t>(n);
  }
  if (::close(fd) != 0 && err == 0) err = errno;  // NFS reports a full disk at close
  if (err != 0) {
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "writing ", path, " failed: ", std::strerror(err), " (its old contents, if any, are kept)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "cannot rename ", tmp, " to ", path, ": ", std::strerror(err));
  }
}

bool same_path(const std::string& a, const std::string& b) {
  if (a.empty() || b.empty()) return false;
  struct stat sa {}, sb {};
  const bool ea = ::stat(a.c_str(), &sa) == 0, eb = ::stat(b.c_str(), &sb) == 0;
  if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  if (ea != eb) return false;
  return normalized_absolute(a) == normalized_absolute(b);
}

DirectoryLock::DirectoryLock(const std::string& dir, const std::string& what) : dir_(dir) {
  std::string base = dir;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  const std::string path = base + "/" + kLockFileName;
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  TORCH_CHECK(fd_ >= 0, "cannot open the lock file ", path, " of ", what, " ", dir, ": ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == ENOSYS || err == ENOLCK || err == EOPNOTSUPP || err == EINVAL) {
      // A file system without flock (Lustre without -o flock, some FUSE and NFS mounts): runs there
      // worked before the lock existed and must go on; a second run is then not refused.
      ::close(fd_);
      fd_ = -1;
      std::cerr << "warning: " << what << " " << dir << " is not locked against a second run: its file system "
                << "does not support flock (" << std::strerror(err) << ")" << std::endl;
      return;
    }
    std::string holder(512, '\0');
    const ssize_t n = ::pread(fd_, &holder[0], holder.size(), 0);
    holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(fd_);
    fd_ = -1;
    TORCH_CHECK(err == EWOULDBLOCK, "cannot lock ", path, ": ", std::strerror(err));
    TORCH_CHECK(false, what, " ", dir, " is in use by another lowrank run (",
                holder.empty() ? std::string("holder unknown") : holder, "; lock ", path,
                "): two runs writing one directory would overwrite each other's files. Wait for it to finish, stop "
                "it, or choose another ", what);
  }
  char host[256] = "?";
  (void)::gethostname(host, sizeof(host) - 1);
  char when[64] = "?";
  const std::time_t now = std::time(nullptr);
  std::tm tm {};
  if (::localtime_r(&now, &tm)) std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
  const std::string record = "pid " + std::to_string(::getpid()) + " on " + host + ", since " + when + ": " +
                             this_command() + "\n";
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, record.data(), record.size(), 0);
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_), dir_(std::move(other.dir_)) {
  other.fd_ = -1;
}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    dir_ = std::move(other.dir_);
    other.fd_ = -1;
  }
  return *this;
}

}  // namespace lowrank
