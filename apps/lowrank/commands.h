#pragma once
// Each subcommand lives in its own file and registers itself with main() through one function
// returning the subcommand and what to run when it was chosen. Runners return the exit code and
// may throw; main() turns exceptions into "lowrank: error: ..." and exit code 1.
#include <CLI/CLI.hpp>

#include <functional>
#include <utility>

namespace lowrank {
namespace cli {

using Runner = std::function<int()>;
using Command = std::pair<CLI::App*, Runner>;

Command add_compressors_command(CLI::App& app);
Command add_train_command(CLI::App& app);
Command add_counterexample_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_inspect_command(CLI::App& app);
Command add_plot_command(CLI::App& app);
Command add_compare_command(CLI::App& app);

}  // namespace cli
}  // namespace lowrank
