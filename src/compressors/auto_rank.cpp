// rank=auto: see include/lowrank/compressors/auto_rank.h (docs/algorithms.md §10).
#include "lowrank/compressors/auto_rank.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <queue>
#include <sstream>

#include "lowrank/compressors/group_ops.h"

namespace lowrank {

void read(const Config& c, const char* key, RankSpec& field) {
  if (!c.has(key)) return;
  if (c.get(key, std::string()) == "auto") {
    field = RankSpec::auto_rank();
    return;
  }
  field = RankSpec(c.get(key, field.value));
}

void read(const Config& c, const char* key, RankBudget& field) {
  if (!c.has(key)) return;
  const double v = c.get(key, 0.0);
  TORCH_CHECK(std::isfinite(v) && v > 0 && v <= 1e15, "option ", key, "=", c.get(key, std::string()),
              " must be a number of bytes per step in (0, 1e15]");
  TORCH_CHECK(!c.has("rank_energy"), "options rank_energy=", c.get("rank_energy", std::string()), " and ", key, "=",
              c.get(key, std::string()), " are two targets for rank=auto: give one");
  field.bytes = v;
}

void AutoRankOptions::validate(const std::string& who, bool automatic) const {
  if (!automatic) {
    const AutoRankOptions d;
    TORCH_CHECK(energy == d.energy && !budget.bytes && min == d.min && max == d.max && period == d.period, who,
                ": rank_energy, rank_budget, rank_min, rank_max and rank_period apply to rank=auto only");
    return;
  }
  TORCH_CHECK(energy > 0 && energy <= 1, who, ": rank_energy must lie in (0, 1], got ", energy);
  TORCH_CHECK(!budget.bytes || (std::isfinite(*budget.bytes) && *budget.bytes > 0 && *budget.bytes <= 1e15), who,
              ": rank_budget must be a number of bytes per step in (0, 1e15]");
  TORCH_CHECK(min >= 1, who, ": rank_min must be >= 1, got ", min);
  TORCH_CHECK(max >= min, who, ": rank_min=", min, " lies above rank_max=", max, " (the floor must not exceed the ceiling)");
  TORCH_CHECK(period >= 1, who, ": rank_period must be >= 1, got ", period);
}

int64_t AutoRankOptions::lo(int64_t m, int64_t n) const { return std::min({min, m, n}); }
// Never a rank whose factors hold as many numbers as the matrix: k·(m + n) < m·n.
int64_t AutoRankOptions::hi(int64_t m, int64_t n) const {
  const int64_t worthwhile = (m * n - 1) / (m + n);
  return std::max(lo(m, n), std::min({max, m, n, worthwhile}));
}

std::string AutoRankOptions::target_text(bool own_period) const {
  std::ostringstream os;
  os << "rank=auto: ";
  if (budget.bytes) os << "a budget of " << static_cast<int64_t>(*budget.bytes) << " bytes per step for the model";
  else os << "keep " << energy * 100 << "% of each matrix's corrected-gradient energy";
  os << ", rank " << min << ".." << max;
  if (own_period) os << ", spectrum every " << period << " steps";
  return os.str();
}

int64_t planned_rank(const AutoRankOptions& o, const TensorDict& state, int64_t m, int64_t n) {
  auto it = state.find(compressor_keys::kRank);
  if (it == state.end()) return o.hi(m, n);
  return std::clamp(it->second.item<int64_t>(), o.lo(m, n), o.hi(m, n));
}

int64_t planned_rank(const AutoRankOptions& o, const ShapeGroup& group) {
  return planned_rank(o, *group.states.at(0), group.m, group.n);
}

void record_spectrum(const ShapeGroup& group, const at::Tensor& sq_singular, const at::Tensor& energy) {
  store_state(group, compressor_keys::kSpectrum, sq_singular.to(at::kDouble));
  store_state(group, compressor_keys::kEnergy, energy.reshape({group.batch(), 1}).to(at::kDouble));
}

int64_t rank_for_energy(const at::Tensor& sq_singular, double energy, double target, int64_t lo, int64_t hi) {
  const at::Tensor s = sq_singular.to(at::kDouble).contiguous();
  const double* v = s.data_ptr<double>();
  const int64_t len = s.numel();
  double kept = 0;
  for (int64_t k = 1; k <= hi; ++k) {
    kept += k <= len ? v[k - 1] : 0.0;
    if (k >= lo && kept >= target * energy) return k;
  }
  return hi;
}

namespace {

// σ_j² of a matrix's last spectrum step (j from 1), 0 beyond what was recorded.
double sq_singular(const TensorDict& state, int64_t j) {
  const at::Tensor& s = state.at(compressor_keys::kSpectrum);
  return j <= s.numel() ? s.data_ptr<double>()[j - 1] : 0.0;
}

bool has_spectrum(const TensorDict& state) {
  return state.count(compressor_keys::kSpectrum) > 0 && state.count(compressor_keys::kEnergy) > 0;
}

// The shape groups of `matrices`: indices into it, in first-seen order of their group ids.
std::vector<std::vector<size_t>> groups_of(const std::vector<PlannedMatrix>& matrices) {
  std::vector<std::vector<size_t>> out;
  std::map<int64_t, size_t> index;
  for (size_t i = 0; i < matrices.size(); ++i) {
    auto it = index.find(matrices[i].group);
    if (it == index.end()) {
      index[matrices[i].group] = out.size();
      out.push_back({i});
    } else {
      out[it->second].push_back(i);
    }
  }
  return out;
}

int64_t floor_bytes(const AutoRankOptions& o, const std::vector<PlannedMatrix>& matrices, const RankCost& cost) {
  int64_t total = 0;
  for (const auto& mat : matrices) total += cost(mat.m, mat.n, o.lo(mat.m, mat.n));
  return total;
}

}  // namespace

std::vector<int64_t> plan_auto_ranks(const AutoRankOptions& o, const std::vector<PlannedMatrix>& matrices,
                                     int64_t fixed_bytes, const RankCost& cost) {
  std::vector<int64_t> ranks(matrices.size());
  for (size_t i = 0; i < matrices.size(); ++i) ranks[i] = planned_rank(o, *matrices[i].state, matrices[i].m, matrices[i].n);
  const auto groups = groups_of(matrices);
  auto measured = [&](const std::vector<size_t>& g) {
    return std::all_of(g.begin(), g.end(), [&](size_t i) { return has_spectrum(*matrices[i].state); });
  };

  if (!o.budget.bytes) {
    for (const auto& g : groups) {
      if (!measured(g)) continue;
      int64_t k = 0;
      for (size_t i : g) {
        const PlannedMatrix& mat = matrices[i];
        const double energy = mat.state->at(compressor_keys::kEnergy).item<double>();
        k = std::max(k, rank_for_energy(mat.state->at(compressor_keys::kSpectrum), energy, o.energy,
                                        o.lo(mat.m, mat.n), o.hi(mat.m, mat.n)));
      }
      for (size_t i : g) ranks[i] = k;
    }
    return ranks;
  }

  // Budget: all measured groups start at lo; the increment with the most energy per byte goes first
  // (ties: the earlier group), while it fits. A group's increment is taken for all its members.
  double left = *o.budget.bytes - static_cast<double>(fixed_bytes);
  for (const auto& g : groups)
    for (size_t i : g) {
      const PlannedMatrix& mat = matrices[i];
      if (measured(g)) ranks[i] = o.lo(mat.m, mat.n);
      left -= static_cast<double>(cost(mat.m, mat.n, ranks[i]));
    }
  struct Step {
    double gain_per_byte;
    size_t group;
    bool operator<(const Step& other) const {
      return gain_per_byte != other.gain_per_byte ? gain_per_byte < other.gain_per_byte : group > other.group;
    }
  };
  auto next_step = [&](size_t gi, Step* out) {
    const auto& g = groups[gi];
    double gain = 0, bytes = 0;
    for (size_t i : g) {
      const PlannedMatrix& mat = matrices[i];
      const int64_t k = ranks[i];
      if (k >= o.hi(mat.m, mat.n)) return false;
      gain += sq_singular(*mat.state, k + 1);
      bytes += static_cast<double>(cost(mat.m, mat.n, k + 1) - cost(mat.m, mat.n, k));
    }
    if (gain <= 0 || bytes <= 0) return false;  // nothing more to capture (or no cost to weigh it by)
    *out = Step{gain / bytes, gi};
    return true;
  };
  std::priority_queue<Step> queue;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    Step s;
    if (measured(groups[gi]) && next_step(gi, &s)) queue.push(s);
  }
  while (!queue.empty()) {
    const Step s = queue.top();
    queue.pop();
    double bytes = 0;
    for (size_t i : groups[s.group])
      bytes += static_cast<double>(cost(matrices[i].m, matrices[i].n, ranks[i] + 1) -
                                   cost(matrices[i].m, matrices[i].n, ranks[i]));
    if (bytes > left) continue;  // this group cannot grow further; smaller increments of others may fit
    left -= bytes;
    for (size_t i : groups[s.group]) ranks[i] += 1;
    Step again;
    if (next_step(s.group, &again)) queue.push(again);
  }
  return ranks;
}

