#pragma once
// Text from files (a CSV header, a cell, a line of JSON) quoted in an error message, made safe to
// print on a terminal: `lowrank plot` pointed at a binary file must not echo its raw bytes.
#include <cstddef>
#include <string>

namespace lowrank {
namespace cli {

/// `text` with control characters (other than newline and tab) and bytes that are not UTF-8
/// written as \xNN, and each line longer than `max_line` characters cut, saying how much was left out.
std::string printable(const std::string& text, size_t max_line = 400);

}  // namespace cli
}  // namespace lowrank
