// Python's repr() of a string, its UTF-8 decode error text, os.path.abspath.
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint/text_internal.h"
#include "io/io_internal.h"

namespace fastensors::detail {
namespace {

// One UTF-8 sequence at s[i]: its code point and length, or the reason and
// the length of the bad range, as CPython's decoder reports them.
struct Decoded {
  std::uint32_t cp = 0;
  std::size_t len = 1;
  const char* error = nullptr;
};

Decoded decode(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return {c, 1, nullptr};
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  std::uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
    cp = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    cp = c & 0x0Fu;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    cp = c & 0x07u;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return {0, 1, "invalid start byte"};
  }
  for (std::size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return {0, k, "unexpected end of data"};
    const unsigned char x = b(i + k);
    if (x < lo || x > hi) return {0, k, "invalid continuation byte"};
    lo = 0x80;
    hi = 0xBF;
    cp = (cp << 6) | (x & 0x3Fu);
  }
  return {cp, need + 1, nullptr};
}

// Python's str.isprintable() for non-ASCII, short of the unassigned code points.
bool printable(std::uint32_t cp) {
  struct Range {
    std::uint32_t lo, hi;
  };
  static const Range kNot[] = {
      {0x80, 0xA0},       {0xAD, 0xAD},       {0x600, 0x605},     {0x61C, 0x61C},     {0x6DD, 0x6DD},
      {0x70F, 0x70F},     {0x890, 0x891},     {0x8E2, 0x8E2},     {0x1680, 0x1680},   {0x180E, 0x180E},
      {0x2000, 0x200F},   {0x2028, 0x202F},   {0x205F, 0x2064},   {0x2066, 0x206F},   {0x3000, 0x3000},
      {0xD800, 0xF8FF},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0xFFFE, 0xFFFF},   {0x110BD, 0x110BD},
      {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
      {0xE0020, 0xE007F}, {0xF0000, 0x10FFFF},
  };
  for (const auto& r : kNot) {
    if (cp >= r.lo && cp <= r.hi) return false;
  }
  return true;
}

void hex_escape(std::string& out, char kind, std::uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\%c%0*x", kind, digits, static_cast<unsigned>(v));
  out += buf;
}

}  // namespace

std::string py_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const char quote = has_single && s.find('"') == std::string_view::npos ? '"' : '\'';
  std::string out(1, quote);
  out.reserve(s.size() + 2);
  for (std::size_t i = 0; i < s.size();) {
    const Decoded d = decode(s, i);
    if (d.error != nullptr) {  // each undecodable byte, as surrogateescape maps it
      hex_escape(out, 'u', 0xDC00u + static_cast<unsigned char>(s[i]), 4);
      ++i;
      continue;
    }
    const std::uint32_t cp = d.cp;
    if (cp == static_cast<unsigned char>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp < 0x20 || cp == 0x7F) {
      hex_escape(out, 'x', cp, 2);
    } else if (cp < 0x80 || printable(cp)) {
      out.append(s.substr(i, d.len));
    } else if (cp < 0x100) {
      hex_escape(out, 'x', cp, 2);
    } else if (cp < 0x10000) {
      hex_escape(out, 'u', cp, 4);
    } else {
      hex_escape(out, 'U', cp, 8);
    }
    i += d.len;
  }
  out += quote;
  return out;
}

std::string utf8_error(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const Decoded d = decode(s, i);
    if (d.error == nullptr) {
      i += d.len;
      continue;
    }
    char buf[96];
    if (d.len == 1) {
      std::snprintf(buf, sizeof buf, "byte 0x%02x in position %zu", static_cast<unsigned char>(s[i]), i);
    } else {
      std::snprintf(buf, sizeof buf, "bytes in position %zu-%zu", i, i + d.len - 1);
    }
    return std::string("'utf-8' codec can't decode ") + buf + ": " + d.error;
  }
  return {};
}

std::string absolute_path(const std::string& path) {
  std::string joined = path;
  if (path.empty() || path[0] != '/') {
    char buf[PATH_MAX];
    if (::getcwd(buf, sizeof buf) == nullptr) throw_io("getcwd", path);
    joined = std::string(buf) + (path.empty() ? "" : "/" + path);
  }
  // posixpath.normpath: "//" at the start (exactly two) is kept, others fold.
  const std::size_t lead = joined.compare(0, 2, "//") == 0 && joined.compare(0, 3, "///") != 0 ? 2 : 1;
  std::vector<std::string> parts;
  std::size_t begin = 0;
  while (begin <= joined.size()) {
    std::size_t end = joined.find('/', begin);
    if (end == std::string::npos) end = joined.size();
    std::string part = joined.substr(begin, end - begin);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();  // ".." above the root stays at the root
    } else if (!part.empty() && part != ".") {
      parts.push_back(std::move(part));
    }
    begin = end + 1;
  }
  std::string out(lead, '/');
  for (std::size_t k = 0; k < parts.size(); ++k) out += (k ? "/" : "") + parts[k];
  return out;
}

}  // namespace fastensors::detail
