// Checkpoints: a single safetensors file, or the shards a
// model.safetensors.index.json lists, opened as one set of tensors. Reads go
// into caller memory: a whole tensor, a range of rows, or any N-d box,
// optionally converted (F32, F16, BF16, ...: convert.hpp) on the way.
//
// The index and the shards must agree, with the rules (and error codes) of
// the Python layer (docs/sharding.md): every shard the index names exists,
// every tensor listed is in its shard, every tensor a shard holds is listed
// for that shard and no other. Shards are opened on first use and checked as
// they are opened; verify() checks them all.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fastensors/dtype.hpp"
#include "fastensors/file.hpp"
#include "fastensors/header.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// An index larger than this is not one (InvalidIndex); the Python layer's limit.
inline constexpr std::uint64_t kMaxIndexBytes = std::uint64_t{64} << 20;

// A part of a tensor: start[i] <= stop[i] <= shape[i] on every axis (as many
// axes as the tensor has). Elements come out row-major, contiguous.
struct Box {
  std::vector<std::uint64_t> start;
  std::vector<std::uint64_t> stop;
};

// Bytes a read of `box` of `tensor` produces as `to` (the stored dtype when
// empty). Throws InvalidArgument for a box that does not fit the tensor or
// whose bytes do not start and end on byte boundaries (sub-byte dtypes), and
// UnsupportedConversion when can_convert(stored, to) is false.
std::uint64_t box_bytes(const TensorInfo& tensor, const Box& box, std::optional<Dtype> to = {});

// The whole tensor, rows [begin, end) of axis 0 (the rest whole), as boxes.
Box whole_box(const TensorInfo& tensor);
Box row_box(const TensorInfo& tensor, std::uint64_t begin, std::uint64_t end);

// Reads `box` of a tensor of `file` into `dst` (at least box_bytes() bytes,
// else SizeMismatch), converted to `to` when given. Only the bytes of the box
// are read. Errors of File::read (Io, FileChanged) pass through.
void read_box(const File& file, const TensorInfo& tensor, const Box& box, void* dst, std::size_t dst_bytes,
              std::optional<Dtype> to = {});

// Where a checkpoint's path leads: a single file or an index.
struct Located {
  bool is_index = false;
  std::string path;
};

// A file, an index, or a directory holding one. In a directory,
// model.safetensors comes first, then model.safetensors.index.json, then a
// lone *.safetensors.index.json, then a lone *.safetensors (hidden files are
// skipped). Throws CheckpointNotFound or AmbiguousCheckpoint.
Located locate_checkpoint(const std::string& path);

class Checkpoint {
 public:
  // Opens a file, a directory or an index. For an index: the JSON is parsed
  // and every entry checked (InvalidIndex); shards open on first use.
  // Throws CheckpointNotFound, AmbiguousCheckpoint, InvalidIndex, and for a
  // single file the errors of File::open.
  static std::shared_ptr<Checkpoint> open(const std::string& path, Backend backend = Backend::Mmap);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // The file or index opened (absolute), and its directory.
  const std::string& path() const noexcept { return path_; }
  const std::string& directory() const noexcept { return directory_; }
  bool sharded() const noexcept { return sharded_; }
  Backend backend() const noexcept { return backend_; }

  // The files holding the tensors (relative to directory()), in order of
  // first appearance in the index.
  const std::vector<std::string>& files() const noexcept { return files_; }
  // (tensor name, index into files()) as the index lists them, in its order
  // (a single file: header order). No shard is opened.
  const std::vector<std::pair<std::string, std::size_t>>& entries() const noexcept { return entries_; }
  // Tensor count as the index lists them (no shard is opened).
  std::size_t size() const noexcept { return entries_.size(); }
  bool contains(std::string_view name) const noexcept;
  // The file (relative to directory()) holding `name`; TensorNotFound.
  const std::string& file_of(std::string_view name) const;

  // Every shard opened and checked against the index (verify()), then the
  // tensor names sorted bytewise.
  std::vector<std::string> keys() const;

  // Opens and checks every shard: each exists (ShardNotFound), holds exactly
  // the tensors the index lists for it (UnlistedTensor,
  // TensorMissingFromShard, TensorInMultipleShards).
  void verify() const;

  // A tensor's dtype, shape and offsets; opens its shard.
  const TensorInfo& info(std::string_view name) const;
  // The open shard holding `name` (opened and checked on first use).
  const File& shard_of(std::string_view name) const;
  // Shard `file_index` of files(), opened and checked on first use, shared:
  // it stays open while the caller holds it, even after close().
  std::shared_ptr<const File> shard_file(std::size_t file_index) const;

  // The first file's __metadata__, updated for shards with the index's
  // "metadata" other than total_size and total_parameters (values that are
  // not strings as compact JSON text).
  Metadata metadata() const;
  // The index's "metadata" object (values that are not strings as compact
  // JSON text); empty for a single file.
  const Metadata& index_metadata() const noexcept { return index_metadata_; }
  // The index's "metadata" object as compact JSON text, values with their
  // JSON types ("{}" when there is none, and for a single file).
  const std::string& index_metadata_json() const noexcept { return index_metadata_json_; }

  // Mmap backend: the tensor's bytes inside its shard's mapping (valid while
  // the checkpoint is open; copy-on-write). Null for the pread backend.
  const std::uint8_t* data(std::string_view name) const;

  // Reads into `dst` of `dst_bytes` (at least the box's bytes, else
  // SizeMismatch), converted to `to` when given (box_bytes()).
  void read(std::string_view name, void* dst, std::size_t dst_bytes, std::optional<Dtype> to = {}) const;
  void read_rows(std::string_view name, std::uint64_t begin, std::uint64_t end, void* dst, std::size_t dst_bytes,
                 std::optional<Dtype> to = {}) const;
  void read_box(std::string_view name, const Box& box, void* dst, std::size_t dst_bytes,
                std::optional<Dtype> to = {}) const;

  // Reads these tensors in ahead of use: their shards are opened; mapped
  // shards are made resident by one plan of the read engine (parallel
  // requests; returns when done, Io / FileChanged on failure), pread shards
  // get a posix_fadvise hint. TensorNotFound for an unknown name; a name
  // given twice is read once.
  void prefetch(const std::vector<std::string>& names) const;

  // Closes every shard (a shard still held from shard_file() closes when
  // released). Pointers from data() become invalid. Safe twice; shards
  // reopen on next use.
  void close() noexcept;

 private:
  Checkpoint() = default;
  const File& shard(std::size_t file_index) const;
  const File& open_shard_locked(std::size_t file_index) const;
  void check_shard(std::size_t file_index, const File& file) const;
  void check_counts(std::size_t file_index, const File& file) const;
  [[noreturn]] void missing_shard(std::size_t file_index) const;
  std::size_t entry(std::string_view name) const;

  std::string path_;
  std::string directory_;
  bool sharded_ = false;
  Backend backend_ = Backend::Mmap;
  std::vector<std::string> files_;
  // (tensor name, index into files_), in index order.
  std::vector<std::pair<std::string, std::size_t>> entries_;
  std::unordered_map<std::string_view, std::size_t> by_name_;  // name -> entries_ position
  std::vector<std::size_t> per_file_;                          // tensors listed per file
  Metadata index_metadata_;
  std::string index_metadata_json_ = "{}";

  mutable std::mutex mutex_;  // guards shards_ and verified_
  mutable std::vector<std::shared_ptr<File>> shards_;
  mutable bool verified_ = false;
};

}  // namespace fastensors
FASTENSORS_EXPORT_END
