// Shared plumbing of the quantization kernels: loading F32/F16/BF16 input as
// F32, remembering the first non-finite input across threads, and rounding
// F32 results to the input's precision.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "convert/convert_internal.h"
#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "quant/quant_float_internal.h"

namespace fastensors::quant_detail {

inline void check_float_input(const quant::Matrix& in, const char* what) {
  if (in.dtype != Dtype::F32 && in.dtype != Dtype::F16 && in.dtype != Dtype::BF16) {
    throw Error(ErrorCode::InvalidArgument,
                std::string(what) + " takes F32, F16 or BF16 input, not " + std::string(dtype_name(in.dtype)));
  }
  if (in.data == nullptr && in.rows * in.cols != 0) throw Error(ErrorCode::InvalidArgument, "null input");
}

// dst[i] = element (offset + i) of the flat input, as F32 (F16 and BF16
// widen exactly, with the dtype converter's kernel of the active level).
inline void load_f32(const quant::Matrix& in, std::size_t offset, std::size_t n, float* dst) {
  if (in.dtype == Dtype::F32) {
    std::memcpy(dst, static_cast<const float*>(in.data) + offset, n * sizeof(float));
    return;
  }
  static const detail::ConvertKernel from_f16 = detail::level_kernel(fastensors::active_isa(), Dtype::F16, Dtype::F32);
  static const detail::ConvertKernel from_bf16 = detail::level_kernel(fastensors::active_isa(), Dtype::BF16, Dtype::F32);
  (in.dtype == Dtype::F16 ? from_f16 : from_bf16)(static_cast<const std::uint16_t*>(in.data) + offset, dst, n, false);
}

// The n values from `offset` as F32: a pointer into F32 input, else widened
// into `buf`.
inline const float* as_f32(const quant::Matrix& in, std::size_t offset, std::size_t n, float* buf) {
  if (in.dtype == Dtype::F32) return static_cast<const float*>(in.data) + offset;
  load_f32(in, offset, n, buf);
  return buf;
}

inline bool is_nonfinite(float v) { return (f32_bits(v) & 0x7f800000u) == 0x7f800000u; }

// Index (within n) of the first non-finite value, or n.
inline std::size_t first_nonfinite(const float* v, std::size_t n) {
  std::uint32_t any = 0;
  for (std::size_t i = 0; i < n; ++i) any |= static_cast<std::uint32_t>(is_nonfinite(v[i]));
  if (!any) return n;
  for (std::size_t i = 0; i < n; ++i) {
    if (is_nonfinite(v[i])) return i;
  }
  return n;
}

// The smallest flat index of a non-finite input seen by any thread.
class NonFinite {
 public:
  void report(std::size_t flat_index) {
    std::size_t cur = first_.load(std::memory_order_relaxed);
    while (flat_index < cur && !first_.compare_exchange_weak(cur, flat_index, std::memory_order_relaxed)) {
    }
  }
  // After the parallel region: throws InvalidArgument naming (row, col).
  void throw_if_any(const quant::Matrix& in, const char* scheme) const {
    std::size_t i = first_.load();
    if (i == kNone) return;
    std::size_t r = in.cols ? i / in.cols : 0, c = in.cols ? i % in.cols : 0;
    float v = 0;
    load_f32(in, i, 1, &v);
    throw Error(ErrorCode::InvalidArgument, std::string(scheme) + ": input has a non-finite value (" +
                                                (v != v ? "nan" : (v > 0 ? "inf" : "-inf")) + ") at row " +
                                                std::to_string(r) + ", column " + std::to_string(c));
  }

 private:
  static constexpr std::size_t kNone = ~static_cast<std::size_t>(0);
  std::atomic<std::size_t> first_{kNone};
};

// Rounds an F32 result to the precision of `dtype` (what a framework does
// after every arithmetic op on F16/BF16 tensors).
inline float round_to(Dtype dtype, float v) {
  if (dtype == Dtype::BF16) return bf16_bits_to_f32(f32_to_bf16_bits(v));
  if (dtype == Dtype::F16) return f16_bits_to_f32(f32_to_f16_bits(v));
  return v;
}

inline void store_scale(Dtype dtype, void* base, std::size_t i, float v) {
  if (dtype == Dtype::F32) {
    static_cast<float*>(base)[i] = v;
  } else if (dtype == Dtype::BF16) {
    static_cast<std::uint16_t*>(base)[i] = f32_to_bf16_bits(v);
  } else {
    static_cast<std::uint16_t*>(base)[i] = f32_to_f16_bits(v);
  }
}

inline float load_scale(Dtype dtype, const void* base, std::size_t i) {
  if (dtype == Dtype::F32) return static_cast<const float*>(base)[i];
  std::uint16_t b = static_cast<const std::uint16_t*>(base)[i];
  return dtype == Dtype::BF16 ? bf16_bits_to_f32(b) : f16_bits_to_f32(b);
}

// The F16 scales of the GGML blocks, stored and read little-endian.
inline void put_f16(std::uint8_t* p, float v) {
  std::uint16_t h = f32_to_f16_bits(v);
  std::memcpy(p, &h, 2);
}

inline float get_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_bits_to_f32(h);
}

inline std::int64_t to_i64(std::size_t v) { return static_cast<std::int64_t>(v); }

}  // namespace fastensors::quant_detail
