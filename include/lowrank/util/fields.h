#pragma once
// Options described once. An options struct lists its fields in one static function,
//
//   template <typename Self, typename V>
//   static void fields(Self& o, V&& v) {
//     v("rank", o.rank_);                                       // int64_t, int, bool, double, string
//     v("powersgd_mode", o.mode_, kPowerSgdModes);              // an enum and its names
//     v("iters_per_step", o.iters_per_step_, o.mode_ == PowerSgdMode::kAlternating);  // shown only then
//   }
//
// (Self is the struct or const struct, so one list serves reading and writing), and these helpers
// derive everything else from that list, in its order: reading from a Config (`--opt key=value`),
// the one-line rendering of operator<< ("rank=1 warm_start=true ..."), and key/value pairs for the
// settings comparison, the summary JSON and checkpoint manifests. A field whose `shown` flag is
// false is still read but is left out of the rendering and the pairs (it does not apply).
//
// Enums are named by a Choices table, parsed once at the edge (parse_choice), never compared as
// strings; a table may list aliases after the canonical name ({kHouseholder, "householder"},
// {kHouseholder, "qr"}): names print as the first entry of their value.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lowrank/util/config.h"

namespace lowrank {

template <typename E>
struct Choice {
  E value;
  const char* name;
};
template <typename E>
using Choices = std::vector<Choice<E>>;

/// The canonical name of `value` (its first entry in `choices`); "?" when it has none.
template <typename E>
std::string choice_name(E value, const Choices<E>& choices) {
  for (const auto& c : choices)
    if (c.value == value) return c.name;
  return "?";
}

/// The canonical names, "a, b, c" (aliases left out).
template <typename E>
std::string choice_list(const Choices<E>& choices) {
  std::string out;
  std::vector<E> seen;
  for (const auto& c : choices) {
    bool dup = false;
    for (E s : seen) dup = dup || s == c.value;
    if (dup) continue;
    seen.push_back(c.value);
    out += (out.empty() ? "" : ", ") + std::string(c.name);
  }
  return out;
}

/// The value named `name`; throws "<what> '<name>' is not one of a, b, c" otherwise.
template <typename E>
E parse_choice(const std::string& what, const std::string& name, const Choices<E>& choices) {
  for (const auto& c : choices)
    if (name == c.name) return c.value;
  TORCH_CHECK(false, what, " '", name, "' is not one of ", choice_list(choices));
}

/// The shortest text (at least 6 significant digits, as std::ostream) that reads back as the same
/// double, so that equal text means equal values.
inline std::string exact_text(double v) {
  std::string s;
  for (int digits = 6; digits <= 17; ++digits) {
    std::ostringstream os;
    os << std::setprecision(digits) << v;
    s = os.str();
    if (std::stod(s) == v) break;
  }
  return s;
}

namespace fields_detail {

inline std::string render(bool v) { return v ? "true" : "false"; }
inline std::string render(const std::string& v) { return v; }
inline std::string render(double v) { return exact_text(v); }
// Tri-state switches (error feedback): unset = the component's own default.
inline std::string render(const std::optional<bool>& v) { return !v ? "default" : (*v ? "on" : "off"); }
// Lists print as [a,b,c].
inline std::string render(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out + "]";
}
template <typename T>
std::string render(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Config reads of the types Config has no overload for.
inline void read(const Config& c, const char* key, uint64_t& field) {
  const int64_t x = c.get(key, static_cast<int64_t>(field));
  TORCH_CHECK(x >= 0, "option ", key, "=", x, " must be >= 0");
  field = static_cast<uint64_t>(x);
}
inline void read(const Config& c, const char* key, std::optional<bool>& field) {
  if (!c.has(key)) return;
  if (c.get(key, std::string()) == "default") {
    field = std::nullopt;
    return;
  }
  field = c.get(key, false);
}
// A comma-separated list; "" is the empty list.
inline void read(const Config& c, const char* key, std::vector<std::string>& field) {
  if (!c.has(key)) return;
  const std::string s = c.get(key, std::string());
  field.clear();
  size_t start = 0;
  while (!s.empty() && start <= s.size()) {
    const size_t end = std::min(s.find(',', start), s.size());
    field.push_back(s.substr(start, end - start));
    start = end + 1;
  }
}
template <typename T>
void read(const Config& c, const char* key, T& field) {
  field = c.get(key, field);
}

// Reads every field from a Config; `prefix` ("powersgd: ") starts the message of a bad choice.
struct ConfigReader {
  const Config& config;
  std::string prefix;
  template <typename T>
  void operator()(const char* key, T& field, bool /*shown*/ = true) const {
    read(config, key, field);
  }
  template <typename E>
  void operator()(const char* key, E& field, const Choices<E>& choices, bool /*shown*/ = true) const {
    field = parse_choice(prefix + key, config.get(key, choice_name(field, choices)), choices);
  }
};

// Collects the shown fields as (key, rendered value).
struct PairCollector {
  std::vector<std::pair<std::string, std::string>>* out;
  template <typename T>
  void operator()(const char* key, const T& field, bool shown = true) const {
    if (shown) out->emplace_back(key, render(field));
  }
  template <typename E>
  void operator()(const char* key, const E& field, const Choices<E>& choices, bool shown = true) const {
    if (shown) out->emplace_back(key, choice_name(field, choices));
  }
};

// Collects every key, shown or not.
struct KeyCollector {
  std::vector<std::string>* out;
  template <typename T>
  void operator()(const char* key, const T&, bool = true) const {
    out->emplace_back(key);
  }
  template <typename E>
  void operator()(const char* key, const E&, const Choices<E>&, bool = true) const {
    out->emplace_back(key);
  }
};

}  // namespace fields_detail

/// Every key of O's field list, in order.
template <typename O>
std::vector<std::string> field_keys() {
  std::vector<std::string> out;
  const O defaults{};
  O::fields(defaults, fields_detail::KeyCollector{&out});
  return out;
}

/// `options` with every field that `config` names replaced by its value (the others keep theirs).
/// Bad values throw naming the key; keys it does not know are left for Config::check_all_used.
template <typename O>
O read_fields(const Config& config, O options = O{}, const std::string& error_prefix = "") {
  O::fields(options, fields_detail::ConfigReader{config, error_prefix});
  return options;
}

/// (key, value) of every shown field, in declaration order.
template <typename O>
std::vector<std::pair<std::string, std::string>> field_pairs(const O& options) {
  std::vector<std::pair<std::string, std::string>> out;
  O::fields(options, fields_detail::PairCollector{&out});
  return out;
}

/// "key=value key=value ..." of every shown field: what operator<< prints.
template <typename O>
std::string render_fields(const O& options) {
  std::string out;
  for (const auto& kv : field_pairs(options)) out += (out.empty() ? "" : " ") + kv.first + "=" + kv.second;
  return out;
}

}  // namespace lowrank
