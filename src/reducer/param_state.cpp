#include "lowrank/reducer/param_state.h"

#include <c10/util/Exception.h>

#include <map>

namespace lowrank {

std::vector<std::pair<std::string, at::Tensor>> params_state_dict(const std::vector<ParamState>& params,
                                                                  int64_t step) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.emplace_back(state_keys::kVersion, at::tensor({state_keys::kFormatVersion}, at::kLong));
  out.emplace_back(state_keys::kStep, at::tensor({step}, at::kLong));
  for (const auto& p : params) {
    if (p.ef_valid) out.emplace_back(state_keys::kEf + p.name, p.ef_view.clone());
    for (const auto& kv : p.compressor_state) out.emplace_back(state_keys::kState + p.name + "/" + kv.first, kv.second);
  }
  return out;
}

int64_t load_params_state_dict(std::vector<ParamState>& params,
                               const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < params.size(); ++i) by_name[params[i].name] = i;
  const std::string ef = state_keys::kEf, st = state_keys::kState;

  // Pass 1: check everything; nothing changes on a throw.
  int64_t step = -1, version = -1;
  std::vector<std::pair<size_t, at::Tensor>> efs;
  std::vector<std::tuple<size_t, std::string, at::Tensor>> states;
  for (const auto& kv : state) {
    const std::string& key = kv.first;
    TORCH_CHECK(kv.second.defined(), "reducer state '", key, "' is an undefined tensor");
    if (key == state_keys::kVersion || key == state_keys::kStep) {
      TORCH_CHECK(kv.second.numel() == 1 && kv.second.scalar_type() == at::kLong, "reducer state '", key,
                  "' must be one int64, got ", kv.second.sizes(), " ", kv.second.scalar_type());
      (key == state_keys::kStep ? step : version) = kv.second.item<int64_t>();
    } else if (key.rfind(ef, 0) == 0) {
      auto it = by_name.find(key.substr(ef.size()));
      TORCH_CHECK(it != by_name.end(), "reducer state names unknown parameter in '", key, "'");
      const ParamState& p = params[it->second];
      TORCH_CHECK(kv.second.sizes() == p.param.sizes(), "reducer state '", key, "' has shape ", kv.second.sizes(),
                  ", the parameter has ", p.param.sizes());
      TORCH_CHECK(p.ef_view.defined(), "reducer state '", key, "' is an error-feedback buffer, but '", p.name,
                  "' keeps none with these options (error feedback off, or a dense tensor under the local residual)");
      efs.emplace_back(it->second, kv.second);
    } else if (key.rfind(st, 0) == 0) {
      const std::string rest = key.substr(st.size());
      const auto slash = rest.rfind('/');
      TORCH_CHECK(slash != std::string::npos, "malformed reducer state key '", key, "'");
      auto it = by_name.find(rest.substr(0, slash));
      TORCH_CHECK(it != by_name.end(), "reducer state names unknown parameter in '", key, "'");
      TORCH_CHECK(params[it->second].compressed, "reducer state '", key, "' is compressor state, but '",
                  params[it->second].name, "' is not compressed with these options");
      states.emplace_back(it->second, rest.substr(slash + 1), kv.second);
    } else {
      TORCH_CHECK(false, "unknown reducer state key '", key, "'");
    }
  }
  // Hand-made states (e.g. a warm-start Q from elsewhere) may leave out version and step.
  TORCH_CHECK(version < 0 || version == state_keys::kFormatVersion, "reducer state has format version ", version,
              "; this lowrank reads version ", state_keys::kFormatVersion);
  if (step < 0) step = 0;

  // Pass 2: apply.
  for (auto& p : params) {
    if (p.ef_view.defined()) p.ef_view.zero_();
    p.ef_valid = false;
    p.compressor_state.clear();
  }
  for (auto& e : efs) {
    params[e.first].ef_view.copy_(e.second);
    params[e.first].ef_valid = true;
  }
  for (auto& s : states) params[std::get<0>(s)].compressor_state[std::get<1>(s)] = std::get<2>(s).clone();
  return step;
}

}  // namespace lowrank
