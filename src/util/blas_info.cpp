#include "lowrank/util/blas_info.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <fstream>
#include <sstream>

namespace lowrank {
namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

// The first mapped file whose name looks like a BLAS.
std::string mapped_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line, fallback;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string file = path.substr(path.rfind('/') + 1);
    if (contains(file, "openblas") || contains(file, "libmkl") || contains(file, "libblis")) return path;
    if (fallback.empty() && file.rfind("libblas.so", 0) == 0) fallback = path;
  }
  return fallback;
}

template <typename F>
F symbol(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

std::string BlasInfo::describe() const {
  std::ostringstream os;
  os << "BLAS: " << name;
  if (blas_threads > 0) os << ", " << blas_threads << " thread" << (blas_threads > 1 ? "s" : "");
  if (!library.empty()) os << " [" << library << "]";
  os << "; torch: " << torch_threads << " intra-op thread" << (torch_threads > 1 ? "s" : "");
  return os.str();
}

BlasInfo blas_info() {
  BlasInfo info;
  info.library = mapped_blas();
  info.torch_threads = at::get_num_threads();
  auto config = symbol<char* (*)()>("openblas_get_config");
  auto threads = symbol<int (*)()>("openblas_get_num_threads");
  auto parallel = symbol<int (*)()>("openblas_get_parallel");
  if (config) {
    std::string c = config();  // "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
    std::istringstream is(c);
    std::string word, version;
    is >> word >> version;
    const int mode = parallel ? parallel() : -1;
    info.name = "OpenBLAS " + version +
                (mode == 0 ? " (serial)" : mode == 1 ? " (pthread)" : mode == 2 ? " (openmp)" : "");
    if (threads) info.blas_threads = threads();
  } else if (contains(info.library, "mkl")) {
    info.name = "MKL";
  } else if (contains(info.library, "blis")) {
    info.name = "BLIS";
  } else if (contains(info.library, "/blas/libblas.so") || contains(info.library, "netlib")) {
    info.name = "reference BLAS (netlib)";
    info.reference = true;
  } else {
    info.name = info.library.empty() ? "unknown (no BLAS library mapped)" : "unknown";
  }
  return info;
}

void set_blas_threads(int threads) {
  if (auto set = symbol<void (*)(int)>("openblas_set_num_threads")) set(threads);
}

}  // namespace lowrank
