// Small POSIX I/O helpers shared by the reader and the writer.
#pragma once

#include <cstdint>
#include <string>

namespace fastensors::detail {

[[noreturn]] void throw_io(const char* what, const std::string& path);

// Reads exactly `size` bytes at `offset`; a short read (the file shrank) is a
// FileChanged error, never garbage.
void pread_exact(int fd, void* dst, std::uint64_t size, std::uint64_t offset, const std::string& path);

}  // namespace fastensors::detail
