#include "lowrank/reducer/param_state.h"

#include <c10/util/Exception.h>

#include <map>

namespace lowrank {

std::vector<std::pair<std::string, at::Tensor>> params_state_dict(const std::vector<ParamState>& params,
                                                                  int64_t step) {
  std::vector<std::pair<std::string, at::Tensor>> out;
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
  for (size_t i = 0; i < params.size(); ++i) {
    by_name[params[i].name] = i;
    if (params[i].ef_view.defined()) params[i].ef_view.zero_();
    params[i].ef_valid = false;
    params[i].compressor_state.clear();
  }
  const std::string ef = state_keys::kEf, st = state_keys::kState;
  int64_t step = 0;
  for (const auto& kv : state) {
    const std::string& key = kv.first;
    if (key == state_keys::kStep) {
      step = kv.second.item<int64_t>();
    } else if (key.rfind(ef, 0) == 0) {
      auto it = by_name.find(key.substr(ef.size()));
      TORCH_CHECK(it != by_name.end(), "reducer state names unknown parameter in '", key, "'");
      ParamState& p = params[it->second];
      TORCH_CHECK(kv.second.sizes() == p.param.sizes(), "reducer state '", key, "' has shape ", kv.second.sizes(),
                  ", the parameter has ", p.param.sizes());
      TORCH_CHECK(p.ef_view.defined(), "reducer state '", key, "' is an error-feedback buffer, but '", p.name,
                  "' keeps none with these options (error feedback off, or a dense tensor under the local residual)");
      p.ef_view.copy_(kv.second);
      p.ef_valid = true;
    } else if (key.rfind(st, 0) == 0) {
      const std::string rest = key.substr(st.size());
      const auto slash = rest.rfind('/');
      TORCH_CHECK(slash != std::string::npos, "malformed reducer state key '", key, "'");
      auto it = by_name.find(rest.substr(0, slash));
      TORCH_CHECK(it != by_name.end(), "reducer state names unknown parameter in '", key, "'");
      params[it->second].compressor_state[rest.substr(slash + 1)] = kv.second.clone();
    } else {
      TORCH_CHECK(false, "unknown reducer state key '", key, "'");
    }
  }
  return step;
}

}  // namespace lowrank
