#include "lowrank/reducer/gradient_reducer.h"

#include <c10/util/Exception.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <map>
#include <regex>
#include <sstream>

namespace lowrank {

void ReducerOptions::validate() const {
  TORCH_CHECK(start_iter() >= 0, "start_iter must be >= 0, got ", start_iter());
  TORCH_CHECK(std::isfinite(min_compression_rate()) && min_compression_rate() >= 0,
              "min_compression_rate must be a finite number >= 0, got ", min_compression_rate());
  TORCH_CHECK(error_feedback() >= -1 && error_feedback() <= 1, "error_feedback must be -1, 0 or 1, got ",
              error_feedback());
  TORCH_CHECK(ef_residual() == "local" || ef_residual() == "global", "ef_residual must be local or global, got '",
              ef_residual(), "'");
  TORCH_CHECK(std::isfinite(ef_beta()) && ef_beta() >= 0 && ef_beta() < 1, "ef_beta must be in [0, 1), got ",
              ef_beta());
}

std::ostream& operator<<(std::ostream& os, const ReducerOptions& o) {
  os << "start_iter=" << o.start_iter() << " min_compression_rate=" << o.min_compression_rate()
     << " error_feedback=" << (o.error_feedback() < 0 ? "default" : (o.error_feedback() ? "on" : "off"))
     << " ef_residual=" << o.ef_residual();
  if (o.ef_beta() > 0) os << " ef_beta=" << o.ef_beta();
  os << " batch_same_shape=" << (o.batch_same_shape() ? "true" : "false")
     << " seed=" << o.seed() << (o.norm_stats() ? "" : " norm_stats=false") << " uncompressed_names=[";
  for (size_t i = 0; i < o.uncompressed_names().size(); ++i) os << (i ? "," : "") << o.uncompressed_names()[i];
  return os << "]";
}

double ReducerStats::compression_ratio() const {
  if (compressed_steps == 0) return whole_run_compression_ratio();
  return compressed_floats_sent > 0 ? double(compressed_dense_floats) / double(compressed_floats_sent) : 0.0;
}

double ReducerStats::whole_run_compression_ratio() const {
  return floats_sent > 0 ? double(dense_floats) / double(floats_sent) : 0.0;
}

namespace {

bool name_matches(const std::string& name, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (name.find(p) != std::string::npos) return true;
    try {
      if (std::regex_search(name, std::regex(p))) return true;
    } catch (const std::regex_error&) {
      // Not a valid regex: substring matching above is all it means.
    }
  }
  return false;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string line; std::getline(is, line);) out.push_back(line);
  return out;
}

