// Overflow-checked arithmetic for sizes taken from untrusted headers.
#pragma once

#include <cstdint>

namespace fastensors::detail {

inline bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t* out) noexcept {
  return __builtin_mul_overflow(a, b, out);
}

inline bool add_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t* out) noexcept {
  return __builtin_add_overflow(a, b, out);
}

}  // namespace fastensors::detail
