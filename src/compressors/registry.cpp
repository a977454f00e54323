#include "lowrank/compressors/registry.h"

#include <c10/util/Exception.h>

#include <sstream>

#include "lowrank/util/choices.h"
#include "lowrank/compressors/galore.h"
#include "lowrank/compressors/greedylore.h"
#include "lowrank/compressors/low_precision.h"
#include "lowrank/compressors/none.h"
#include "lowrank/compressors/noop.h"
#include "lowrank/compressors/powersgd.h"
#include "lowrank/compressors/powersgd_plus.h"
#include "lowrank/compressors/qsgd.h"
#include "lowrank/compressors/randomk.h"
#include "lowrank/compressors/signsgd.h"
#include "lowrank/compressors/topk.h"

namespace lowrank {

const std::vector<CompressorInfo>& compressor_registry() {
  static const std::vector<CompressorInfo> registry = {
      {"none", "dense mean all-reduce (baseline); 4*m*n bytes per matrix (fp32)", NoCompression::create},
      {"noop",
       "no communication at all: each rank keeps its own gradient (headroom baseline of the benchmarks, "
       "as PyTorch's noop_hook; not data-parallel training); 0 bytes",
       NoOp::create},
      {"powersgd",
       "PowerSGD (Vogels et al. 2019): rank-r power step, warm start, EF; factors of k(m+n) elements per "
       "matrix (alternating mode: k*n or k*m), 4 bytes each (factor_dtype=bf16|fp16: 2, int8: 1 + 4 per "
       "column)",
       PowerSgd::create},
      {"powersgd+",
       "PowerSGD+ (Xie, Chen, Yuan 2025): PowerSGD with an SVD restart every restart_period steps; k(m+n) "
       "factor elements per matrix, m*n + n*k on restarts (rsvd_dist: (q+1)*l*(m+n)); 4 bytes each at fp32",
       PowerSgdPlus::create},
      {"greedylore",
       "GreedyLore (Chen et al. 2025): greedy top-k columns of a lazy complete SVD basis, refreshed every "
       "refresh_period steps, EF; k*max(m,n) + min(m,n) elements per matrix, m*n on refreshes; 4 bytes each "
       "at fp32",
       GreedyLore::create},
      {"galore",
       "GaLore-style lazy top-k projector refreshed every refresh_period steps, no EF by default; "
       "k*min(m,n) elements per matrix (side=smaller: k*max(m,n)), m*n on refreshes; 4 bytes each at fp32",
       GaLore::create},
      {"fp16",
       "fp16 cast (as PyTorch's fp16_compress_hook): every tensor divided by W, clamped to stay finite, summed "
       "in fp16 by one all-reduce; no EF by default; 2 bytes per element",
       Fp16Cast::create},
      {"bf16",
       "bfloat16 cast (as PyTorch's bf16_compress_hook): every tensor's bf16 bytes in one all-gather (gloo has no "
       "bf16), summed in fp32 in rank order, /W; no EF by default; 2 bytes per element",
       Bf16Cast::create},
      {"topk",
       "Top-k sparsification with error feedback (Stich et al. 2018; Aji & Heafield 2017): the k largest |x| "
       "per tensor (k = max(1, ceil(density*N)), or k), one all-gather; k values + k int32 positions (8k bytes "
       "at fp32) per tensor",
       TopK::create},
      {"randomk",
       "Random-k sparsification (Stich et al. 2018): k positions per tensor from the shared seed, one all-reduce, "
       "EF (scaled=true: unbiased N/k scaling, no EF); k values (4 bytes each at fp32) per tensor",
       RandomK::create},
      {"qsgd",
       "QSGD (Alistarh et al. 2017): unbiased stochastic quantization to s=levels levels per sign with an fp32 "
       "norm per bucket_size elements, no EF by default; ceil(N*bits/8) + 4*ceil(N/bucket_size) bytes per "
       "tensor (N elements, bits = 4 at levels 7)",
       Qsgd::create},
      {"signsgd",
       "EF-signSGD (Karimireddy et al. 2019): scaled sign (||x||_1/N per tensor) with error feedback; "
       "ceil(N/8) + 4 bytes per tensor",
       SignSgd::create},
  };
  return registry;
}

std::vector<std::string> compressor_names() {
  std::vector<std::string> names;
  for (const auto& c : compressor_registry()) names.push_back(c.name);
  return names;
}

std::unique_ptr<Compressor> make_compressor(const std::string& name, const Config& config) {
  for (const auto& c : compressor_registry()) {
    if (c.name == name) {
      // The factory reads a private copy, which records the keys it consumed: the caller's Config is
      // only read, so threads may share one, and keys consumed by an earlier compressor made from the
      // same Config do not count as accepted by this one.
      Config own;
      for (const auto& kv : config.values()) own.set(kv.first, kv.second);
      auto compressor = c.create(own);
      own.check_all_used("compressor '" + name + "'");
      return compressor;
    }
  }
  check_choice("compressor", name, compressor_names());
  TORCH_CHECK(false, "unreachable: compressor '", name, "' is listed but not registered");
}

}  // namespace lowrank
