// POSIX I/O helpers: opening a file to read (regular files only) and exact
// positioned reads.
#include <fcntl.h>
#include <sys/stat.h>
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

const char* file_kind(mode_t mode) noexcept {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "a special file";
}

void throw_not_regular(mode_t mode, const std::string& path) {
  if (S_ISDIR(mode)) throw Error(ErrorCode::Io, "is a directory", path, {}, EISDIR);
  throw Error(ErrorCode::Io, std::string("is ") + file_kind(mode) + ", not a regular file", path);
}

int open_regular_readonly(const std::string& path, std::uint64_t* size) {
  // Checked before opening: opening a FIFO waits for a writer, opening a
  // device can act on it (a tape drive rewinds), and opening a socket fails
  // with an unhelpful ENXIO.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) throw_not_regular(st.st_mode, path);
  // O_NONBLOCK: should the path become a FIFO between the check and the
  // open, the open returns at once instead of waiting; fstat then rejects it.
  // O_NOCTTY: a terminal put there never becomes the controlling one.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    throw Error(e == ENOENT ? ErrorCode::FileNotFound : ErrorCode::Io, std::string("cannot open: ") + std::strerror(e),
                path, {}, e);
  }
  auto fail = [&](const char* what) {
    int e = errno;
    ::close(fd);
    errno = e;
    throw_io(what, path);
  };
  if (::fstat(fd, &st) != 0) fail("fstat");
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_not_regular(st.st_mode, path);
  }
  // Back to a plain blocking descriptor (the flag means nothing to a regular
  // file's reads, but the descriptor should not carry it).
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) fail("fcntl");
  *size = static_cast<std::uint64_t>(st.st_size);
  return fd;
}

std::int64_t mtime_ns(const struct stat& st) noexcept {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
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
