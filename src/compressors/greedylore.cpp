// GreedyLore: see the walk-through in include/lowrank/compressors/greedylore.h (docs/algorithms.md §4).
#include "lowrank/compressors/greedylore.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/compressors/shared_random.h"
#include "lowrank/linalg/skinny.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

GreedyLoreOptions GreedyLoreOptions::from_config(const Config& c) {
  GreedyLoreOptions o;
  o.rank(c.get("rank", o.rank()));
  o.refresh_period(c.get("refresh_period", o.refresh_period()));
  o.scores(c.get("scores", o.scores()));
  o.select(c.get("select", o.select()));
  o.refresh_input(c.get("refresh_input", o.refresh_input()));
  return o;
}

void GreedyLoreOptions::validate() const {
  TORCH_CHECK(rank() >= 1, "greedylore: rank must be >= 1, got ", rank());
  TORCH_CHECK(refresh_period() >= 1, "greedylore: refresh_period (tau) must be >= 1, got ", refresh_period());
  const auto& s = scores();
  TORCH_CHECK(s == "probe" || s == "shared_probe" || s == "local_energy" || s == "uniform_probe" || s == "exact",
              "greedylore: scores '", s, "' is not one of probe, shared_probe, local_energy, uniform_probe, exact");
  TORCH_CHECK(select() == "greedy" || select() == "random", "greedylore: select '", select(),
              "' is not one of greedy, random");
  TORCH_CHECK(refresh_input() == "corrected" || refresh_input() == "discard", "greedylore: refresh_input '",
              refresh_input(), "' is not one of corrected, discard");
}

std::ostream& operator<<(std::ostream& os, const GreedyLoreOptions& o) {
  return os << "rank=" << o.rank() << " refresh_period=" << o.refresh_period() << " scores=" << o.scores()
            << " select=" << o.select() << " refresh_input=" << o.refresh_input();
}

GreedyLore::GreedyLore(GreedyLoreOptions options) : options_(std::move(options)) { options_.validate(); }

std::unique_ptr<Compressor> GreedyLore::create(const Config& config) {
  return std::make_unique<GreedyLore>(GreedyLoreOptions::from_config(config));
}

std::string GreedyLore::describe() const {
  std::ostringstream os;
  os << name() << "(" << options_ << ")";
  return os.str();
}

bool GreedyLore::holds_back_in_bursts(int64_t m, int64_t n) const {
  const int64_t a = std::min(m, n), k = k_of(m, n);
  return k > 0 && a >= kBurstRatio * k && options_.refresh_period() * k > a;  // τ > a/k
}

std::string GreedyLore::stability_warning(
    const std::vector<std::tuple<std::string, int64_t, int64_t>>& matrices) const {
  std::ostringstream names;
  int64_t count = 0, worst = 0;
  for (const auto& t : matrices) {
    const int64_t m = std::get<1>(t), n = std::get<2>(t);
    if (!holds_back_in_bursts(m, n)) continue;
    const int64_t a = std::min(m, n);
    names << (count++ ? ", " : "") << "'" << std::get<0>(t) << "' (" << m << "x" << n << ": k=" << k_of(m, n)
          << " of a=" << a << " directions)";
    worst = std::max(worst, a / k_of(m, n));
  }
  if (count == 0) return "";
  std::ostringstream os;
  os << "greedylore: " << names.str() << " send" << (count == 1 ? "s" : "")
     << " a small share of a basis that is refreshed only every " << options_.refresh_period()
     << " steps (a/k up to " << worst << " >= " << kBurstRatio << " and refresh_period > a/k), so the error buffer "
     << "holds parts of the update back and releases them in bursts. With SGD momentum 0.9 at lr 0.05 on the "
     << "example CNN that diverged (3 epochs) or trailed PowerSGD by 7.5 points (1 epoch), and no GreedyLore "
     << "setting at comparable traffic (nor EF21 error feedback) came within 1 point of PowerSGD there "
     << "(docs/results.md, \"Why GreedyLore diverges\"). "
     << "If this run diverges: a lower lr (0.02 trained), --uncompressed-names for these matrices, "
     << "refresh_period < a/k (more traffic), or --compressor powersgd";
  return os.str();
}

