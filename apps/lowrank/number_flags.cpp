#include "number_flags.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace lowrank {
namespace cli {
namespace {

// The shortest text that reads back as `x`; whole numbers below 1e15 without an exponent.
std::string num(double x) {
  if (std::floor(x) == x && std::fabs(x) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", x);
    return buf;
  }
  char buf[40];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

// The user's text as quoted in a message: printable ASCII only, at most 40 characters.
std::string shown(const std::string& text) {
  std::string out;
  for (unsigned char c : text.substr(0, 40)) out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  return text.size() > 40 ? out + "..." : out;
}

// Only the characters of decimal notation (digits, signs, a point, an exponent), so that inf, nan,
// 0x10 and leading blanks, all of which strtod accepts, are refused.
bool decimal(const std::string& t) {
  if (t.empty()) return false;
  bool digit = false;
  for (char c : t) {
    if (c >= '0' && c <= '9') digit = true;
    else if (c != '+' && c != '-' && c != '.' && c != 'e' && c != 'E') return false;
  }
  return digit;
}

// Parses `t` as a real number; "" when it is one (then *x holds it, ±inf when it overflows),
// otherwise the message.
std::string parse_real(const std::string& t, double* x) {
  char* end = nullptr;
  if (decimal(t)) {
    errno = 0;
    *x = std::strtod(t.c_str(), &end);
    if (end == t.c_str() + t.size()) return "";
  }
  return "'" + shown(t) + "' is not a number";
}

// "must be >= 1, got 0"; `limit` as printed.
std::string below(const std::string& t, const std::string& limit, bool open = false) {
  return std::string("must be ") + (open ? "> " : ">= ") + limit + ", got " + shown(t);
}
std::string above(const std::string& t, const std::string& limit, bool open = false) {
  return std::string("must be ") + (open ? "< " : "<= ") + limit + ", got " + shown(t);
}

}  // namespace

CLI::Validator integer_in(IntRange range) {
  CLI::Validator v(
      [range](std::string& t) -> std::string {
        // Integers (strtoll, base 10) first, so that 9007199254740993 stays exact; then reals
        // that are whole numbers (1e6).
        const std::string lo = std::to_string(range.lo), hi = std::to_string(range.hi);
        int64_t value = 0;
        char* end = nullptr;
        errno = 0;
        const long long ll = decimal(t) ? std::strtoll(t.c_str(), &end, 10) : 0;
        if (end == t.c_str() + t.size() && !t.empty()) {
          if (errno == ERANGE) return ll < 0 ? below(t, lo) : above(t, hi);
          value = ll;
        } else {
          double x = 0;
          const std::string err = parse_real(t, &x);
          if (!err.empty()) return err;
          if (x < double(range.lo)) return below(t, lo);
          if (x >= 0x1p63 || x > double(range.hi)) return above(t, hi);  // 2^63 is past int64 already
          if (std::floor(x) != x) return "'" + shown(t) + "' is not a whole number";
          value = static_cast<int64_t>(x);
        }
        if (value < range.lo) return below(t, lo);
        if (value > range.hi) return above(t, hi);
        t = std::to_string(value);
        return "";
      },
      "", kNumberValidator);
  return v;
}

CLI::Validator real_in(RealRange range) {
  CLI::Validator v(
      [range](std::string& t) -> std::string {
        double x = 0;
        const std::string err = parse_real(t, &x);
        if (!err.empty()) return err;
        if (x > range.hi || (range.hi_open && x == range.hi)) return above(t, num(range.hi), range.hi_open);
        if (x < range.lo || (range.lo_open && x == range.lo)) return below(t, num(range.lo), range.lo_open);
        if (!std::isfinite(x)) return "must be a finite number, got " + shown(t);
        char buf[40];
        std::snprintf(buf, sizeof(buf), "%.17g", x);
        t = buf;
        return "";
      },
      "", kNumberValidator);
  return v;
}

CLI::Option* add_real(CLI::App* app, const std::string& name, double& target, const std::string& help,
                      RealRange range) {
  TORCH_INTERNAL_ASSERT(range.lo <= range.hi, name, ": limits [", range.lo, ", ", range.hi, "] are empty");
  return app->add_option(name, target, help)->transform(real_in(range));
}

void check_numbers_declared(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands({})) {
    for (CLI::Option* opt : sub->get_options()) {
      const std::string type = opt->get_type_name();
      const bool number = type.rfind("INT", 0) == 0 || type.rfind("UINT", 0) == 0 || type.rfind("FLOAT", 0) == 0 ||
                          type.rfind("NUMBER", 0) == 0;
      if (!number) continue;
      bool declared = true;
      try {
        (void)opt->get_validator(kNumberValidator);
      } catch (const CLI::OptionNotFound&) {
        declared = false;
      }
      TORCH_INTERNAL_ASSERT(declared, "lowrank ", sub->get_name(), " ", opt->get_name(),
                            " reads a number without add_integer/add_real (apps/lowrank/number_flags.h)");
    }
    check_numbers_declared(*sub);
  }
}

}  // namespace cli
}  // namespace lowrank
