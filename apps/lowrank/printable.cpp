#include "printable.h"

#include <algorithm>
#include <cstdio>

namespace lowrank {
namespace cli {
namespace {

// Bytes of the well-formed UTF-8 sequence starting at s[i] (2 to 4), or 0 when there is none.
size_t utf8_sequence(const std::string& s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  // The lead byte gives the length; the second byte's range excludes overlong forms, surrogates
  // and code points past U+10FFFF (RFC 3629), and the C1 controls U+0080..U+009F, which a terminal
  // obeys as it does ESC.
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c == 0xC2) {
    n = 2;
    lo = 0xA0;
  } else if (c >= 0xC3 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  }
  if (n == 0 || i + n > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  return n;
}

}  // namespace

std::string printable(const std::string& text, size_t max_line) {
  std::string out;
  size_t line = 0;  // characters written on the current line
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += '\n';
      line = 0;
      ++i;
      continue;
    }
    if (line >= max_line) {  // skip to the end of the line, counting what is left out
      const size_t end = std::min(text.find('\n', i), text.size());
      out += "... (" + std::to_string(end - i) + " more bytes)";
      i = end;
      continue;
    }
    const size_t n = c >= 0x80 ? utf8_sequence(text, i) : 0;
    if (n > 0) {
      out.append(text, i, n);
      i += n;
      line += 1;
    } else if (c == '\t' || (c >= 0x20 && c < 0x7F)) {
      out += static_cast<char>(c);
      ++i;
      line += 1;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
      ++i;
      line += 4;
    }
  }
  return out;
}

}  // namespace cli
}  // namespace lowrank