int64_t GreedyLore::size_test_floats(int64_t m, int64_t n) const { return k_of(m, n) * std::max(m, n); }

int64_t GreedyLore::wire_floats(int64_t m, int64_t n, int64_t step) const {
  const int64_t a = std::min(m, n), b = std::max(m, n), k = k_of(m, n);
  if (is_refresh(step)) return a * b;
  if (options_.select() == "random") return k * b;
  if (options_.scores() == "exact") return a * b;
  return k * b + a;
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
  auto gen = shared_generator(ctx.seed, ctx.step, stream_id(Stream::kSelect, ordinal));
  std::vector<at::Tensor> rows;
  for (int64_t r = 0; r < batch; ++r)
    rows.push_back(std::get<0>(at::sort(at::randperm(a, gen, at::kLong).narrow(0, 0, k))));
  return at::stack(rows);
}

}  // namespace

void GreedyLore::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (is_refresh(ctx.step)) refresh_step(groups, ctx);
  else greedy_step(groups, ctx);
}

void GreedyLore::refresh_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  const bool discard = options_.refresh_input() == "discard";
  const auto dtype = groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
  std::vector<std::vector<int64_t>> shapes;
  for (auto& g : groups) shapes.push_back({g.batch(), g.m, g.n});
  FlatBuffer mean = FlatBuffer::zeros(shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) {
    TORCH_INTERNAL_ASSERT(!discard || groups[i].grad.defined(), "greedylore: the reducer passed no raw gradient");
    mean.views[i].copy_(discard ? groups[i].grad : groups[i].delta);
  }
  comm.all_reduce_(mean.flat);  // Σ a·b, all matrices in one buffer
  if (comm.size() > 1) mean.flat.div_(comm.size());  // H̄
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    at::Tensor U = linalg::left_singular_basis(oriented(mean.views[i]));  // [batch, a, a]
    for (int64_t j = 0; j < g.batch(); ++j) (*g.states[j])["U"] = U[j].clone();
    g.out.copy_(mean.views[i]);
    g.residual.zero_();  // E_i = 0
  }
}

