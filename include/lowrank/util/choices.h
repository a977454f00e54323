#pragma once
// Named choices (compressors, models, optimizers, ...): one way to say that a name is unknown.
//
//   check_choice("optimizer", name, optimizer_names());
//   // throws c10::Error "unknown optimizer 'sgdd'; valid: sgd, adam, adamw"
#include <string>
#include <vector>

namespace lowrank {

/// "a, b, c".
std::string join_names(const std::vector<std::string>& names);
/// Returns when `name` is one of `valid`; throws "unknown <what> '<name>'; valid: <valid...>" otherwise.
void check_choice(const std::string& what, const std::string& name, const std::vector<std::string>& valid);

}  // namespace lowrank
