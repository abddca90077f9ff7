// Converting a whole safetensors file, tensor by tensor, without holding it
// in memory: the output header is planned first, then each tensor is read in
// chunks, converted into a reusable buffer and streamed into an AtomicFile
// (writer.hpp), so peak memory is a few chunk buffers, not the model.
// Conversion semantics: docs/dtypes.md.
#pragma once

#include "fastensors/export.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/dtype.hpp"
#include "fastensors/writer.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

struct FileConversionOptions {
  WriteOptions write;
  ConvertOptions convert;
  // Source bytes read per step; the output buffer is sized to match.
  std::size_t chunk_bytes = std::size_t{8} << 20;
  // Called after each chunk with output bytes written so far and the output
  // file's size. It may throw to abandon the conversion (the target is then
  // left untouched).
  std::function<void(std::uint64_t done, std::uint64_t total)> progress;
};

struct FileConversionResult {
  std::uint64_t file_size = 0;   // bytes of the output file
  std::uint64_t data_size = 0;   // bytes of tensor data in it
  std::size_t converted = 0;     // tensors whose dtype changed
  std::size_t copied = 0;        // tensors copied unchanged
};

// Writes `dst` (atomically) with every tensor of `src`: those named in
// `targets` converted to the dtype given there, the rest byte for byte, and
// `src`'s metadata. A target equal to the tensor's dtype is a copy. Throws
// TensorNotFound for a name `src` lacks, UnsupportedConversion (naming the
// tensor) for a pair can_convert() rejects, and the reader's and writer's
// errors; on any error `dst` is untouched.
FileConversionResult convert_file(const std::string& src, const std::string& dst,
                                  const std::vector<std::pair<std::string, Dtype>>& targets,
                                  const FileConversionOptions& options = {});

}  // namespace fastensors
FASTENSORS_EXPORT_END
