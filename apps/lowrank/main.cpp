// lowrank: the command-line tool. Each subcommand is one file registering itself in commands.h.
#include <c10/util/Exception.h>

#include <iostream>
#include <vector>

#include "commands.h"

int main(int argc, char** argv) {
  using namespace lowrank::cli;
  CLI::App app{"lowrank: communication-efficient data-parallel training by low-rank gradient compression"};
  app.set_version_flag("--version", std::string("lowrank ") + LOWRANK_VERSION);
  app.require_subcommand(1);
  std::vector<Command> commands;
  commands.push_back(add_compressors_command(app));
  commands.push_back(add_train_command(app));
  commands.push_back(add_counterexample_command(app));
  commands.push_back(add_bench_command(app));
  commands.push_back(add_inspect_command(app));
  commands.push_back(add_plot_command(app));
  commands.push_back(add_compare_command(app));
  CLI11_PARSE(app, argc, argv);
  try {
    for (auto& c : commands)
      if (c.first->parsed()) return c.second();
  } catch (const c10::Error& e) {
    std::cerr << "lowrank: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "lowrank: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
