// report/gnuplot.h: quoting, the errors of a missing or failing gnuplot (naming the script and the
// package), and draw_figure's kept and temporary scripts.
#include "lowrank/report/gnuplot.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <string>

#include "support/train_test_support.h"

namespace lowrank {
namespace {

using testing::TempDir;
using testing::error_of;

bool have_gnuplot() { return testing::run_command("command -v gnuplot").exit_code == 0; }
#define REQUIRE_GNUPLOT() \
  if (!have_gnuplot()) GTEST_SKIP() << "gnuplot (Debian package gnuplot-nox) is not installed"

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = ::getenv(name);
    had_ = old != nullptr;
    old_ = had_ ? old : "";
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_) ::setenv(name_, old_.c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  ASSERT_TRUE(f.good()) << path;
}

std::string png_script(const std::string& png, const std::string& plot) {
  return "set terminal png size 200,100\nset output " + report::gnuplot_quote(png) + "\n" + plot + "\n";
}

TEST(Gnuplot, QuotesByDoublingQuotes) {
  EXPECT_EQ(report::gnuplot_quote("a b"), "'a b'");
  EXPECT_EQ(report::gnuplot_quote("it's"), "'it''s'");
  EXPECT_EQ(report::gnuplot_quote(""), "''");
}

TEST(Gnuplot, MissingOrFailingGnuplotNamesThePackage) {
  TempDir dir("plot");
  write(dir / "bad.gp", "set terminal png\nset output '/dev/null'\nplot undefined_function_xyz(x)\n");
  if (have_gnuplot()) {
    const std::string e = error_of([&] { report::run_gnuplot(dir / "bad.gp"); });
    EXPECT_NE(e.find("gnuplot failed"), std::string::npos) << e;
    EXPECT_NE(e.find(dir / "bad.gp"), std::string::npos) << e;
    EXPECT_NE(e.find("gnuplot-nox"), std::string::npos) << e;
    EXPECT_NE(e.find("undefined_function_xyz"), std::string::npos) << e;  // gnuplot's stderr
  }
  std::string e;
  {
    ScopedEnv path("PATH", dir.path());  // holds no gnuplot
    EXPECT_EQ(report::find_gnuplot(), "");
    e = error_of([&] { report::run_gnuplot(dir / "bad.gp"); });
  }
  EXPECT_NE(e.find("gnuplot is not installed"), std::string::npos) << e;
  EXPECT_NE(e.find("gnuplot-nox"), std::string::npos) << e;
}

TEST(Gnuplot, DrawFigureKeepsTheScriptAndDataItWasGiven) {
  REQUIRE_GNUPLOT();
  TempDir dir("gnuplot");
  report::GnuplotFigure f;
  f.png = dir / "sub/fig.png";  // the directory is created
  f.script_path = dir / "sub/fig.gp";
  f.data_path = dir / "sub/fig.dat";
  f.data = "1 2\n2 3\n3 5\n";
  f.script = png_script(f.png, "plot " + report::gnuplot_quote(f.data_path) + " using 1:2 with lines");
  EXPECT_EQ(report::draw_figure(f), f.png);
  EXPECT_GT(testing::read_text(f.png).size(), 8u);
  EXPECT_EQ(testing::read_text(f.script_path), f.script);
  EXPECT_EQ(testing::read_text(f.data_path), f.data);
}

TEST(Gnuplot, ATemporaryScriptIsRemovedAfterASuccessAndKeptAfterAFailure) {
  REQUIRE_GNUPLOT();
  TempDir dir("gnuplot"), tmp("gnuplot-tmp");
  ScopedEnv tmpdir("TMPDIR", tmp.path());
  report::GnuplotFigure f;
  f.png = dir / "fig.png";
  f.script = png_script(f.png, "$d << EOD\n1 2\n2 3\nEOD\nplot $d using 1:2 with lines");
  report::draw_figure(f);
  EXPECT_GT(testing::read_text(f.png).size(), 8u);
  EXPECT_TRUE(testing::list_dir(tmp.path()).empty());

  f.script = png_script(f.png, "plot undefined_function_xyz(x)");
  const std::string e = error_of([&] { report::draw_figure(f); });
  const auto left = testing::list_dir(tmp.path());
  ASSERT_EQ(left.size(), 1u) << e;
  EXPECT_NE(e.find(tmp / left[0]), std::string::npos) << e;  // the error names the kept script
  EXPECT_EQ(testing::read_text(tmp / left[0]), f.script);
}

}  // namespace
}  // namespace lowrank
