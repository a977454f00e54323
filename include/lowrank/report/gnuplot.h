#pragma once
// The one way lowrank drives gnuplot (Debian package gnuplot-nox): every PNG, of `lowrank plot`
// (report/plot.h) and of `lowrank counterexample`, is drawn by draw_figure(). gnuplot runs as a
// child process on a script file (never through a shell or a pipe), its stdout and stderr go to a
// temporary file, and a failure throws a c10::Error that names the script, gnuplot's exit status,
// gnuplot's stderr and the package gnuplot-nox.
//
//   report::GnuplotFigure f;
//   f.png = "out/loss.png";
//   f.script = "set terminal png\nset output 'out/loss.png'\nplot 'out/loss.dat' using 1:2\n";
//   f.script_path = "out/loss.gp";      // kept, so that the figure can be redrawn by hand
//   f.data_path = "out/loss.dat";
//   f.data = "1 2\n2 3\n";
//   report::draw_figure(f);
#include <string>

namespace lowrank {
namespace report {

/// `s` as a gnuplot single-quoted string: gnuplot has no escapes there, so a quote is written twice.
std::string gnuplot_quote(const std::string& s);

/// The path of the gnuplot executable found on PATH, or "" when there is none.
std::string find_gnuplot();

/// Runs `gnuplot script_path` (stdin /dev/null) and waits for it. Throws naming gnuplot and the
/// package gnuplot-nox when gnuplot is not on PATH, and naming `script_path`, with gnuplot's exit
/// status (or signal) and its stderr, when it fails.
void run_gnuplot(const std::string& script_path);

/// A PNG and the script (and optional data file) gnuplot draws it from.
struct GnuplotFigure {
  std::string png;          ///< the file the script's `set output` names
  std::string script;       ///< the script's text
  std::string script_path;  ///< where the script is kept; "" = a temporary file (below)
  std::string data_path;    ///< where `data` is written before gnuplot runs; "" = no data file
  std::string data;         ///< the data file's text
};

/// Draws `f.png`: creates its directory, writes the data file and the script (each whole or not at
/// all, util/files.h), removes an old PNG, runs gnuplot and checks that it wrote a non-empty PNG.
/// Returns f.png. A temporary script (f.script_path "") goes to $TMPDIR (else /tmp) and is removed
/// after a success; when gnuplot fails it is kept for inspection, and the error names it. Throws as
/// run_gnuplot(), or naming the file that could not be written.
std::string draw_figure(const GnuplotFigure& f);

}  // namespace report
}  // namespace lowrank
