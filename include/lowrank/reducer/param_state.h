#pragma once
// ParamState: everything the reducer keeps for one parameter, and the versioned names under which
// GradientReducer::state_dict() saves it.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "lowrank/compressors/compressor.h"

namespace lowrank {

/// Keys of GradientReducer::state_dict().
namespace state_keys {
constexpr int64_t kFormatVersion = 1;      ///< bumped whenever the meaning of a key changes
constexpr const char* kVersion = "version";  ///< [1] int64: kFormatVersion
constexpr const char* kStep = "step";      ///< [1] int64: reduce() calls so far
constexpr const char* kStats = "stats";    ///< int64 [11]: ReducerStats counters (stats_to_tensor)
/// uint8 [n]: the settings that give the state its meaning (the compressor's description and error
/// feedback), as text; a state saved under other settings is refused by name. Optional on load.
constexpr const char* kSettings = "settings";
constexpr const char* kEf = "ef/";         ///< "ef/<param>": the error-feedback buffer, the parameter's shape
constexpr const char* kState = "state/";   ///< "state/<param>/<key>": compressor state (TensorDict entry)
}  // namespace state_keys

struct ParamState {
  std::string name;
  at::Tensor param;               ///< the parameter itself
  at::ScalarType work_dtype{};    ///< fp64 for fp64 parameters, fp32 otherwise (§1.9)
  int64_t m = 0, n = 0;           ///< matrix view [m, n] = [size(0), numel/size(0)] (ndim >= 2)
  bool compressed = false;        ///< handled by the compressor (else: dense mean)
  size_t bucket = 0;              ///< index into the reducer's buckets (launch order)
  at::Tensor grad_view;           ///< its slice of the bucket's gradient buffer, the parameter's shape
  at::Tensor ef_view;             ///< its slice of the bucket's error buffer; undefined when it keeps none
  bool ef_valid = false;          ///< ef_view holds an error (set by the first compressed step)
  TensorDict compressor_state;    ///< the compressor's (warm-start Q, bases, ...)
};

/// The reducer's state as (key, tensor) pairs (error buffers copied, compressor state shared).
std::vector<std::pair<std::string, at::Tensor>> params_state_dict(const std::vector<ParamState>& params,
                                                                  int64_t step);
/// Restores what params_state_dict() saved; returns the step. Unknown keys or parameters and
/// shape mismatches throw naming the key.
int64_t load_params_state_dict(std::vector<ParamState>& params,
                               const std::vector<std::pair<std::string, at::Tensor>>& state);

}  // namespace lowrank
