// Running gnuplot: see include/lowrank/report/gnuplot.h. gnuplot is spawned directly
// (posix_spawn, no shell) on a script file: a script path needs no quoting, a gnuplot that dies
// early cannot raise SIGPIPE in us, and its stderr is kept for the error message.
#include "lowrank/report/gnuplot.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <system_error>
#include <vector>

#include "lowrank/util/files.h"

extern char** environ;

namespace lowrank {
namespace report {
namespace {

namespace fs = std::filesystem;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == '\n' || s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

// A new, empty file $TMPDIR/lowrank-gnuplot-XXXXXX<suffix> (mkstemps: no other process can have
// it), removed by the destructor unless keep() was called.
class TempFile {
 public:
  explicit TempFile(const std::string& suffix) {
    const char* tmpdir = std::getenv("TMPDIR");
    const std::string name = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/lowrank-gnuplot-XXXXXX" + suffix;
    std::vector<char> buf(name.begin(), name.end());
    buf.push_back('\0');
    fd_ = ::mkstemps(buf.data(), static_cast<int>(suffix.size()));
    TORCH_CHECK(fd_ >= 0, "cannot create a temporary file ", name, " for gnuplot: ", std::strerror(errno));
    path_ = buf.data();
  }
  ~TempFile() {
    close();
    if (!keep_) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void keep() { keep_ = true; }

 private:
  std::string path_;
  int fd_ = -1;
  bool keep_ = false;
};

// Spawns `gnuplot script_path` with stdout and stderr on `log_fd`; returns posix_spawn's error
// (0 on success) and, when it started, gnuplot's wait status in `status`.
int spawn_and_wait(const std::string& gnuplot, const std::string& script_path, int log_fd, int& status) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
  std::vector<std::string> args{gnuplot, script_path};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, gnuplot.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  status = 0;
  if (rc == 0)
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  return rc;
}

}  // namespace

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string find_gnuplot() {
  const char* path_env = std::getenv("PATH");
  std::istringstream dirs(path_env ? path_env : "");
  for (std::string d; std::getline(dirs, d, ':');) {
    const std::string candidate = (d.empty() ? "." : d) + "/gnuplot";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

void run_gnuplot(const std::string& script_path) {
  // Found on PATH first, so that "not installed" is told apart from "failed".
  const std::string gnuplot = find_gnuplot();
  TORCH_CHECK(!gnuplot.empty(), "gnuplot is not installed (not found on PATH); install the Debian package "
              "gnuplot-nox (apt-get install gnuplot-nox) to draw the plots");
  TempFile log(".log");
  int status = 0;
  const int rc = spawn_and_wait(gnuplot, script_path, log.fd(), status);
  log.close();
  const std::string messages = try_read_file(log.path()).value_or("");
  TORCH_CHECK(rc == 0, "could not start gnuplot (", gnuplot, ") on ", script_path, ": ", std::strerror(rc),
              "; install the Debian package gnuplot-nox");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  const std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                            : "signal " + std::to_string(WTERMSIG(status));
  TORCH_CHECK(false, "gnuplot failed (", how, ") on ", script_path,
              " (gnuplot comes from the Debian package gnuplot-nox); gnuplot's stderr:\n", trim(messages));
}

std::string draw_figure(const GnuplotFigure& f) {
  const fs::path png(f.png);
  if (png.has_parent_path()) make_directories(png.parent_path().string());
  if (!f.data_path.empty()) write_file_atomically(f.data_path, f.data);
  std::unique_ptr<TempFile> temp;
  if (f.script_path.empty()) temp = std::make_unique<TempFile>(".gp");
  if (temp) temp->close();  // the rename below replaces the file
  const std::string script_path = temp ? temp->path() : f.script_path;
  write_file_atomically(script_path, f.script);
  std::error_code ec;
  fs::remove(png, ec);  // so that a PNG left by an earlier run is not taken for gnuplot's
  try {
    run_gnuplot(script_path);
    TORCH_CHECK(fs::exists(png) && fs::file_size(png) > 0, "gnuplot ran ", script_path, " but wrote no ", f.png);
  } catch (...) {
    if (temp) temp->keep();  // the error names it
    throw;
  }
  return f.png;
}

}  // namespace report
}  // namespace lowrank
