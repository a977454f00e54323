// GreedyLore: see the walk-through in include/lowrank/compressors/greedylore.h (docs/algorithms.md §4).
#include "lowrank/compressors/greedylore.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/group_ops.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/skinny.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

void GreedyLoreOptions::validate() const {
  TORCH_CHECK(rank().automatic || rank().value >= 1, "greedylore: rank must be >= 1 or auto, got ", rank());
  auto_rank().validate("greedylore", rank().automatic);
  TORCH_CHECK(refresh_period() >= 1, "greedylore: refresh_period (tau) must be >= 1, got ", refresh_period());
  TORCH_CHECK(dense_steps() >= 0, "greedylore: dense_steps must be >= 0, got ", dense_steps());
  TORCH_CHECK(probes() >= 1 && probes() <= GreedyLore::kMaxProbes,
              "greedylore: probes must lie in [1, ", GreedyLore::kMaxProbes, "], got ",
              probes());
}

bool GreedyLore::holds_back_in_bursts(int64_t m, int64_t n) const {
  const int64_t a = std::min(m, n), k = k_of(m, n);
  return k > 0 && a >= kBurstRatio * k && options_.refresh_period() * k > a;  // τ > a/k
}

std::string GreedyLore::stability_warning(const std::vector<MatrixInfo>& matrices) const {
  std::ostringstream names;
  int64_t count = 0, worst = 0;
  for (const auto& mat : matrices) {
    if (!holds_back_in_bursts(mat.m, mat.n)) continue;
    const int64_t a = std::min(mat.m, mat.n), k = k_of(mat.m, mat.n);
    names << (count++ ? ", " : "") << "'" << mat.name << "' (" << mat.m << "x" << mat.n << ": k=" << k << " of a=" << a
          << " directions)";
    worst = std::max(worst, a / k);
  }
  if (count == 0) return "";
  std::ostringstream os;
  os << "greedylore: " << names.str() << " send" << (count == 1 ? "s" : "")
     << " a small share of a basis that is refreshed only every " << options_.refresh_period()
     << " steps (a/k up to " << worst << " >= " << kBurstRatio << " and refresh_period > a/k), so the error buffer "
     << "holds parts of the update back and releases them in bursts, which heavy-ball momentum can turn into "
     << "divergence; where this was measured, no GreedyLore setting at comparable traffic trained as well as "
     << "PowerSGD (docs/results.md, \"Why GreedyLore diverges\"). "
     << "If this run diverges: a lower lr, --uncompressed-names for these matrices, "
     << "refresh_period < a/k (more traffic), or --compressor powersgd";
  return os.str();
}

std::string GreedyLore::trails_warning() {
  return "greedylore: where it was measured (the example CNN and the tiny LM, docs/results.md, \"GreedyLore's "
         "operating point\"), it trained less well than powersgd at the same rank and about the same traffic, "
         "even at these defaults: its k directions come from a basis that is recomputed only every "
         "refresh_period steps, so they hold less of each step's gradient than PowerSGD's subspace, which "
         "follows the gradient at every step (a higher relative_error in metrics.csv). For the best accuracy "
         "per byte use --compressor powersgd";
}

std::vector<std::string> GreedyLore::start_warnings(const std::vector<MatrixInfo>& compressed,
                                                    bool error_feedback) const {
  if (compressed.empty()) return {};
  std::vector<std::string> out = {trails_warning()};
  if (!error_feedback) return out;
  std::string w = stability_warning(compressed);
  if (!w.empty()) out.push_back(std::move(w));
  return out;
}

double GreedyLore::size_test_bytes(int64_t m, int64_t n) const {
  const int64_t b = std::max(m, n), k = automatic() ? options_.auto_rank().lo(m, n) : k_of(m, n);
  if (exact_scores()) return 4.0 * static_cast<double>(k * b);  // no factor of its own is sent
  return static_cast<double>(factor_bytes(options_.factor_dtype(), b, k, at::kFloat));  // fp32: 4·k·b
}

int64_t GreedyLore::wire_bytes(int64_t m, int64_t n, int64_t step, at::ScalarType work) const {
  return bytes_at_rank(m, n, k_of(m, n), step, work);
}

int64_t GreedyLore::wire_bytes_at(const TensorDict& state, int64_t m, int64_t n, int64_t step,
                                  at::ScalarType work) const {
  return bytes_at_rank(m, n, rank_at(state, m, n), step, work);
}

int64_t GreedyLore::rank_at(const TensorDict& state, int64_t m, int64_t n) const {
  return automatic() ? planned_rank(options_.auto_rank(), state, m, n) : k_of(m, n);
}

