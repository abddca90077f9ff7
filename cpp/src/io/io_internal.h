// Small POSIX I/O helpers shared by the reader and the writer.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

namespace fastensors::detail {

[[noreturn]] void throw_io(const char* what, const std::string& path);

// "a FIFO (named pipe)", "a socket", "a character device", ... for a mode
// that is not a regular file's.
const char* file_kind(mode_t mode) noexcept;

// The Io error for a path that is not a regular file: "is a directory"
// (errno EISDIR) or "is a FIFO (named pipe), not a regular file" and so on.
[[noreturn]] void throw_not_regular(mode_t mode, const std::string& path);

// Opens a regular file read-only and returns its descriptor and size. Any
// other kind of file (directory, FIFO, socket, device) is an Io error naming
// the path, raised at once: nothing here blocks (a FIFO's open would wait for
// a writer) and no device is opened.
int open_regular_readonly(const std::string& path, std::uint64_t* size);

// Nanoseconds of a stat's modification time (what a write to the file moves).
std::int64_t mtime_ns(const struct stat& st) noexcept;

// Reads exactly `size` bytes at `offset`; a short read (the file shrank) is a
// FileChanged error, never garbage.
void pread_exact(int fd, void* dst, std::uint64_t size, std::uint64_t offset, const std::string& path);

}  // namespace fastensors::detail
