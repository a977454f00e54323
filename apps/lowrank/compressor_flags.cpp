#include "compressor_flags.h"

#include <c10/util/Exception.h>

namespace lowrank {
namespace cli {

Config compressor_config_from_flags(const std::vector<std::string>& opts, const std::string& rank, bool rank_given,
                                    bool no_warm_start) {
  Config c;
  auto put = [&c](const std::string& key, const std::string& value, const std::string& from) {
    TORCH_CHECK(!c.has(key), "compressor option '", key, "' is given twice (again by ", from, ")");
    c.set(key, value);
  };
  if (no_warm_start) put("warm_start", "false", "--no-warm-start");
  for (const auto& kv : opts) {
    const auto eq = kv.find('=');
    TORCH_CHECK(eq != std::string::npos && eq > 0, "--opt '", kv, "' is not KEY=VALUE (e.g. --opt powersgd_mode=alternating)");
    TORCH_CHECK(!(rank_given && kv.substr(0, eq) == "rank"), "compressor option 'rank' is given twice (by --rank ",
                rank, " and by --opt ", kv, ")");
    put(kv.substr(0, eq), kv.substr(eq + 1), "--opt " + kv);
  }
  return c;
}

}  // namespace cli
}  // namespace lowrank
