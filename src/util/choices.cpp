#include "lowrank/util/choices.h"

#include <c10/util/Exception.h>

#include <algorithm>

namespace lowrank {

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void check_choice(const std::string& what, const std::string& name, const std::vector<std::string>& valid) {
  if (std::find(valid.begin(), valid.end(), name) != valid.end()) return;
  TORCH_CHECK(false, "unknown ", what, " '", name, "'; valid: ", join_names(valid));
}

}  // namespace lowrank
