// The safetensors element types. Semantics of each format: docs/format.md.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// Declared in the reference implementation's order. The writer sorts tensors
// by this order, descending, so that wider types come first and every tensor
// starts aligned to its own element size; byte-identical output depends on it.
enum class Dtype : std::uint8_t {
  BOOL,
  F4,
  F6_E2M3,
  F6_E3M2,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  F64,
  I64,
  U64,
};

inline constexpr std::size_t kDtypeCount = 22;

// "F32", "BF16", ... exactly as written in headers.
std::string_view dtype_name(Dtype dtype) noexcept;

// Parses a header dtype name (case-sensitive, as the format requires).
std::optional<Dtype> parse_dtype(std::string_view name) noexcept;

// Storage bits per element: 1..64. Sub-byte types (F4, F6_*) pack densely.
unsigned dtype_bits(Dtype dtype) noexcept;

bool dtype_is_float(Dtype dtype) noexcept;

// All dtypes, in declaration order.
const Dtype* all_dtypes() noexcept;

}  // namespace fastensors
FASTENSORS_EXPORT_END
