// File: a safetensors file opened for reading (mmap or pread), its header
// parsed and checked once; tensor bytes are then read, mapped or prefetched.
#include "fastensors/file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "fastensors/error.hpp"
#include "io/io_internal.h"
#include "io/mapping_guard_internal.h"

namespace fastensors {

Backend parse_backend(std::string_view name) {
  if (name == "mmap") return Backend::Mmap;
  if (name == "pread") return Backend::Pread;
  throw Error(ErrorCode::InvalidArgument, "unknown backend '" + std::string(name) + "' (use \"mmap\" or \"pread\")");
}

std::shared_ptr<File> File::open(const std::string& path, Backend backend) {
  std::shared_ptr<File> f(new File());
  f->path_ = path;
  f->backend_ = backend;
  // Regular files only: a FIFO, socket or device is an error at once.
  f->fd_ = detail::open_regular_readonly(path, &f->file_size_);
  struct stat st;
  if (::fstat(f->fd_, &st) != 0) detail::throw_io("fstat", path);
  f->mtime_ns_ = detail::mtime_ns(st);

  std::uint8_t first8[8] = {};
  std::uint64_t got = f->file_size_ < 8 ? f->file_size_ : 8;
  detail::pread_exact(f->fd_, first8, got, 0, path);
  std::uint64_t n = parse_header_length(first8, got, f->file_size_, path);

  if (backend == Backend::Mmap) {
    // Copy-on-write: views are writable and writes never reach the file.
    void* p = ::mmap(nullptr, f->file_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, f->fd_, 0);
    if (p == MAP_FAILED) detail::throw_io("mmap", path);
    f->map_ = static_cast<std::uint8_t*>(p);
    f->guard_ = detail::register_mapping(p, f->file_size_, f->fd_, f->file_size_);
    detail::MappedReadGuard guard(f->map_, path);
    f->header_ = parse_header(f->map_ + 8, n, f->file_size_, path);
    guard.finish();
  } else {
    std::vector<std::uint8_t> json(n);
    detail::pread_exact(f->fd_, json.data(), n, 8, path);
    f->header_ = parse_header(json.data(), n, f->file_size_, path);
  }
  return f;
}

File::~File() { close(); }

void File::close() noexcept {
  if (map_ != nullptr) {
    detail::unregister_mapping(guard_);
    guard_ = -1;
    ::munmap(map_, file_size_);
    map_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

std::vector<std::string> File::offset_keys() const {
  std::vector<std::string> keys;
  keys.reserve(header_.tensors.size());
  for (const auto& t : header_.tensors) keys.push_back(t.name);
  return keys;
}

std::uint8_t* File::data(const TensorInfo& tensor) const noexcept {
  if (map_ == nullptr) return nullptr;
  return map_ + header_.data_start + tensor.begin;
}

void File::read(const TensorInfo& tensor, std::uint64_t offset, void* dst, std::uint64_t size) const {
  if (closed()) throw Error(ErrorCode::InvalidArgument, "the file is closed", path_, tensor.name);
  if (offset > tensor.nbytes() || size > tensor.nbytes() - offset) {
    throw Error(ErrorCode::InvalidArgument,
                "read of " + std::to_string(size) + " bytes at " + std::to_string(offset) + " is outside the tensor",
                path_, tensor.name);
  }
  if (size == 0) return;
  std::uint64_t at = header_.data_start + tensor.begin + offset;
  if (map_ != nullptr) {
    detail::MappedReadGuard guard(map_ + at, path_);
    std::memcpy(dst, map_ + at, size);
    guard.finish();
  } else {
    detail::pread_exact(fd_, dst, size, at, path_);
  }
}

void File::check_unchanged() const {
  if (fd_ < 0) return;
  struct stat st;
  if (::fstat(fd_, &st) != 0) detail::throw_io("fstat", path_);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size != file_size_ || detail::mtime_ns(st) != mtime_ns_) {
    throw Error(ErrorCode::FileChanged,
                size != file_size_ ? "the file changed size while open (" + std::to_string(file_size_) + " -> " +
                                         std::to_string(size) + " bytes); reopen it"
                                   : "the file was written to while open (its modification time changed); reopen it",
                path_);
  }
}

void File::prefetch(const TensorInfo& tensor) const noexcept {
  if (tensor.nbytes() == 0 || fd_ < 0) return;
  if (map_ == nullptr) {  // pread: start reading the range into the page cache
    ::posix_fadvise(fd_, static_cast<off_t>(header_.data_start + tensor.begin), static_cast<off_t>(tensor.nbytes()),
                    POSIX_FADV_WILLNEED);
    return;
  }
  std::uint64_t start = header_.data_start + tensor.begin;
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  std::uint64_t aligned = start - start % page;
  ::madvise(map_ + aligned, tensor.end + header_.data_start - aligned, MADV_WILLNEED);
}

void File::release(const TensorInfo& tensor) const noexcept {
  if (map_ == nullptr || tensor.nbytes() == 0) return;
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t start = header_.data_start + tensor.begin;
  const std::uint64_t aligned = start - start % page;
  ::madvise(map_ + aligned, tensor.end + header_.data_start - aligned, MADV_DONTNEED);
}

}  // namespace fastensors
