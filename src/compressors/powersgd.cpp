// PowerSGD: see the walk-through in include/lowrank/compressors/powersgd.h (docs/algorithms.md §2).
#include "lowrank/compressors/powersgd.h"

#include <ATen/Dispatch.h>

#include "lowrank/compressors/distributed_rsvd.h"
#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/skinny.h"

namespace lowrank {

void PowerSgdOptions::validate() const {
  TORCH_CHECK(rank().automatic || rank().value >= 1, "powersgd: rank must be >= 1 or auto, got ", rank());
  auto_rank().validate("powersgd", rank().automatic);
  TORCH_CHECK(orth_eps() >= 0, "powersgd: orth_eps must be >= 0, got ", orth_eps());
  TORCH_CHECK(iters_per_step() >= 1, "powersgd: iters_per_step must be >= 1, got ", iters_per_step());
  TORCH_CHECK(mode() == PowerSgdMode::kAlternating || iters_per_step() == 1, "powersgd: iters_per_step=",
              iters_per_step(), " applies to powersgd_mode=alternating only, got powersgd_mode=",
              choice_name(mode(), kPowerSgdModes));
}

double PowerSgd::size_test_bytes(int64_t m, int64_t n) const {
  const int64_t k = automatic() ? options_.auto_rank().lo(m, n) : k_of(m, n);
  const FactorDtype d = options_.factor_dtype();
  const double both = static_cast<double>(factor_bytes(d, m, k, at::kFloat) + factor_bytes(d, n, k, at::kFloat));
  if (options_.mode() == PowerSgdMode::kAlternating) return 0.5 * static_cast<double>(options_.iters_per_step()) * both;
  return both;
}

int64_t PowerSgd::wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const {
  if (measures_spectrum(step))
    return distributed_rsvd_elements(m, n, sketch_width(m, n), kSketchPowerIters, /*measuring=*/true) *
           static_cast<int64_t>(c10::elementSize(work));
  return step_bytes(m, n, k_of(m, n), step, work);
}

int64_t PowerSgd::wire_bytes_at(const TensorDict& state, int64_t m, int64_t n, int64_t step,
                                at::ScalarType work) const {
  if (!automatic() || measures_spectrum(step)) return wire_bytes(m, n, step, work);
  return step_bytes(m, n, planned_rank(options_.auto_rank(), state, m, n), step, work);
}

int64_t PowerSgd::rank_at(const TensorDict& state, int64_t m, int64_t n) const {
  return automatic() ? planned_rank(options_.auto_rank(), state, m, n) : k_of(m, n);
}

// A budget plans with the mean bytes of two consecutive power steps (they differ in alternating mode
// with an odd iters_per_step).
RankCost PowerSgd::rank_cost(at::ScalarType work) const {
  return [this, work](int64_t m, int64_t n, int64_t k) {
    return (step_bytes(m, n, k, 1, work) + step_bytes(m, n, k, 2, work)) / 2;
  };
}

void PowerSgd::plan_ranks(std::vector<PlannedMatrix>& matrices, int64_t step, int64_t fixed_bytes,
                          at::ScalarType work) const {
  apply_auto_ranks(options_.auto_rank(), matrices, step, fixed_bytes, rank_cost(work));
}

void PowerSgd::check_rank_plan(const std::vector<PlannedMatrix>& matrices, int64_t fixed_bytes,
                               at::ScalarType work) const {
  if (automatic()) check_rank_budget(options_.auto_rank(), name(), matrices, fixed_bytes, rank_cost(work));
}

int64_t PowerSgd::step_bytes(int64_t m, int64_t n, int64_t k, int64_t step, at::ScalarType work) const {
  const FactorDtype d = options_.factor_dtype();
  if (options_.mode() == PowerSgdMode::kTwoAllReduce) return factor_bytes(d, m, k, work) + factor_bytes(d, n, k, work);
  int64_t total = 0;
  for (int64_t j = 0; j < options_.iters_per_step(); ++j) {
    const int64_t l = step * options_.iters_per_step() + j;
    total += factor_bytes(d, (l % 2 == 0) ? n : m, k, work);  // even ℓ sends Q_i [n, k], odd ℓ P_i [m, k]
  }
  return total;
}

void PowerSgd::orth_(at::Tensor& X) const {
  linalg::orthogonalize_(X, options_.orth_eps(), options_.orth_eps_mode(), options_.orth_method());
}

// An all-zero column of a warm-start factor would stay zero forever: P = ΔQ inherits it, and so does
// the next Q = ΔᵀP̂. It appears after a step whose mean Δ̄ was zero (an unused or frozen layer, whose
// missing gradient counts as zero) or exactly of rank < k, and would silently stop compression from
// sending anything for that matrix. Such columns are redrawn from the shared stream of this step.
// The factors are bit-identical on all ranks, so every rank redraws the same columns. Only in max
// eps mode: additive mode keeps PyTorch's behaviour (zero stays zero; NaN with eps = 0).
namespace {

// Whether some column of some matrix of X [b, m, k] is all zero: one pass over the (small) factor
// instead of five ATen calls, which cost more than the pass here.
bool has_zero_column(const at::Tensor& X) {
  if (!X.is_contiguous() || !(X.scalar_type() == at::kFloat || X.scalar_type() == at::kDouble))
    return X.abs().amax(/*dim=*/1).eq(0).any().item<bool>();
  const int64_t b = X.size(0), m = X.size(1), k = X.size(2);
  bool found = false;
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "has_zero_column", [&] {
    const scalar_t* x = X.data_ptr<scalar_t>();
    for (int64_t bi = 0; bi < b && !found; ++bi)
      for (int64_t c = 0; c < k && !found; ++c) {
        bool zero = true;
        for (int64_t r = 0; r < m && zero; ++r) zero = x[(bi * m + r) * k + c] == 0;
        found = zero;
      }
  });
  return found;
}

}  // namespace