void GreedyLore::greedy_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  const std::string& scores = options_.scores();
  const bool random_select = options_.select() == "random";
  const bool exact = !random_select && scores == "exact";
  const bool need_z = !random_select && scores != "shared_probe";  // Z_i = UᵀH_i, full [a, b]
  const auto dtype = groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
  const size_t G = groups.size();

  std::vector<at::Tensor> U(G), H(G), Z(G);
  for (size_t i = 0; i < G; ++i) {
    auto& g = groups[i];
    std::vector<at::Tensor> us;
    for (int64_t j = 0; j < g.batch(); ++j) {
      TORCH_CHECK(g.states[j]->count("U"), "greedylore: no basis U for '", g.names[j], "' at compressed step ",
                  ctx.step, "; a refresh (step % refresh_period == 0) must come first");
      us.push_back(g.states[j]->at("U"));
    }
    U[i] = at::stack(us);  // [batch, a, a]
    H[i] = oriented(g.delta);  // [batch, a, b]
    if (need_z) Z[i] = at::bmm(U[i].transpose(1, 2), H[i]);
  }

  // Collective 1: scores (all matrices in one buffer); exact scores all-reduce Z itself.
  std::vector<at::Tensor> J(G);
  FlatBuffer S;
  if (!random_select) {
    std::vector<std::vector<int64_t>> shapes;
    for (auto& h : H) {
      if (exact) shapes.push_back({h.size(0), h.size(1), h.size(2)});
      else shapes.push_back({h.size(0), h.size(1)});
    }
    S = FlatBuffer::zeros(shapes, dtype);
    for (size_t i = 0; i < G; ++i) {
      const auto& g = groups[i];
      const uint64_t sid = stream_id(Stream::kProbe, g.ordinal);
      if (exact) {
        S.views[i].copy_(Z[i]);
      } else if (scores == "probe") {
        at::Tensor V = shared_randn(Z[i].sizes(), ctx.seed, ctx.step, sid, dtype);
        S.views[i].copy_((Z[i] * V).sum(2));  // λ_i[j] = u_jᵀ H_i v_j
      } else if (scores == "uniform_probe") {
        auto gen = shared_generator(ctx.seed, ctx.step, sid);
        at::Tensor V = at::rand(Z[i].sizes(), gen, at::TensorOptions().dtype(dtype));
        S.views[i].copy_((Z[i] * V).sum(2));
      } else if (scores == "shared_probe") {
        at::Tensor v = shared_randn({H[i].size(0), H[i].size(2), 1}, ctx.seed, ctx.step, sid, dtype);
        at::Tensor Hv = at::empty({H[i].size(0), H[i].size(1), 1}, H[i].options());
        linalg::skinny_matmul_out(Hv, H[i], v);                                // one pass over H_i
        S.views[i].copy_(at::bmm(U[i].transpose(1, 2), Hv).squeeze(2));  // Uᵀ(H_i v)
      } else {  // local_energy
        S.views[i].copy_((Z[i] * Z[i]).sum(2));  // ‖u_jᵀH_i‖²
      }
    }
    comm.all_reduce_(S.flat);
    if (comm.size() > 1) S.flat.div_(comm.size());
    for (size_t i = 0; i < G; ++i) {
      const int64_t k = k_of(groups[i].m, groups[i].n);
      at::Tensor energy;
      if (exact) energy = (S.views[i] * S.views[i]).sum(2);      // ‖u_jᵀH̄‖²
      else if (scores == "local_energy") energy = S.views[i];    // already an energy
      else energy = S.views[i] * S.views[i];                     // λ̄_j²
      J[i] = greedy_indices(energy, k, groups[i], ctx.step);
    }
  } else {
    for (size_t i = 0; i < G; ++i) {
      const auto& g = groups[i];
      J[i] = random_indices(g.batch(), H[i].size(1), k_of(g.m, g.n), ctx, g.ordinal);
    }
  }

  // Local factors and residuals; collective 2: R (skipped for exact scores, R̄ = Z̄[J, :]).
  std::vector<at::Tensor> P(G), R(G);
  std::vector<std::vector<int64_t>> r_shapes;
  for (size_t i = 0; i < G; ++i) {
    auto& g = groups[i];
    const int64_t batch = g.batch(), a = H[i].size(1), b = H[i].size(2), k = J[i].size(1);
    P[i] = U[i].gather(2, J[i].unsqueeze(1).expand({batch, a, k}));  // U[:, J], [batch, a, k]
    at::Tensor rows = J[i].unsqueeze(2).expand({batch, k, b});
    if (need_z) {
      R[i] = Z[i].gather(1, rows);
    } else {  // R_i = PᵀH_i = (H_iᵀP)ᵀ, one pass over H_i
      at::Tensor Rt = at::empty({batch, b, k}, H[i].options());
      linalg::skinny_matmul_t_out(Rt, H[i], P[i]);
      R[i] = Rt.transpose(1, 2);
    }
    at::Tensor E = oriented(g.residual);
    if (g.residual.data_ptr() != g.delta.data_ptr()) E.copy_(H[i]);
    E.baddbmm_(P[i], R[i], /*beta=*/1, /*alpha=*/-1);  // E_i = H_i − P R_i
    if (exact) R[i] = S.views[i].gather(1, rows);  // R̄ = Z̄[J, :]
    r_shapes.push_back({batch, k, b});
  }
  if (!exact) {
    FlatBuffer Rb = FlatBuffer::zeros(r_shapes, dtype);
    for (size_t i = 0; i < G; ++i) Rb.views[i].copy_(R[i]);
    comm.all_reduce_(Rb.flat);  // Σ k·b
    if (comm.size() > 1) Rb.flat.div_(comm.size());
    for (size_t i = 0; i < G; ++i) R[i] = Rb.views[i];
  }
  for (size_t i = 0; i < G; ++i) {  // ĝ = P R̄
    at::Tensor out = oriented(groups[i].out);
    linalg::skinny_expand_out(out, P[i], R[i].transpose(1, 2));
  }
}

}  // namespace lowrank
