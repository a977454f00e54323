#pragma once
// Which BLAS torch's matrix products run on, and with how many threads. Debian's libtorch links
// libblas.so.3 through the alternatives system, so the library that is actually loaded depends on
// what is installed: the reference (netlib) BLAS makes every product about 2x slower than
// OpenBLAS (docs/performance.md). `lowrank train` prints this line at start and writes it into
// summary.json, and warns when the reference BLAS is loaded.
#include <string>

namespace lowrank {

struct BlasInfo {
  std::string library;      ///< the loaded file, e.g. /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
  std::string name;         ///< "OpenBLAS 0.3.21 (pthread)", "reference BLAS (netlib)", "MKL", ... or "unknown"
  bool reference = false;   ///< the unoptimized netlib BLAS
  int blas_threads = 0;     ///< threads the BLAS itself uses (OpenBLAS); 0 = not known
  int torch_threads = 0;    ///< at::get_num_threads()
  /// One line for people: "BLAS: OpenBLAS ... (pthread), 1 thread; torch: 1 intra-op thread".
  std::string describe() const;
};

/// Inspects the running process (its mapped libraries and OpenBLAS's own entry points).
BlasInfo blas_info();

/// Sets the BLAS's own thread count where it has one (OpenBLAS's pthread build keeps its own pool,
/// which at::set_num_threads does not reach); no-op otherwise.
void set_blas_threads(int threads);

}  // namespace lowrank
