#include "lowrank/util/config.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace lowrank {

Config& Config::set(const std::string& key, const std::string& value) {
  values_[key] = value;
  return *this;
}

const std::string* Config::find(const std::string& key) const {
  used_.insert(key);
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

std::string Config::get(const std::string& key, const std::string& fallback) const {
  const std::string* v = find(key);
  return v ? *v : fallback;
}

int64_t Config::get(const std::string& key, int64_t fallback) const {
  const std::string* v = find(key);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  TORCH_CHECK(!v->empty() && *end == '\0', "option ", key, "='", *v, "' is not an integer");
  TORCH_CHECK(errno == 0, "option ", key, "='", *v, "' is out of range: an integer option must lie in [",
              std::numeric_limits<int64_t>::min(), ", ", std::numeric_limits<int64_t>::max(), "]");
  return x;
}

int Config::get(const std::string& key, int fallback) const {
  const int64_t x = get(key, static_cast<int64_t>(fallback));
  TORCH_CHECK(x >= std::numeric_limits<int>::min() && x <= std::numeric_limits<int>::max(), "option ", key, "=", x,
              " is out of range: it must lie in [", std::numeric_limits<int>::min(), ", ",
              std::numeric_limits<int>::max(), "]");
  return static_cast<int>(x);
}

double Config::get(const std::string& key, double fallback) const {
  const std::string* v = find(key);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v->c_str(), &end);
  TORCH_CHECK(!v->empty() && *end == '\0' && !std::isnan(x),
              "option ", key, "='", *v, "' is not a number");
  TORCH_CHECK(std::isfinite(x) && !(errno == ERANGE && std::fabs(x) > 1), "option ", key, "='", *v,
              "' is not a finite number (a double reaches about 1.8e308)");
  return x;
}

bool Config::get(const std::string& key, bool fallback) const {
  const std::string* v = find(key);
  if (!v) return fallback;
  if (*v == "1" || *v == "true" || *v == "on" || *v == "yes") return true;
  if (*v == "0" || *v == "false" || *v == "off" || *v == "no") return false;
  TORCH_CHECK(false, "option ", key, "='", *v, "' is not a boolean (true/false)");
}

void Config::check_all_used(const std::string& owner) const {
  std::ostringstream unknown, known;
  bool bad = false;
  for (const auto& kv : values_) {
    if (!used_.count(kv.first)) {
      unknown << (bad ? ", " : "") << kv.first << "=" << kv.second;
      bad = true;
    }
  }
  if (!bad) return;
  bool first = true;
  for (const auto& k : used_) {
    known << (first ? "" : ", ") << k;
    first = false;
  }
  TORCH_CHECK(false, "option(s) ", unknown.str(), " do not apply to ", owner,
              first ? "; it accepts no options" : "; it accepts: ", known.str());
}

}  // namespace lowrank
