// `lowrank compressors`: lists the registered compressors with their help text.
#include <iostream>

#include "commands.h"
#include "lowrank/compressors/registry.h"

namespace lowrank {
namespace cli {

Command add_compressors_command(CLI::App& app) {
  auto* sub = app.add_subcommand("compressors", "List the registered compressors and their wire cost");
  return {sub, [] {
            for (const auto& c : compressor_registry()) std::cout << c.name << "\t" << c.help << "\n";
            return 0;
          }};
}

}  // namespace cli
}  // namespace lowrank
