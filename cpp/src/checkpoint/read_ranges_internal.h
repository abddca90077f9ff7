// The one place a checkpoint's tensor bytes are read: a list of (file,
// tensor, offset, size, destination). Every read of Checkpoint and read_box
// goes through it, so the parallel read engine can take it over whole.
#pragma once

#include <cstdint>
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

// Reads every range (in any order; ranges never overlap in dst). Throws what
// File::read throws.
void read_ranges(const std::vector<ByteRange>& ranges);

}  // namespace fastensors::detail
