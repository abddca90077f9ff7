// Opening safetensors files: a validated header plus access to tensor bytes,
// through a copy-on-write memory mapping or through pread.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fastensors/header.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

enum class Backend {
  Mmap,   // map the file copy-on-write; tensors are zero-copy views
  Pread,  // read bytes on demand with pread(2); nothing is mapped
};

// Parses "mmap" / "pread"; throws InvalidArgument otherwise.
Backend parse_backend(std::string_view name);

class File {
 public:
  // Opens and validates. Throws FileNotFound, Io, or a header rule's error.
  static std::shared_ptr<File> open(const std::string& path, Backend backend = Backend::Mmap);

  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const noexcept { return path_; }
  Backend backend() const noexcept { return backend_; }
  const Header& header() const noexcept { return header_; }
  std::uint64_t file_size() const noexcept { return file_size_; }

  // Tensor names sorted bytewise, and in data-offset order.
  std::vector<std::string> keys() const { return header_.sorted_keys(); }
  std::vector<std::string> offset_keys() const;
  const TensorInfo& info(std::string_view name) const { return header_.at(name); }
  const Metadata& metadata() const noexcept { return header_.metadata; }

  // Mmap backend only: the tensor's bytes inside the mapping (writable,
  // copy-on-write: writes never reach the file). Null for the pread backend.
  std::uint8_t* data(const TensorInfo& tensor) const noexcept;

  // Copies `size` bytes starting `offset` bytes into the tensor to `dst`.
  // Works with either backend; throws InvalidArgument when out of range, Io
  // when the read fails, FileChanged when the file shrank underneath (a
  // truncation while mapped is caught, not a SIGBUS: docs/security.md).
  void read(const TensorInfo& tensor, std::uint64_t offset, void* dst, std::uint64_t size) const;

  // Hints the kernel that a tensor's bytes will be read soon (madvise of the
  // mapping; posix_fadvise for the pread backend).
  void prefetch(const TensorInfo& tensor) const noexcept;

  // Drops the process's pages of a tensor (mmap backend; the pages touching
  // it, so neighbours' edge pages too): they leave the resident set, stay in
  // the page cache, and are read again from the file on the next access.
  // For streaming over a file much larger than memory. Writes made through
  // zero-copy views of those pages are lost (the mapping is copy-on-write).
  void release(const TensorInfo& tensor) const noexcept;

  // The copy-on-write mapping of the whole file (mmap backend), or null; and
  // the open descriptor (-1 once closed). For the read engine and embedders
  // that issue their own I/O; both stay valid until close().
  const std::uint8_t* mapping() const noexcept { return map_; }
  int descriptor() const noexcept { return fd_; }

  // Throws FileChanged when the open file is no longer what was opened: its
  // size or modification time differs from when it was opened (it was
  // truncated, extended or written to in place; a file renamed over the path
  // is not this file and does not count). One fstat; nothing once closed.
  void check_unchanged() const;

  // Unmaps and closes. Further data access throws; safe to call twice.
  void close() noexcept;
  bool closed() const noexcept { return fd_ < 0; }

 private:
  File() = default;

  std::string path_;
  Backend backend_ = Backend::Mmap;
  int fd_ = -1;
  std::uint64_t file_size_ = 0;
  std::int64_t mtime_ns_ = 0;
  std::uint8_t* map_ = nullptr;
  int guard_ = -1;  // the mapping's entry in the SIGBUS guard's table
  Header header_;
};

}  // namespace fastensors
FASTENSORS_EXPORT_END