RankCost GreedyLore::rank_cost(at::ScalarType work) const {
  return [this, work](int64_t m, int64_t n, int64_t k) { return normal_step_bytes(m, n, k, work); };
}

void GreedyLore::plan_ranks(std::vector<PlannedMatrix>& matrices, int64_t step, int64_t fixed_bytes,
                            at::ScalarType work) const {
  apply_auto_ranks(options_.auto_rank(), matrices, step, fixed_bytes, rank_cost(work));
}

void GreedyLore::check_rank_plan(const std::vector<PlannedMatrix>& matrices, int64_t fixed_bytes,
                                 at::ScalarType work) const {
  if (automatic()) check_rank_budget(options_.auto_rank(), name(), matrices, fixed_bytes, rank_cost(work));
}

int64_t GreedyLore::bytes_at_rank(int64_t m, int64_t n, int64_t k, int64_t step, at::ScalarType work) const {
  if (is_warmup(step) || is_refresh(step)) return m * n * static_cast<int64_t>(c10::elementSize(work));
  return normal_step_bytes(m, n, k, work);
}

int64_t GreedyLore::normal_step_bytes(int64_t m, int64_t n, int64_t k, at::ScalarType work) const {
  const int64_t a = std::min(m, n), b = std::max(m, n);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(work));
  const int64_t coefficients = factor_bytes(options_.factor_dtype(), b, k, work);  // R_i [k, b]; fp32: k·b·elem
  if (options_.select() == GreedySelect::kRandom) return coefficients;
  if (options_.scores() == GreedyScores::kExact) return a * b * elem;
  return coefficients + a * score_columns() * elem;
}

namespace {

// The a×b view of a [batch, m, n] tensor: transposed when m > n (§4.2).
at::Tensor oriented(const at::Tensor& t) { return t.size(1) > t.size(2) ? t.transpose(1, 2) : t; }

// J per matrix, [batch, k]: the k largest energies, ties to the smaller index, sorted ascending.
at::Tensor greedy_indices(const at::Tensor& energy, int64_t k, const ShapeGroup& group, int64_t step) {
  at::Tensor e = energy.to(at::kDouble).cpu().contiguous();  // [batch, a]
  TORCH_CHECK(at::isfinite(e).all().item<bool>(), "greedylore: non-finite direction scores for '",
              c10::Join("', '", group.names), "'",
              " at step ", step,
              ": the gradient or the error-feedback buffer holds inf/NaN, i.e. training diverged. Between refreshes "
              "the basis is fixed and only k of its a directions are sent per step, so the error buffer can hold "
              "back parts of the update for many steps; a lower learning rate or a shorter refresh_period keeps "
              "that stable (docs/compressors.md, GreedyLore stability)");
  const int64_t batch = e.size(0), a = e.size(1);
  at::Tensor J = at::empty({batch, k}, at::kLong);
  auto ea = e.accessor<double, 2>();
  auto Ja = J.accessor<int64_t, 2>();
  std::vector<int64_t> idx(a);
  for (int64_t r = 0; r < batch; ++r) {
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return ea[r][x] > ea[r][y]; });
    std::sort(idx.begin(), idx.begin() + k);
    for (int64_t j = 0; j < k; ++j) Ja[r][j] = idx[j];
  }
  return J.to(energy.device());
}

// select = random: k distinct columns per matrix from the shared stream, sorted ascending.
at::Tensor random_indices(int64_t batch, int64_t a, int64_t k, const StepContext& ctx, int64_t ordinal) {
  auto gen = shared_generator(ctx.seed, ctx.compressed_step, stream_id(Stream::kSelect, ordinal));
  std::vector<at::Tensor> rows;
  for (int64_t r = 0; r < batch; ++r)
    rows.push_back(std::get<0>(at::sort(at::randperm(a, gen, at::kLong).narrow(0, 0, k))));
  return at::stack(rows);
}

}  // namespace

void GreedyLore::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (is_warmup(ctx.compressed_step)) dense_step(groups, ctx, /*with_basis=*/false);
  else if (is_refresh(ctx.compressed_step)) dense_step(groups, ctx, /*with_basis=*/true);
  else greedy_step(groups, ctx);
}