void PowerSgd::revive_zero_columns_(at::Tensor& X, const StepContext& ctx, uint64_t stream) const {
  if (options_.orth_eps_mode() != linalg::OrthEpsMode::kMax) return;
  if (!has_zero_column(X)) return;
  at::Tensor dead = X.abs().amax(/*dim=*/1, /*keepdim=*/true).eq(0);  // [b, 1, k]
  X.copy_(at::where(dead, shared_randn(X.sizes(), ctx.seed, ctx.compressed_step, stream, X.scalar_type()), X));
  orth_(X);
}

at::Tensor PowerSgd::leading_columns(const ShapeGroup& g, const char* key, int64_t k) {
  at::Tensor x = stacked_state(g, key);  // [b, rows, K]; K >= k (a spectrum step leaves hi columns)
  TORCH_CHECK(x.size(2) >= k, "powersgd: state '", key, "' of '", g.names[0], "' has ", x.size(2),
              " columns, fewer than its rank ", k);
  return x.size(2) == k ? x : x.narrow(2, 0, k).contiguous();
}

std::vector<at::Tensor> PowerSgd::start_q(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  std::vector<at::Tensor> Q;
  for (auto& g : groups) {
    const bool have = options_.warm_start() && has_state(g, compressor_keys::kQ);
    at::Tensor q = have ? leading_columns(g, compressor_keys::kQ, k_of(g))  // [b, n, k]
                        : shared_randn({g.batch(), g.n, k_of(g)}, ctx.seed, ctx.compressed_step,
                                       stream_id(Stream::kInitQ, g.ordinal), g.delta.scalar_type());
    orth_(q);
    if (have) revive_zero_columns_(q, ctx, stream_id(Stream::kInitQ, g.ordinal));
    Q.push_back(q);
  }
  return Q;
}

void PowerSgd::power_step(std::vector<ShapeGroup>& groups, std::vector<at::Tensor>& Q,
                          const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  std::vector<std::vector<int64_t>> p_shapes;
  for (size_t i = 0; i < groups.size(); ++i) p_shapes.push_back({groups[i].batch(), groups[i].m, Q[i].size(2)});
  FlatBuffer P = FlatBuffer::zeros(p_shapes, group_dtype(groups));
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    if (g.pending.defined()) linalg::skinny_add_matmul_out(P.views[i], g.delta, g.pending, Q[i]);  // Δ += g; ΔQ
    else linalg::skinny_matmul_out(P.views[i], g.delta, Q[i]);                                      // ΔQ
  }
  const FactorCodec pc = codec();
  pc.sum_(comm, P, pc.encode_(P));  // collective 1: Σ m·k factor elements, undivided (orth is scale-free)
  for (size_t i = 0; i < groups.size(); ++i) orth_(P.views[i]);  // P̂
  project_and_reduce(groups, P.views, ctx);
}

