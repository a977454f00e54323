// lowrank: the command-line tool. Each subcommand is one file registering itself in commands.h.
#include <c10/util/Exception.h>

#include <iostream>
#include <vector>

#include "commands.h"
#include "number_flags.h"
#include "printable.h"

namespace {

int fail(const std::string& message) {
  std::cerr << "lowrank: error: " << lowrank::cli::printable(message) << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lowrank::cli;
  CLI::App app{"lowrank: communication-efficient data-parallel training by low-rank gradient compression"};
  app.set_version_flag("--version", std::string("lowrank ") + LOWRANK_VERSION);
  app.require_subcommand(1);
  std::vector<Command> commands;
  try {
    commands.push_back(add_compressors_command(app));
    commands.push_back(add_train_command(app));
    commands.push_back(add_counterexample_command(app));
    commands.push_back(add_bench_command(app));
    commands.push_back(add_inspect_command(app));
    commands.push_back(add_plot_command(app));
    commands.push_back(add_compare_command(app));
    check_numbers_declared(app);
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // CLI11's exit codes (105 for a value out of range, ...), with our prefix and a safe echo.
    std::cerr << "lowrank: error: " << printable(e.what()) << "\nRun with --help for more information.\n";
    return e.get_exit_code();
  }
  try {
    for (auto& c : commands)
      if (c.first->parsed()) return c.second();
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
