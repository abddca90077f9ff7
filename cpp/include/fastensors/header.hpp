// The safetensors header: parsing with every rule of docs/format.md, and
// planning (serializing) a header for the writer.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fastensors/dtype.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// Same limit as the reference implementation.
inline constexpr std::uint64_t kMaxHeaderSize = 100'000'000;
// JSON nesting that is rejected: kMaxJsonDepth levels or more (the reference,
// serde_json, accepts at most 127).
inline constexpr std::size_t kMaxJsonDepth = 128;

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;  // data_offsets, relative to the data section
  std::uint64_t end = 0;

  std::uint64_t nbytes() const noexcept { return end - begin; }
  std::uint64_t numel() const noexcept;  // valid once the header has validated
};

using Metadata = std::vector<std::pair<std::string, std::string>>;

// Tensor name -> position in a tensor list, as an open-addressing table of
// positions: names are stored once (in the TensorInfo), and a lookup takes a
// string_view without allocating. Positions stay valid when the list is
// copied or moved; rebuild after reordering it.
class NameIndex {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  // Adds position `i`; false (and nothing added) when tensors[i].name is
  // already present.
  bool insert(const std::vector<TensorInfo>& tensors, std::size_t i);
  std::size_t find(const std::vector<TensorInfo>& tensors, std::string_view name) const noexcept;
  // Indexes every tensor; false when two share a name.
  bool rebuild(const std::vector<TensorInfo>& tensors);
  std::size_t size() const noexcept { return size_; }

 private:
  void grow(const std::vector<TensorInfo>& tensors);
  // (hash tag << 32) | (position + 1); 0 marks an empty slot.
  std::vector<std::uint64_t> slots_;
  std::size_t size_ = 0;
};

struct Header {
  std::vector<TensorInfo> tensors;   // in data-offset order
  Metadata metadata;                 // in file order
  bool has_metadata = false;         // "__metadata__" present (and not null)
  std::uint64_t header_size = 0;     // the JSON length N from the first 8 bytes
  std::uint64_t data_start = 0;      // 8 + N
  std::uint64_t data_size = 0;       // end of the last tensor

  // Index of a tensor by name; throws TensorNotFound.
  const TensorInfo& at(std::string_view name) const;
  const TensorInfo* find(std::string_view name) const noexcept;
  std::vector<std::string> sorted_keys() const;

  NameIndex index;  // name -> position in tensors
};

// Reads the header length from the first 8 bytes and checks it against the
// file size. Returns N. `path` only labels errors.
std::uint64_t parse_header_length(const std::uint8_t* first8, std::uint64_t available,
                                  std::uint64_t file_size, const std::string& path);

// Parses and validates the JSON header bytes (N bytes after the length) for a
// file of `file_size` bytes in total.
Header parse_header(const std::uint8_t* json, std::uint64_t header_size, std::uint64_t file_size,
                    const std::string& path);

// Parses a whole in-memory safetensors buffer (length + header + data).
Header parse_buffer(const std::uint8_t* data, std::uint64_t size, const std::string& label = {});

}  // namespace fastensors
FASTENSORS_EXPORT_END