void GreedyLore::dense_step(std::vector<ShapeGroup>& groups, const StepContext& ctx, bool with_basis) const {
  // A warm-up step's H_i is g_i: its error buffer is still 0 (zeroed by every dense step before it).
  const bool raw = options_.refresh_input() == RefreshInput::kDiscard;
  for (const auto& g : groups)
    TORCH_INTERNAL_ASSERT(!raw || g.grad.defined(), "greedylore: the reducer passed no raw gradient");
  // H̄ (or the mean raw gradient): Σ a·b, all matrices in one buffer
  FlatBuffer mean = all_reduce_average(*ctx.comm, groups, raw ? &ShapeGroup::grad : &ShapeGroup::delta);
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    if (with_basis) {
      const linalg::SingularPairs usv = linalg::left_singular_basis_pairs(oriented(mean.views[i]));
      store_state(g, compressor_keys::kU, usv.U);  // [batch, a, a]
      if (automatic())  // rank=auto: every singular value of H̄, and ‖H̄‖² exactly
        record_spectrum(g, usv.S.to(at::kDouble).pow(2), mean.views[i].to(at::kDouble).pow(2).sum({1, 2}));
    }
    g.out.copy_(mean.views[i]);
    g.residual.zero_();  // E_i = 0
  }
}

struct GreedyLore::Factors {
  at::Tensor U;  // [batch, a, a], the basis
  at::Tensor H;  // [batch, a, b], H_i oriented
  at::Tensor Z;  // [batch, a, b], Z_i = UᵀH_i; only when forms_z()
  at::Tensor J;  // [batch, k], the selected directions, ascending
  at::Tensor P;  // [batch, a, k], U[:, J]
  at::Tensor R;  // [batch, k, b], R_i = PᵀH_i (R̃_i, as decoded, for a low factor_dtype), then R̄
};

bool GreedyLore::exact_scores() const {
  return options_.select() == GreedySelect::kGreedy && options_.scores() == GreedyScores::kExact;
}

bool GreedyLore::forms_z() const {
  return options_.select() == GreedySelect::kGreedy && options_.scores() != GreedyScores::kSharedProbe;
}

void GreedyLore::greedy_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  std::vector<Factors> f = load_factors(groups, ctx);
  FlatBuffer scores;  // collective 1's result; Z̄ for exact scores
  switch (options_.select()) {
    case GreedySelect::kGreedy:
      scores = select_greedy(groups, f, ctx);
      break;
    case GreedySelect::kRandom:
      for (size_t i = 0; i < groups.size(); ++i)
        f[i].J = random_indices(groups[i].batch(), f[i].H.size(1), k_of(groups[i]), ctx,
                                groups[i].ordinal);
      break;
  }
  for (size_t i = 0; i < groups.size(); ++i) project_local(groups[i], f[i]);
  at::Tensor payload;
  FlatBuffer Rb;  // collective 2's buffer; none for exact scores, whose R̄ is read off Z̄
  if (!exact_scores()) Rb = pack_selected(groups, f, payload);
  for (size_t i = 0; i < groups.size(); ++i) {
    take_residual(groups[i], f[i]);  // before R_i is reduced
    if (exact_scores()) f[i].R = scores.views[i].gather(1, f[i].J.unsqueeze(2).expand_as(f[i].R));  // R̄ = Z̄[J, :]
  }
  reduce_selected(groups, f, Rb, payload, ctx);
}

std::vector<GreedyLore::Factors> GreedyLore::load_factors(const std::vector<ShapeGroup>& groups,
                                                          const StepContext& ctx) const {
  std::vector<Factors> f(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    f[i].U = refreshed_state(groups[i], compressor_keys::kU, "greedylore: no basis U", ctx.compressed_step);
    f[i].H = oriented(groups[i].delta);
    if (forms_z()) f[i].Z = at::bmm(f[i].U.transpose(1, 2), f[i].H);
  }
  return f;
}

at::Tensor GreedyLore::local_scores(const ShapeGroup& g, const Factors& f, const StepContext& ctx,
                                    at::ScalarType dtype) const {
  const uint64_t sid = stream_id(Stream::kProbe, g.ordinal);
  switch (options_.scores()) {
    case GreedyScores::kExact:
      return f.Z;
    case GreedyScores::kProbe:
      return (f.Z * shared_randn(f.Z.sizes(), ctx.seed, ctx.compressed_step, sid, dtype)).sum(2);  // λ_i[j] = u_jᵀ H_i v_j
    case GreedyScores::kUniformProbe: {
      auto gen = shared_generator(ctx.seed, ctx.compressed_step, sid);
      return (f.Z * at::rand(f.Z.sizes(), gen, at::TensorOptions().dtype(dtype))).sum(2);
    }
    case GreedyScores::kSharedProbe: {
      const int64_t p = options_.probes();
      at::Tensor V = shared_randn({f.H.size(0), f.H.size(2), p}, ctx.seed, ctx.compressed_step, sid, dtype);
      at::Tensor HV = at::empty({f.H.size(0), f.H.size(1), p}, f.H.options());
      linalg::skinny_matmul_out(HV, f.H, V);                   // one pass over H_i
      return at::bmm(f.U.transpose(1, 2), HV);                 // Uᵀ(H_i V), [batch, a, p]
    }
    case GreedyScores::kLocalEnergy:
      return (f.Z * f.Z).sum(2);  // ‖u_jᵀH_i‖²
  }
  TORCH_INTERNAL_ASSERT(false, "greedylore: unhandled scores");
}

