#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fastensors/error.hpp"
#include "io/io_internal.h"

namespace fastensors::detail {

void throw_io(const char* what, const std::string& path) {
  int e = errno;
  throw Error(e == ENOENT ? ErrorCode::FileNotFound : ErrorCode::Io,
              std::string(what) + " failed: " + std::strerror(e), path, {}, e);
}

void pread_exact(int fd, void* dst, std::uint64_t size, std::uint64_t offset, const std::string& path) {
  auto* out = static_cast<unsigned char*>(dst);
  while (size > 0) {
    std::size_t chunk = size > (1u << 30) ? (1u << 30) : static_cast<std::size_t>(size);
    ssize_t n = ::pread(fd, out, chunk, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io("pread", path);
    }
    if (n == 0) {
      throw Error(ErrorCode::FileChanged, "the file ended early: it was truncated while open; reopen it", path);
    }
    out += n;
    size -= static_cast<std::uint64_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
}

}  // namespace fastensors::detail
