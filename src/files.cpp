#include "lowrank/files.h"

#include <c10/util/Exception.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace lowrank {

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
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(f.good(), "cannot write ", tmp, ": ", std::strerror(errno));
    f << text;
    f.flush();
    TORCH_CHECK(f.good(), "writing ", tmp, " failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    TORCH_CHECK(false, "cannot rename ", tmp, " to ", path, ": ", std::strerror(err));
  }
}

}  // namespace lowrank
