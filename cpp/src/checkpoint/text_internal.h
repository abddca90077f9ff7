// Text as the Python layer writes it in its messages, so that an error reads
// the same from C++, the C API and Python (docs/embedding.md).
#pragma once

#include <string>
#include <string_view>

namespace fastensors::detail {

// The string as Python's repr() shows it: quoted with ' (or " when it holds
// a ' and no "), backslash escapes for \ \t \n \r and control characters.
// Bytes that are not UTF-8 show as \udcXX, as Python shows a path decoded
// with surrogateescape. Non-ASCII characters Python counts as unprintable are
// escaped for controls, format characters, separators and private use; the
// few unassigned code points are shown as they are (Python escapes them).
std::string py_repr(std::string_view s);

// Empty when `s` is UTF-8; else Python's UnicodeDecodeError text, e.g.
// "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte".
std::string utf8_error(std::string_view s);

// os.path.abspath: joined to the working directory and normalized
// lexically (no ".", "..", or repeated "/"; a leading "//" is kept).
std::string absolute_path(const std::string& path);

}  // namespace fastensors::detail