void PowerSgd::project_and_reduce(std::vector<ShapeGroup>& groups, const std::vector<at::Tensor>& P_hat,
                                  const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  std::vector<std::vector<int64_t>> q_shapes;
  for (size_t i = 0; i < groups.size(); ++i) q_shapes.push_back({groups[i].batch(), groups[i].n, P_hat[i].size(2)});
  FlatBuffer Qb = FlatBuffer::zeros(q_shapes, group_dtype(groups));
  for (size_t i = 0; i < groups.size(); ++i)
    linalg::skinny_matmul_t_out(Qb.views[i], groups[i].delta, P_hat[i]);  // Q_i = Δ_iᵀ P̂
  const FactorCodec qc = codec();
  const at::Tensor payload = qc.encode_(Qb);  // Q̃_i: Q_i as every rank decodes it (fp32: Q_i itself)
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    if (!g.residual.is_same(g.delta)) g.residual.copy_(g.delta);
    g.residual.baddbmm_(P_hat[i], Qb.views[i].transpose(1, 2), /*beta=*/1, /*alpha=*/-1);  // e_i = Δ_i − P̂ Q̃_iᵀ
  }
  qc.average_(comm, Qb, payload);  // collective 2: Σ n·k factor elements; Q = Σ_r Q̃_r / W

  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    linalg::skinny_expand_out(g.out, P_hat[i], Qb.views[i]);  // ĝ = P̂ Qᵀ
    store_state(g, compressor_keys::kQ, Qb.views[i]);
  }
}

void PowerSgd::two_allreduce_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  auto Q = start_q(groups, ctx);
  power_step(groups, Q, ctx);
}

void PowerSgd::spectrum_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  std::vector<int64_t> k, width;
  for (const auto& g : groups) {
    k.push_back(options_.auto_rank().hi(g.m, g.n));
    width.push_back(sketch_width(g.m, g.n));
  }
  std::vector<SketchSpectrum> spectrum;
  const std::vector<at::Tensor> P = distributed_rsvd_step(groups, ctx, k, width, kSketchPowerIters, &spectrum);
  for (size_t i = 0; i < groups.size(); ++i) {
    record_spectrum(groups[i], spectrum[i].sq_singular, spectrum[i].energy);
    if (options_.mode() == PowerSgdMode::kAlternating) store_state(groups[i], compressor_keys::kP, P[i]);
  }
}

// Alternating variant (§2.3, epfml/powersgd): one factor all-reduce per half power step.
// Even ℓ: P̂ = orth(P); Q_i = Δ_iᵀP̂; Δ_i -= P̂Q_iᵀ; Q = AR_sum(Q_i); approx += P̂Qᵀ/W.
// Odd ℓ:  Q̂ = orth(Q); P_i = Δ_iQ̂;  Δ_i -= P_iQ̂ᵀ; P = AR_sum(P_i); approx += PQ̂ᵀ/W.
// The deflated Δ_i is the local residual. P and Q are drawn once and never reset. With a low
// factor_dtype the sent factor (Q_i or P_i) is rounded to its decoded value before the deflation.
void PowerSgd::start_alternating_factors(std::vector<ShapeGroup>& groups, const StepContext& ctx,
                                         std::vector<at::Tensor>& P, std::vector<at::Tensor>& Q) const {
  for (auto& g : groups) {
    const int64_t k = k_of(g);
    if (has_state(g, compressor_keys::kP) && has_state(g, compressor_keys::kQ)) {
      P.push_back(leading_columns(g, compressor_keys::kP, k));
      Q.push_back(leading_columns(g, compressor_keys::kQ, k));
    } else {
      P.push_back(shared_randn({g.batch(), g.m, k}, ctx.seed, ctx.compressed_step, stream_id(Stream::kInitP, g.ordinal),
                               g.delta.scalar_type()));
      Q.push_back(shared_randn({g.batch(), g.n, k}, ctx.seed, ctx.compressed_step, stream_id(Stream::kInitQ, g.ordinal),
                               g.delta.scalar_type()));
    }
  }
}

