#pragma once
// Numbers on the command line, the same way for every subcommand.
//
// CLI11 alone saturates (99999999999999999999 became INT64_MAX, so --epochs 9...9 overflowed into
// a negative step count and --batch-size 9...9 into a division by zero), reads 010 as octal and
// 0x10 as hex, accepts inf and nan, and its range validators print DBL_MAX in 309 digits. So every
// numeric flag is declared with add_integer or add_real: the text must be a decimal number (1e6 is
// fine for an integer that is exactly one), finite and within the flag's limits, and the error says
// which, with the limit:
//   --batch-size: must be >= 1, got 0
//   --epochs: must be <= 1000000, got 99999999999999999999
//   --lr: 'abc' is not a number
// check_numbers_declared() at start-up refuses (an internal error) a numeric flag declared without
// them, so a new flag cannot slip past.
#include <CLI/CLI.hpp>

#include <c10/util/Exception.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

namespace lowrank {
namespace cli {

/// The validator's name; check_numbers_declared() looks for it.
constexpr const char* kNumberValidator = "lowrank-number";

/// An integer flag's limits, both included.
struct IntRange {
  int64_t lo = std::numeric_limits<int64_t>::min();
  int64_t hi = std::numeric_limits<int64_t>::max();
};
/// A real flag's limits; an infinite one means "any finite number" on that side.
struct RealRange {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false;  ///< lo itself is refused (x > lo)
  bool hi_open = false;  ///< hi itself is refused (x < hi)
};
inline RealRange positive(double hi = std::numeric_limits<double>::infinity()) { return {0, hi, true, false}; }
inline RealRange non_negative(double hi = std::numeric_limits<double>::infinity()) { return {0, hi, false, false}; }

/// The validators themselves (a transform: the text is rewritten into plain decimal for CLI11).
CLI::Validator integer_in(IntRange range);
CLI::Validator real_in(RealRange range);

/// `app->add_option(name, target, help)` for an integer flag accepting [range.lo, range.hi].
template <typename T>
CLI::Option* add_integer(CLI::App* app, const std::string& name, T& target, const std::string& help, IntRange range) {
  static_assert(std::is_integral<T>::value, "add_integer takes an integer field");
  const bool lo_fits = std::is_signed<T>::value ? range.lo >= static_cast<int64_t>(std::numeric_limits<T>::min())
                                                : range.lo >= 0;
  const bool hi_fits =
      range.hi < 0 || static_cast<uint64_t>(range.hi) <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  TORCH_INTERNAL_ASSERT(range.lo <= range.hi && lo_fits && hi_fits, name, ": limits [", range.lo, ", ", range.hi,
                        "] do not fit its type");
  return app->add_option(name, target, help)->transform(integer_in(range));
}

/// `app->add_option(name, target, help)` for a real flag accepting `range` (always finite).
CLI::Option* add_real(CLI::App* app, const std::string& name, double& target, const std::string& help,
                      RealRange range);

/// Throws (an internal error) naming any option of `app` or its subcommands that reads a number
/// without add_integer or add_real.
void check_numbers_declared(CLI::App& app);

}  // namespace cli
}  // namespace lowrank