at::Tensor GreedyLore::energy_of(const at::Tensor& mean_scores) const {
  switch (options_.scores()) {
    case GreedyScores::kExact:                                             // ‖u_jᵀH̄‖²
    case GreedyScores::kSharedProbe: return (mean_scores * mean_scores).sum(2);  // Σ_l λ̄_jl²
    case GreedyScores::kLocalEnergy: return mean_scores;                  // already an energy
    default: return mean_scores * mean_scores;                            // λ̄_j²
  }
}

FlatBuffer GreedyLore::select_greedy(const std::vector<ShapeGroup>& groups, std::vector<Factors>& f,
                                     const StepContext& ctx) const {
  const auto dtype = group_dtype(groups);
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& w : f) {
    if (exact_scores()) shapes.push_back({w.H.size(0), w.H.size(1), w.H.size(2)});
    else if (options_.scores() == GreedyScores::kSharedProbe) shapes.push_back({w.H.size(0), w.H.size(1), options_.probes()});
    else shapes.push_back({w.H.size(0), w.H.size(1)});
  }
  FlatBuffer S = FlatBuffer::zeros(shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) S.views[i].copy_(local_scores(groups[i], f[i], ctx, dtype));
  all_reduce_average_(*ctx.comm, S.flat);  // collective 1: Σ a (exact: Σ a·b)
  for (size_t i = 0; i < groups.size(); ++i)
    f[i].J = greedy_indices(energy_of(S.views[i]), k_of(groups[i]), groups[i], ctx.compressed_step);
  return S;
}

void GreedyLore::project_local(ShapeGroup& g, Factors& f) const {
  const int64_t batch = g.batch(), a = f.H.size(1), b = f.H.size(2), k = f.J.size(1);
  f.P = f.U.gather(2, f.J.unsqueeze(1).expand({batch, a, k}));  // U[:, J]
  if (forms_z()) {
    f.R = f.Z.gather(1, f.J.unsqueeze(2).expand({batch, k, b}));
  } else {  // R_i = PᵀH_i = (H_iᵀP)ᵀ, one pass over H_i
    at::Tensor Rt = at::empty({batch, b, k}, f.H.options());
    linalg::skinny_matmul_t_out(Rt, f.H, f.P);
    f.R = Rt.transpose(1, 2);
  }
}

FlatBuffer GreedyLore::pack_selected(const std::vector<ShapeGroup>& groups, std::vector<Factors>& f,
                                     at::Tensor& payload) const {
  std::vector<std::vector<int64_t>> r_shapes;
  for (const auto& w : f) r_shapes.push_back(w.R.sizes().vec());
  FlatBuffer Rb = FlatBuffer::zeros(r_shapes, group_dtype(groups));
  for (size_t i = 0; i < f.size(); ++i) Rb.views[i].copy_(f[i].R);
  const FactorCodec codec(options_.factor_dtype(), FactorAxis::kRows);
  payload = codec.encode_(Rb);  // R̃_i: R_i as every rank decodes it
  if (!codec.exact())
    for (size_t i = 0; i < f.size(); ++i) f[i].R = Rb.views[i];
  return Rb;
}

void GreedyLore::take_residual(ShapeGroup& g, const Factors& f) const {
  at::Tensor E = oriented(g.residual);
  if (g.residual.data_ptr() != g.delta.data_ptr()) E.copy_(f.H);
  E.baddbmm_(f.P, f.R, /*beta=*/1, /*alpha=*/-1);  // E_i = H_i − P R̃_i
}

void GreedyLore::reduce_selected(std::vector<ShapeGroup>& groups, std::vector<Factors>& f, const FlatBuffer& Rb,
                                 const at::Tensor& payload, const StepContext& ctx) const {
  if (!exact_scores()) {
    FactorCodec(options_.factor_dtype(), FactorAxis::kRows).average_(*ctx.comm, Rb, payload);  // collective 2: Σ k·b
    for (size_t i = 0; i < f.size(); ++i) f[i].R = Rb.views[i];
  }
  for (size_t i = 0; i < groups.size(); ++i) {  // ĝ = P R̄
    at::Tensor out = oriented(groups[i].out);
    linalg::skinny_expand_out(out, f[i].P, f[i].R.transpose(1, 2));
  }
}

}  // namespace lowrank