void apply_auto_ranks(const AutoRankOptions& o, std::vector<PlannedMatrix>& matrices, int64_t step,
                      int64_t fixed_bytes, const RankCost& cost) {
  const std::vector<int64_t> ranks = plan_auto_ranks(o, matrices, fixed_bytes, cost);
  for (size_t i = 0; i < matrices.size(); ++i) {
    TensorDict& state = *matrices[i].state;
    auto it = state.find(compressor_keys::kRank);
    if (it != state.end() && it->second.item<int64_t>() == ranks[i]) continue;
    state[compressor_keys::kRank] = at::tensor({ranks[i]}, at::kLong);
    at::Tensor row = at::tensor({step, ranks[i]}, at::kLong).reshape({1, 2});
    auto h = state.find(compressor_keys::kRankHistory);
    state[compressor_keys::kRankHistory] = h == state.end() ? row : at::cat({h->second, row}, 0);
  }
}

void check_rank_budget(const AutoRankOptions& o, const std::string& who, const std::vector<PlannedMatrix>& matrices,
                       int64_t fixed_bytes, const RankCost& cost) {
  if (!o.budget.bytes) return;
  const int64_t need = fixed_bytes + floor_bytes(o, matrices, cost);
  TORCH_CHECK(*o.budget.bytes >= static_cast<double>(need), who, ": rank_budget=",
              static_cast<int64_t>(*o.budget.bytes), " bytes per step is below what this model sends at rank_min=", o.min,
              ": ", need, " bytes (", fixed_bytes, " of them for the tensors sent dense); give rank_budget >= ", need);
}

}  // namespace lowrank