void PowerSgd::alternating_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  std::vector<at::Tensor> P, Q, D;  // [b, m, k], [b, n, k], working Δ_i [b, m, n]
  start_alternating_factors(groups, ctx, P, Q);
  for (auto& g : groups) {
    g.residual.copy_(g.delta);  // deflated in place below: Δ_i − (what was sent) is e_i
    D.push_back(g.residual);
    g.out.zero_();
  }
  for (int64_t j = 0; j < options_.iters_per_step(); ++j)
    alternating_half_step(groups, ctx, ctx.compressed_step * options_.iters_per_step() + j, P, Q, D);
  for (size_t i = 0; i < groups.size(); ++i) {
    store_state(groups[i], compressor_keys::kP, P[i]);
    store_state(groups[i], compressor_keys::kQ, Q[i]);
  }
}

// Every group's product first, then the encoding (the own factor rounded to its decoded value),
// then the deflations with that rounded factor, then the one collective. The groups are
// independent, so for fp32 this is the arithmetic of one loop doing all three per group.
void PowerSgd::alternating_half_step(std::vector<ShapeGroup>& groups, const StepContext& ctx, int64_t l,
                                     std::vector<at::Tensor>& P, std::vector<at::Tensor>& Q,
                                     std::vector<at::Tensor>& D) const {
  comm::Communicator& comm = *ctx.comm;
  const double W = comm.size();
  const bool even = l % 2 == 0;
  std::vector<std::vector<int64_t>> shapes;
  for (size_t i = 0; i < groups.size(); ++i) shapes.push_back((even ? Q[i] : P[i]).sizes().vec());
  FlatBuffer buf = FlatBuffer::zeros(shapes, groups[0].delta.scalar_type());
  for (size_t i = 0; i < groups.size(); ++i) {
    at::Tensor& fixed = even ? P[i] : Q[i];  // orthogonalized factor, [b, m|n, k]
    orth_(fixed);
    revive_zero_columns_(fixed, ctx, stream_id(even ? Stream::kInitP : Stream::kInitQ, groups[i].ordinal));
    if (even) at::bmm_out(buf.views[i], D[i].transpose(1, 2), fixed);  // Q_i = Δ_iᵀ P̂
    else at::bmm_out(buf.views[i], D[i], fixed);                       // P_i = Δ_i Q̂
  }
  const FactorCodec fc = codec();
  const at::Tensor payload = fc.encode_(buf);  // the sent factor as decoded (fp32: unchanged)
  for (size_t i = 0; i < groups.size(); ++i) {
    if (even) D[i].baddbmm_(P[i], buf.views[i].transpose(1, 2), 1, -1);  // Δ_i -= P̂ Q̃_iᵀ
    else D[i].baddbmm_(buf.views[i], Q[i].transpose(1, 2), 1, -1);       // Δ_i -= P̃_i Q̂ᵀ
  }
  fc.sum_(comm, buf, payload);  // the one factor collective of the half step
  for (size_t i = 0; i < groups.size(); ++i) {
    (even ? Q[i] : P[i]) = buf.views[i].clone();
    groups[i].out.baddbmm_(P[i], Q[i].transpose(1, 2), 1, 1.0 / W);
  }
}

void PowerSgd::form_pending_delta(std::vector<ShapeGroup>& groups) {
  for (auto& g : groups)
    if (g.pending.defined()) {
      g.delta.add_(g.pending);
      g.pending = at::Tensor();
    }
}

void PowerSgd::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (measures_spectrum(ctx.compressed_step)) {
    form_pending_delta(groups);
    spectrum_step(groups, ctx);
    return;
  }
  switch (options_.mode()) {
    case PowerSgdMode::kTwoAllReduce:
      two_allreduce_step(groups, ctx);
      return;
    case PowerSgdMode::kAlternating:
      form_pending_delta(groups);
      alternating_step(groups, ctx);
      return;
  }
}

}  // namespace lowrank
