// Random-k sparsification on shared positions: see the walk-through in
// include/lowrank/compressors/randomk.h (docs/algorithms.md §6).
#include "lowrank/compressors/randomk.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"

namespace lowrank {

namespace {

// [b, m, n] as [b, N]: the reducer's ShapeGroup tensors are contiguous (views of its bucket buffers).
at::Tensor rows(const at::Tensor& t) { return t.view({t.size(0), t.size(1) * t.size(2)}); }

// k distinct positions in [0, N), ascending, from `gen` by Floyd's algorithm: k draws and O(k) memory,
// so keeping 1% of an 11 M-element tensor costs 110 k draws, not a shuffle of 11 M (randperm). The
// same draws on every rank give the same positions.
at::Tensor sample_positions(int64_t N, int64_t k, at::Generator& gen) {
  std::unordered_set<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(2 * k));
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(k));
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto* impl = gen.get<at::CPUGeneratorImpl>();
  for (int64_t j = N - k; j < N; ++j) {
    const auto t = static_cast<int64_t>(impl->random64() % static_cast<uint64_t>(j + 1));  // uniform in [0, j]
    const int64_t pick = chosen.insert(t).second ? t : j;  // t taken already: j (never drawn before) instead
    if (pick == j) chosen.insert(j);
    out.push_back(pick);
  }
  std::sort(out.begin(), out.end());
  return at::tensor(out, at::kLong);
}

}  // namespace

double RandomK::size_test_bytes(int64_t m, int64_t n) const { return 4.0 * static_cast<double>(k_of(m, n)); }

int64_t RandomK::wire_bytes(int64_t m, int64_t n, int64_t /*step*/, at::ScalarType work) const {
  return k_of(m, n) * static_cast<int64_t>(c10::elementSize(work));
}

at::Tensor RandomK::positions(const ShapeGroup& group, int64_t step, uint64_t seed) const {
  const int64_t N = group.m * group.n, k = k_of(group.m, group.n);
  at::Generator gen = shared_generator(seed, step, stream_id(Stream::kPositions, group.ordinal));
  std::vector<at::Tensor> members;  // drawn one after another from the group's one stream
  for (int64_t j = 0; j < group.batch(); ++j) members.push_back(sample_positions(N, k, gen));
  return at::stack(members);  // [b, k]
}

std::vector<std::string> RandomK::start_warnings(const std::vector<MatrixInfo>& compressed,
                                                 bool error_feedback) const {
  if (compressed.empty()) return {};
  const std::string density = options_.budget().k() > 0 ? "k/N" : "density";
  if (options_.scaled() && (options_.budget().k() > 0 || options_.budget().density() < 0.5))
    return {"randomk: scaled=true multiplies the kept values by N/k, so the estimate's variance is (N/k - 1) "
            "times the squared gradient; at a low " + density + " this diverged where measured (docs/results.md, "
            "\"randomk\"). What works better: scaled=false with error feedback (the default) and --momentum 0, or "
            "--compressor topk at the same density"};
  if (!options_.scaled() && error_feedback)
    return {"randomk: each element travels about once every 1/" + density + " steps, so error feedback holds "
            "most of the gradient back and releases it many steps late, which heavy-ball momentum amplifies; "
            "where measured (docs/results.md, \"randomk\") it trained far worse than topk at the same traffic, "
            "least badly with --momentum 0. What works better: --compressor topk (the same values plus their "
            "positions), or --momentum 0 with density 0.1 or more"};
  return {};
}

void RandomK::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  std::vector<at::Tensor> S;    // per group [b, k]
  std::vector<double> alpha;    // per group: N/k when scaled, else 1
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& g : groups) {
    S.push_back(positions(g, ctx.compressed_step, ctx.seed));
    const int64_t k = S.back().size(1);
    alpha.push_back(options_.scaled() && k > 0 ? static_cast<double>(g.m * g.n) / static_cast<double>(k) : 1.0);
    shapes.push_back({g.batch(), k});
  }
  FlatBuffer v = FlatBuffer::zeros(shapes, group_dtype(groups));
  for (size_t i = 0; i < groups.size(); ++i) {
    const ShapeGroup& g = groups[i];
    v.views[i].copy_(rows(g.delta).gather(1, S[i]));  // v_i = Δ_i[S]
    // Δ_i has been read completely: residual may alias it (in_place_residual).
    if (!g.residual.is_same(g.delta)) g.residual.copy_(g.delta);
    if (options_.scaled()) rows(g.residual).scatter_(1, S[i], v.views[i] - v.views[i] * alpha[i]);  // Δ_i − α·v_i at S
    else rows(g.residual).scatter_(1, S[i], 0);
  }
  all_reduce_average_(*ctx.comm, v.flat);  // v̄: Σ b·k values, one collective
  for (size_t i = 0; i < groups.size(); ++i) {
    const ShapeGroup& g = groups[i];
    g.out.zero_();
    rows(g.out).scatter_(1, S[i], options_.scaled() ? v.views[i] * alpha[i] : v.views[i]);  // ĝ = α·v̄ at S
  }
}

}  // namespace lowrank
