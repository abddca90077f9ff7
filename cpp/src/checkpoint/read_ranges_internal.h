// The one place a checkpoint's tensor bytes are read: a list of (file,
// tensor, offset, size, destination). Every read of Checkpoint and read_box
// goes through it, so the parallel read engine can take it over whole.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "fastensors/file.hpp"
#include "fastensors/header.hpp"

namespace fastensors::detail {

struct ByteRange {
  const File* file = nullptr;
  const TensorInfo* tensor = nullptr;
  std::uint64_t offset = 0;  // bytes into the tensor
  std::uint64_t size = 0;
  void* dst = nullptr;
};

// Reads every range with one plan of the read engine (ranges never overlap
// in dst). Throws InvalidArgument for a range outside its tensor, and the
// engine's Io / FileChanged.
void read_ranges(const std::vector<ByteRange>& ranges);

// A shared_ptr that does not own `file`, for plans waited for while the
// owner keeps the file open.
std::shared_ptr<const File> borrowed(const File* file);

}  // namespace fastensors::detail
