// Writing safetensors files: the header is planned first, then tensor bytes
// stream in order from the caller's buffers to a temporary file beside the
// target, which is fsynced and renamed over it (docs/format.md, "Writing").
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "fastensors/dtype.hpp"
#include "fastensors/header.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// One tensor to write: a name, its type and shape, and its bytes (owned by the
// caller, alive until the write returns).
struct TensorSource {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  const void* data = nullptr;
  std::uint64_t nbytes = 0;
};

// The header a write will produce and the order tensors go in.
struct HeaderPlan {
  std::string bytes;               // 8-byte length + JSON + space padding
  std::vector<std::size_t> order;  // indices into the input, in file order
  std::vector<std::uint64_t> begins;  // data offset of each input tensor
  std::uint64_t data_size = 0;
  std::uint64_t total_size() const noexcept { return bytes.size() + data_size; }
};

// Orders tensors as the reference writer does (dtype descending in the
// Dtype declaration order, then name bytewise) and serializes the header:
// compact JSON, "__metadata__" first with keys in the given order, padded with
// spaces to a multiple of 8. `metadata_present` writes "__metadata__" even
// when empty. Validates names (unique, not "__metadata__"), byte lengths and
// metadata keys (unique); throws InvalidArgument / SizeMismatch / DuplicateKey.
HeaderPlan plan_header(const std::vector<TensorSource>& tensors, const Metadata& metadata,
                       bool metadata_present);

// The same header with the tensors kept in the given order (data offsets
// follow one another from 0 in that order) and without looking at their data:
// a new header for an existing file's unchanged data section, so an edit of
// the metadata can copy the data bytes as they are.
HeaderPlan plan_header_in_order(const std::vector<TensorSource>& tensors, const Metadata& metadata,
                                bool metadata_present);

struct WriteOptions {
  // fsync the file and its directory. Defaults to true unless the
  // environment sets FASTENSORS_DURABLE=0.
  bool durable = default_durable();
  static bool default_durable() noexcept;
};

// A file written to a temporary name in the target's directory and moved over
// the target by commit(). Destroying it uncommitted removes the temporary.
class AtomicFile {
 public:
  AtomicFile(const std::string& target, WriteOptions options = {});
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends bytes; handles short writes and EINTR; throws Io.
  void write(const void* data, std::size_t size);
  // Appends several buffers with as few system calls as possible.
  void write_all(const std::vector<std::pair<const void*, std::size_t>>& buffers);
  std::uint64_t written() const noexcept { return written_; }

  // fsync (when durable), rename over the target, fsync the directory.
  void commit();
  // Removes the temporary file; the target is untouched. Idempotent.
  void abort() noexcept;

  const std::string& temp_path() const noexcept { return temp_; }

 private:
  void after_write(std::uint64_t previous);

  std::string target_;
  std::string temp_;
  WriteOptions options_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
  std::uint64_t flushed_ = 0;  // bytes handed to writeback so far
  std::uint64_t waited_ = 0;   // bytes known to be on disk
  bool committed_ = false;
};

// Plans and writes a whole file atomically.
void write_file(const std::string& path, const std::vector<TensorSource>& tensors,
                const Metadata& metadata, bool metadata_present, WriteOptions options = {});

// Produces the bytes of tensors[index] when the writer reaches it: a pointer
// valid until the next call and its size (which must equal the planned
// nbytes). Called once per tensor, in file order, on the writing thread.
using TensorFill = std::function<std::pair<const void*, std::uint64_t>(std::size_t index)>;

// write_file for data produced on demand: the header is planned from names,
// dtypes, shapes and nbytes (`data` is ignored), then each tensor's bytes are
// asked of `fill` in file order and written at once, so only one tensor's
// bytes need exist at a time. An exception from `fill` aborts the write and
// leaves the target untouched. The file order is the reference writer's
// (dtype, then name), or with `keep_order` the order of `tensors`, which lets
// a producer emit the parts of one result back to back.
void write_file_streaming(const std::string& path, const std::vector<TensorSource>& tensors,
                          const Metadata& metadata, bool metadata_present, const TensorFill& fill,
                          WriteOptions options = {}, bool keep_order = false);

// The bytes write_file would produce, in memory.
std::string serialize(const std::vector<TensorSource>& tensors, const Metadata& metadata,
                      bool metadata_present);

}  // namespace fastensors
FASTENSORS_EXPORT_END