// Compressors and EF work in fp64 for fp64 parameters and in fp32 otherwise (§1.9).
at::ScalarType work_dtype(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

std::string shape_string(at::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

}  // namespace

GradientReducer::GradientReducer(std::vector<std::pair<std::string, at::Tensor>> params,
                                 std::unique_ptr<Compressor> compressor, std::shared_ptr<comm::Communicator> comm,
                                 ReducerOptions options)
    : compressor_(std::move(compressor)), comm_(std::move(comm)), options_(std::move(options)) {
  TORCH_CHECK(compressor_, "GradientReducer: compressor is null");
  TORCH_CHECK(comm_, "GradientReducer: communicator is null");
  options_.validate();
  ef_ = options_.error_feedback() < 0 ? compressor_->default_error_feedback() : options_.error_feedback() == 1;
  global_residual_ = options_.ef_residual() == "global";

  std::map<std::tuple<int64_t, int64_t, at::ScalarType>, size_t> group_of_shape;
  std::map<std::string, int> seen;
  for (auto& np : params) {
    TORCH_CHECK(np.second.defined(), "parameter '", np.first, "' is undefined");
    TORCH_CHECK(seen[np.first]++ == 0, "parameter name '", np.first, "' appears twice");
    Param p;
    p.name = np.first;
    p.tensor = np.second;
    numel_ += p.tensor.numel();
    if (p.tensor.dim() >= 2) {
      p.m = p.tensor.size(0);
      p.n = p.tensor.numel() / std::max<int64_t>(p.m, 1);
    }
    p.compressed = compressor_->compresses() && p.tensor.dim() >= 2 &&
                   !name_matches(p.name, options_.uncompressed_names()) &&
                   double(p.m * p.n) > options_.min_compression_rate() * compressor_->size_test_cost(p.m, p.n);
    const size_t idx = params_.size();
    params_.push_back(std::move(p));
    const Param& q = params_.back();
    if (!q.compressed) {
      dense_.push_back(idx);
      continue;
    }
    TORCH_CHECK(groups_.empty() || work_dtype(q.tensor) == work_dtype(params_[groups_[0].members[0]].tensor),
                "compressed parameters must all be fp64 or all be fp32/fp16/bf16; '", q.name, "' is ",
                q.tensor.scalar_type(), " (hint: exclude it with uncompressed_names)");
    auto key = std::make_tuple(q.m, q.n, work_dtype(q.tensor));
    auto it = group_of_shape.find(key);
    if (options_.batch_same_shape() && it != group_of_shape.end()) {
      groups_[it->second].members.push_back(idx);
    } else {
      group_of_shape[key] = groups_.size();
      groups_.push_back(Group{q.m, q.n, {idx}});
    }
  }

  std::ostringstream fp;
  fp << "world_size " << comm_->size() << "\n"
     << "compressor " << compressor_->describe() << "\n"
     << "reducer " << options_ << "\n";
  for (const auto& p : params_)
    fp << "param " << p.name << " " << shape_string(p.tensor.sizes()) << " " << p.tensor.scalar_type() << " "
       << (p.compressed ? "compressed" : "dense") << "\n";
  check_agreement(fp.str());
}

void GradientReducer::check_agreement(const std::string& fingerprint) {
  if (comm_->size() == 1) return;
  const auto saved = comm_->stats();
  at::Tensor mine = at::empty({2}, at::kLong);
  mine[0] = static_cast<int64_t>(fnv1a(fingerprint));
  mine[1] = static_cast<int64_t>(fingerprint.size());
  auto all = comm_->all_gather(mine);
  bool same = true;
  int64_t max_len = 0;
  for (const auto& a : all) {
    same = same && at::equal(a, all[0]);
    max_len = std::max(max_len, a[1].item<int64_t>());
  }
  if (same) return;

  at::Tensor text = at::zeros({max_len}, at::kByte);
  std::memcpy(text.data_ptr(), fingerprint.data(), fingerprint.size());
  auto texts = comm_->all_gather(text);
  const auto own = lines_of(fingerprint);
  std::ostringstream msg;
  msg << "rank " << comm_->rank() << ": ranks disagree on the reducer set-up.";
  for (size_t r = 0; r < texts.size(); ++r) {
    if (static_cast<int>(r) == comm_->rank()) continue;
    const std::string other(reinterpret_cast<const char*>(texts[r].data_ptr()),
                            static_cast<size_t>(all[r][1].item<int64_t>()));
    const auto theirs = lines_of(other);
    for (size_t i = 0; i < std::max(own.size(), theirs.size()); ++i) {
      const std::string a = i < own.size() ? own[i] : "<nothing>";
      const std::string b = i < theirs.size() ? theirs[i] : "<nothing>";
      if (a != b) {
        msg << "\n  this rank (" << comm_->rank() << "): " << a << "\n  rank " << r << ":        " << b;
        break;
      }
    }
  }
  (void)saved;
  TORCH_CHECK(false, msg.str());
}

std::vector<std::string> GradientReducer::compressed_names() const {
  std::vector<std::string> out;
  for (const auto& p : params_)
    if (p.compressed) out.push_back(p.name);
  return out;
}

int64_t GradientReducer::expected_floats(int64_t s) const {
  if (s < 0) return numel_;
  int64_t total = 0;
  for (const auto& p : params_) total += p.compressed ? compressor_->wire_floats(p.m, p.n, s) : p.tensor.numel();
  return total;
}

std::string GradientReducer::describe() const {
  std::ostringstream os;
  int64_t cn = 0, cnumel = 0;
  for (const auto& p : params_)
    if (p.compressed) {
      ++cn;
      cnumel += p.tensor.numel();
    }
  os << compressor_->describe() << " | " << options_ << " | error_feedback=" << (ef_ ? "on" : "off") << " | "
     << cn << "/" << params_.size() << " tensors compressed (" << cnumel << "/" << numel_ << " elements) in "
     << groups_.size() << " shape groups";
  return os.str();
}

void GradientReducer::reduce() {
  const auto t_start = std::chrono::steady_clock::now();
  const auto comm_before = comm_->stats();
  const bool compressed_phase = step_ >= options_.start_iter();
  const int64_t s = step_ - options_.start_iter();
  const bool use_compressor = compressed_phase && !groups_.empty();
  const bool dense_ef = compressed_phase && ef_ && global_residual_;
  // The new error buffer from this step's residual (§1.4): the residual itself (EF14), or with
  // ef_beta = β > 0 its EMA β·e_old + (1−β)·residual.
  const double beta = options_.ef_beta();
  auto ema_ef = [beta](const at::Tensor& old, const at::Tensor& residual) {
    if (beta == 0) return residual.clone();
    at::Tensor e = residual * (1 - beta);
    if (old.defined()) e.add_(old, beta);
    return e;
  };

  std::vector<size_t> dense_idx;
  if (use_compressor) {
    dense_idx = dense_;
  } else {
    for (size_t i = 0; i < params_.size(); ++i) dense_idx.push_back(i);
  }

  auto grad_of = [](Param& p) -> at::Tensor {
    at::Tensor g = p.tensor.grad();
    return g.defined() ? g : at::zeros_like(p.tensor);
  };

  // 1. Dense buffer: issued first, completes while the compressor works.
  at::Tensor dense_flat, dense_copy;
  at::ScalarType dense_dtype = at::kFloat;
  for (size_t i : dense_idx)
    if (work_dtype(params_[i].tensor) == at::kDouble) dense_dtype = at::kDouble;
  comm::HandlePtr dense_handle;
  if (!dense_idx.empty()) {
    std::vector<at::Tensor> parts;
    for (size_t i : dense_idx) {
      Param& p = params_[i];
      at::Tensor x = grad_of(p).reshape({-1}).to(dense_dtype);
      if (dense_ef && p.ef.defined()) x = x + p.ef.reshape({-1});
      parts.push_back(x);
    }
    dense_flat = at::cat(parts);
    if (dense_ef) dense_copy = dense_flat.clone();
    if (comm_->size() > 1) dense_flat.div_(comm_->size());
    dense_handle = comm_->all_reduce_async(dense_flat);
  }

  // 2. Compressed matrices, grouped by shape.
  double res_sq = 0, delta_sq = 0;
  if (use_compressor) {
    std::vector<ShapeGroup> sg;
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      const Group& g = groups_[gi];
      const int64_t b = static_cast<int64_t>(g.members.size());
      ShapeGroup x;
      x.ordinal = static_cast<int64_t>(gi);
      x.m = g.m;
      x.n = g.n;
      const auto dt = work_dtype(params_[g.members[0]].tensor);
      x.delta = at::empty({b, g.m, g.n}, dt);
      x.out = at::empty({b, g.m, g.n}, dt);
      x.residual = at::empty({b, g.m, g.n}, dt);
      const bool raw_copy = compressor_->wants_raw_gradient() && ef_;
      if (compressor_->wants_raw_gradient()) x.grad = ef_ ? at::empty({b, g.m, g.n}, dt) : x.delta;
      for (int64_t j = 0; j < b; ++j) {
        Param& p = params_[g.members[j]];
        x.names.push_back(p.name);
        x.states.push_back(&p.state);
        x.delta[j].copy_(grad_of(p).reshape({g.m, g.n}));
        if (raw_copy) x.grad[j].copy_(x.delta[j]);
        if (ef_ && p.ef.defined()) x.delta[j].add_(p.ef.reshape({g.m, g.n}));
      }
      sg.push_back(std::move(x));
    }
    StepContext ctx;
    ctx.step = s;
    ctx.seed = options_.seed();
    ctx.comm = comm_.get();
    compressor_->compress(sg, ctx);
    const bool reset = compressor_->resets_error_feedback(s);
    for (size_t gi = 0; gi < groups_.size(); ++gi) {
      const ShapeGroup& x = sg[gi];
      if (options_.norm_stats()) {
        delta_sq += x.delta.pow(2).sum().item<double>();
        res_sq += x.residual.pow(2).sum().item<double>();
      }
      for (int64_t j = 0; j < x.batch(); ++j) {
        Param& p = params_[groups_[gi].members[j]];
        if (ef_) {
          at::Tensor e = global_residual_ ? x.delta[j] - x.out[j] : x.residual[j];
          p.ef = reset ? at::zeros_like(p.tensor, e.options()) : ema_ef(p.ef, e.reshape(p.tensor.sizes()));
        }
        if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = at::zeros_like(p.tensor);
        p.tensor.mutable_grad().copy_(x.out[j].reshape(p.tensor.sizes()));
      }
    }
  }

  // 3. Dense results back into the gradients.
  if (dense_handle) {
    dense_handle->wait();
    int64_t off = 0;
    for (size_t i : dense_idx) {
      Param& p = params_[i];
      const int64_t n = p.tensor.numel();
      at::Tensor mean = dense_flat.narrow(0, off, n).view(p.tensor.sizes());
      if (dense_ef) p.ef = ema_ef(p.ef, dense_copy.narrow(0, off, n).view(p.tensor.sizes()) - mean);
      if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = at::zeros_like(p.tensor);
      p.tensor.mutable_grad().copy_(mean);
      off += n;
    }
  }

  // 4. Statistics.
  const auto& ca = comm_->stats();
  const int64_t sent = (ca.bytes_sent - comm_before.bytes_sent) / 4;
  stats_.steps += 1;
  stats_.floats_sent += sent;
  stats_.dense_floats += numel_;
  stats_.last_floats_sent = sent;
  if (compressed_phase) {
    stats_.compressed_steps += 1;
    stats_.compressed_floats_sent += sent;
    stats_.compressed_dense_floats += numel_;
  }
  stats_.relative_error = delta_sq > 0 ? std::sqrt(res_sq / delta_sq) : 0.0;
  double ef_sq = 0;
  for (const auto& p : params_)
    if (p.ef.defined() && options_.norm_stats()) ef_sq += p.ef.pow(2).sum().item<double>();
  stats_.ef_norm = std::sqrt(ef_sq);
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  const double in_comm = ca.seconds - comm_before.seconds;
  stats_.comm_seconds += in_comm;
  stats_.compress_seconds += std::max(0.0, total - in_comm);
  ++step_;
}

