#include "fastensors/error.hpp"

#include <utility>

namespace fastensors {

std::string_view error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::Io: return "Io";
    case ErrorCode::FileNotFound: return "FileNotFound";
    case ErrorCode::HeaderTooSmall: return "HeaderTooSmall";
    case ErrorCode::HeaderTooLarge: return "HeaderTooLarge";
    case ErrorCode::InvalidHeaderLength: return "InvalidHeaderLength";
    case ErrorCode::InvalidUtf8: return "InvalidUtf8";
    case ErrorCode::InvalidJson: return "InvalidJson";
    case ErrorCode::InvalidHeader: return "InvalidHeader";
    case ErrorCode::NestingTooDeep: return "NestingTooDeep";
    case ErrorCode::DuplicateKey: return "DuplicateKey";
    case ErrorCode::UnknownDtype: return "UnknownDtype";
    case ErrorCode::InvalidShape: return "InvalidShape";
    case ErrorCode::InvalidOffsets: return "InvalidOffsets";
    case ErrorCode::OffsetsBackwards: return "OffsetsBackwards";
    case ErrorCode::OffsetsGap: return "OffsetsGap";
    case ErrorCode::OffsetsOverlap: return "OffsetsOverlap";
    case ErrorCode::Overflow: return "Overflow";
    case ErrorCode::SizeMismatch: return "SizeMismatch";
    case ErrorCode::MisalignedSubByte: return "MisalignedSubByte";
    case ErrorCode::TrailingBytes: return "TrailingBytes";
    case ErrorCode::TruncatedData: return "TruncatedData";
    case ErrorCode::InvalidMetadata: return "InvalidMetadata";
    case ErrorCode::TensorNotFound: return "TensorNotFound";
    case ErrorCode::InvalidArgument: return "InvalidArgument";
    case ErrorCode::UnsupportedConversion: return "UnsupportedConversion";
    case ErrorCode::UnsupportedIsa: return "UnsupportedIsa";
    case ErrorCode::FileChanged: return "FileChanged";
    case ErrorCode::CheckpointNotFound: return "CheckpointNotFound";
    case ErrorCode::AmbiguousCheckpoint: return "AmbiguousCheckpoint";
    case ErrorCode::InvalidIndex: return "InvalidIndex";
    case ErrorCode::ShardNotFound: return "ShardNotFound";
    case ErrorCode::TensorMissingFromShard: return "TensorMissingFromShard";
    case ErrorCode::UnlistedTensor: return "UnlistedTensor";
    case ErrorCode::TensorInMultipleShards: return "TensorInMultipleShards";
  }
  return "Unknown";
}

namespace {
std::string decorate(ErrorCode code, const std::string& message, const std::string& path,
                     const std::string& tensor) {
  std::string out(error_code_name(code));
  out += ": ";
  out += message;
  if (!tensor.empty()) {
    out += " (tensor '";
    out += tensor;
    out += "'";
    if (!path.empty()) {
      out += " in '";
      out += path;
      out += "'";
    }
    out += ")";
  } else if (!path.empty()) {
    out += " (in '";
    out += path;
    out += "')";
  }
  return out;
}
}  // namespace

Error::Error(ErrorCode code, std::string message, std::string path, std::string tensor,
             int errno_value)
    : std::runtime_error(decorate(code, message, path, tensor)),
      code_(code),
      message_(std::move(message)),
      path_(std::move(path)),
      tensor_(std::move(tensor)),
      errno_(errno_value) {}

}  // namespace fastensors
