// Typed errors. Every failure has a code naming the rule that was broken, and
// a message that says what, where (file, tensor) and why.
#pragma once

#include "fastensors/export.hpp"

#include <stdexcept>
#include <string>
#include <string_view>

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

enum class ErrorCode {
  Io,                   // an operating-system call failed (errno() says which)
  FileNotFound,         // the file does not exist
  HeaderTooSmall,       // fewer than 8 bytes for the header length
  HeaderTooLarge,       // header length over kMaxHeaderSize
  InvalidHeaderLength,  // header length runs past the end of the file
  InvalidUtf8,          // header bytes are not UTF-8
  InvalidJson,          // header is not JSON
  InvalidHeader,        // JSON, but not a safetensors header (wrong types, missing fields)
  NestingTooDeep,       // JSON nested deeper than kMaxJsonDepth
  DuplicateKey,         // a tensor, field or metadata key appears twice
  UnknownDtype,         // dtype name not in the dtype table
  InvalidShape,         // a dimension that is not a non-negative integer
  InvalidOffsets,       // data_offsets that are not two non-negative integers
  OffsetsBackwards,     // data_offsets end before they begin
  OffsetsGap,           // a hole before a tensor (the first must start at 0)
  OffsetsOverlap,       // a tensor starts before the previous one ends
  Overflow,             // shape x element size does not fit in 64 bits
  SizeMismatch,         // byte length differs from dtype bits x elements / 8
  MisalignedSubByte,    // a sub-byte tensor does not end on a byte boundary
  TrailingBytes,        // bytes after the last tensor
  TruncatedData,        // the file ends before the last tensor does
  InvalidMetadata,      // __metadata__ is not an object of strings
  TensorNotFound,       // no tensor of that name
  InvalidArgument,      // a caller error (writer inputs, bad backend, ...)
  UnsupportedConversion,  // no conversion between these two dtypes
  UnsupportedIsa,         // FASTENSORS_ISA names a level this CPU or build cannot run
  FileChanged,            // the file shrank or was cut while mapped or open (docs/security.md)
  // Checkpoints (a set of files with an index; fastensors/checkpoint.hpp).
  CheckpointNotFound,      // no file, directory or index at the path, or none in the directory
  AmbiguousCheckpoint,     // a directory with several candidate files and none of the standard names
  InvalidIndex,            // the index is not a valid model.safetensors.index.json
  ShardNotFound,           // a shard the index names does not exist
  TensorMissingFromShard,  // the index lists a tensor in a shard that does not hold it
  UnlistedTensor,          // a shard holds a tensor the index does not list
  TensorInMultipleShards,  // two shards hold the same tensor
};

// The last code; codes run from 0 to it without gaps (new ones are appended).
inline constexpr ErrorCode kLastErrorCode = ErrorCode::TensorInMultipleShards;

std::string_view error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message, std::string path = {}, std::string tensor = {},
        int errno_value = 0);

  ErrorCode code() const noexcept { return code_; }
  // The message alone; what() adds the code name, tensor and path to it.
  const std::string& message() const noexcept { return message_; }
  const std::string& path() const noexcept { return path_; }
  const std::string& tensor() const noexcept { return tensor_; }
  // The errno of a failed system call, for Io and FileNotFound; else 0.
  int errno_value() const noexcept { return errno_; }

 private:
  ErrorCode code_;
  std::string message_;
  std::string path_;
  std::string tensor_;
  int errno_;
};

}  // namespace fastensors
FASTENSORS_EXPORT_END