std::vector<std::pair<std::string, at::Tensor>> GradientReducer::state_dict() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back("step", at::tensor({step_}, at::kLong));
  for (const auto& p : params_) {
    if (p.ef.defined()) out.emplace_back("ef/" + p.name, p.ef);
    for (const auto& kv : p.state) out.emplace_back("state/" + p.name + "/" + kv.first, kv.second);
  }
  return out;
}

void GradientReducer::load_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < params_.size(); ++i) {
    by_name[params_[i].name] = i;
    params_[i].ef = at::Tensor();
    params_[i].state.clear();
  }
  for (const auto& kv : state) {
    const std::string& key = kv.first;
    if (key == "step") {
      step_ = kv.second.item<int64_t>();
    } else if (key.rfind("ef/", 0) == 0) {
      auto it = by_name.find(key.substr(3));
      TORCH_CHECK(it != by_name.end(), "reducer state names unknown parameter in '", key, "'");
      TORCH_CHECK(kv.second.sizes() == params_[it->second].tensor.sizes(), "reducer state '", key, "' has shape ",
                  kv.second.sizes(), ", the parameter has ", params_[it->second].tensor.sizes());
      params_[it->second].ef = kv.second.clone();
    } else if (key.rfind("state/", 0) == 0) {
      const std::string rest = key.substr(6);
      const auto slash = rest.rfind('/');
      TORCH_CHECK(slash != std::string::npos, "malformed reducer state key '", key, "'");
      auto it = by_name.find(rest.substr(0, slash));
      TORCH_CHECK(it != by_name.end(), "reducer state names unknown parameter in '", key, "'");
      params_[it->second].state[rest.substr(slash + 1)] = kv.second.clone();
    } else {
      TORCH_CHECK(false, "unknown reducer state key '", key, "'");
    }
  }
}

}  // namespace lowrank
