// GaLore-style lazy SVD: see the walk-through in include/lowrank/compressors/galore.h (docs/algorithms.md §5).
#include "lowrank/compressors/galore.h"

#include <cmath>
#include <sstream>

#include "lowrank/compressors/flat_buffer.h"
#include "lowrank/linalg/svd.h"

namespace lowrank {

GaLoreOptions GaLoreOptions::from_config(const Config& c) {
  GaLoreOptions o;
  o.rank(c.get("rank", o.rank()));
  o.refresh_period(c.get("refresh_period", o.refresh_period()));
  o.side(c.get("side", o.side()));
  o.refresh_output(c.get("refresh_output", o.refresh_output()));
  o.galore_scale(c.get("galore_scale", o.galore_scale()));
  return o;
}

void GaLoreOptions::validate() const {
  TORCH_CHECK(rank() >= 1, "galore: rank must be >= 1, got ", rank());
  TORCH_CHECK(refresh_period() >= 1, "galore: refresh_period (tau) must be >= 1, got ", refresh_period());
  TORCH_CHECK(side() == "larger" || side() == "smaller", "galore: side '", side(), "' is not one of larger, smaller");
  TORCH_CHECK(refresh_output() == "projected" || refresh_output() == "dense", "galore: refresh_output '",
              refresh_output(), "' is not one of projected, dense");
  TORCH_CHECK(std::isfinite(galore_scale()) && galore_scale() > 0, "galore: galore_scale must be a finite number > 0, got ",
              galore_scale());
}

std::ostream& operator<<(std::ostream& os, const GaLoreOptions& o) {
  return os << "rank=" << o.rank() << " refresh_period=" << o.refresh_period() << " side=" << o.side()
            << " refresh_output=" << o.refresh_output() << " galore_scale=" << o.galore_scale();
}

GaLore::GaLore(GaLoreOptions options) : options_(std::move(options)) { options_.validate(); }

std::unique_ptr<Compressor> GaLore::create(const Config& config) {
  return std::make_unique<GaLore>(GaLoreOptions::from_config(config));
}

std::string GaLore::describe() const {
  std::ostringstream os;
  os << name() << "(" << options_ << ")";
  return os.str();
}

int64_t GaLore::size_test_floats(int64_t m, int64_t n) const {
  return k_of(m, n) * (options_.side() == "larger" ? std::min(m, n) : std::max(m, n));
}

int64_t GaLore::wire_floats(int64_t m, int64_t n, int64_t step) const {
  return is_refresh(step) ? m * n : size_test_floats(m, n);
}

at::Tensor GaLore::oriented(const at::Tensor& t) const {
  return transposes(t.size(1), t.size(2)) ? t.transpose(1, 2) : t;
}

void GaLore::compress(std::vector<ShapeGroup>& groups, const StepContext& ctx) {
  if (is_refresh(ctx.step)) refresh_step(groups, ctx);
  else projected_step(groups, ctx);
}

void GaLore::refresh_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  const double alpha = options_.galore_scale();
  const bool dense = options_.refresh_output() == "dense";
  const auto dtype = groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
  std::vector<std::vector<int64_t>> shapes;
  for (auto& g : groups) shapes.push_back({g.batch(), g.m, g.n});
  FlatBuffer mean = FlatBuffer::zeros(shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) mean.views[i].copy_(groups[i].delta);
  comm.all_reduce_(mean.flat);  // Σ m·n, all matrices in one buffer
  if (comm.size() > 1) mean.flat.div_(comm.size());  // Ḡ
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    const at::Tensor G = oriented(mean.views[i]);                                 // [batch, rows, cols]
    const at::Tensor P = linalg::top_left_singular_vectors(G, k_of(g.m, g.n));   // [batch, rows, k]
    for (int64_t j = 0; j < g.batch(); ++j) (*g.states[j])["P"] = P[j].clone();
    if (dense) {
      g.out.copy_(mean.views[i]);
      g.residual.zero_();
      continue;
    }
    const at::Tensor D = oriented(g.delta);
    const at::Tensor Pt = P.transpose(1, 2);
    oriented(g.out).copy_(at::bmm(P, at::bmm(Pt, G)).mul_(alpha));                            // α·PPᵀḠ
    oriented(g.residual).copy_(at::baddbmm(D, P, at::bmm(Pt, D), /*beta=*/1, /*alpha=*/-alpha));  // Δ_i − α·PPᵀΔ_i
  }
}

void GaLore::projected_step(std::vector<ShapeGroup>& groups, const StepContext& ctx) const {
  comm::Communicator& comm = *ctx.comm;
  const double alpha = options_.galore_scale();
  const auto dtype = groups.empty() ? at::kFloat : groups[0].delta.scalar_type();
  std::vector<at::Tensor> P;
  std::vector<std::vector<int64_t>> r_shapes;
  for (auto& g : groups) {
    std::vector<at::Tensor> ps;
    for (int64_t j = 0; j < g.batch(); ++j) {
      TORCH_CHECK(g.states[j]->count("P"), "galore: no projector P for '", g.names[j], "' at compressed step ",
                  ctx.step, "; a refresh (step % refresh_period == 0) must come first");
      ps.push_back(g.states[j]->at("P"));
    }
    P.push_back(at::stack(ps));  // [batch, rows, k]
    const at::Tensor D = oriented(g.delta);
    r_shapes.push_back({g.batch(), P.back().size(2), D.size(2)});
  }
  FlatBuffer R = FlatBuffer::zeros(r_shapes, dtype);
  for (size_t i = 0; i < groups.size(); ++i) {
    auto& g = groups[i];
    const at::Tensor D = oriented(g.delta);
    at::bmm_out(R.views[i], P[i].transpose(1, 2), D);                                            // R_i = PᵀΔ_i
    oriented(g.residual).copy_(at::baddbmm(D, P[i], R.views[i], /*beta=*/1, /*alpha=*/-alpha));  // Δ_i − α·P R_i
  }
  comm.all_reduce_(R.flat);  // Σ k·cols
  if (comm.size() > 1) R.flat.div_(comm.size());
  for (size_t i = 0; i < groups.size(); ++i)
    oriented(groups[i].out).copy_(at::bmm(P[i], R.views[i]).mul_(alpha));  // ĝ = α·P R̄
}

}  // namespace lowrank
