// GGML block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1. The arithmetic follows the
// gguf Python package operation by operation in F32 (this file is compiled
// without FMA contraction): multiply by the inverse scale, round half away
// from zero (Q8_0) or add 8.5 / 16.5 / 0.5 and truncate, then numpy's
// float -> uint8 cast and clip. Scales are rounded to F16 only when stored.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "quant_internal.h"

namespace fastensors::quant {

using namespace quant_detail;

namespace {

constexpr std::size_t QK = kGgmlBlock;

inline void put_f16(std::uint8_t* p, float v) {
  std::uint16_t h = f32_to_f16_bits(v);
  std::memcpy(p, &h, 2);
}

inline float get_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_bits_to_f32(h);
}

// trunc() through an int32 conversion: exact (values of magnitude 2^23 and
// up are integers already, NaN passes through) and vectorizable at the
// baseline ISA, where std::trunc is a library call. The sign of a zero result
// is lost, which no caller observes (they cast to a byte next).
inline float trunc_i32(float v) {
  return std::fabs(v) < 8388608.0f ? static_cast<float>(static_cast<std::int32_t>(v)) : v;
}

// np_roundf in gguf: floor(|n|) + floor(2 * (|n| - floor(|n|))), signed.
// Both floors take non-negative arguments, where floor equals trunc.
inline float round_half_away(float n) {
  float a = std::fabs(n);
  float fl = trunc_i32(a);
  float b = fl + trunc_i32(2.0f * (a - fl));
  return n < 0 ? -b : (n > 0 ? b : 0.0f * b);
}

// Index of the first element with the largest magnitude (numpy argmax of abs).
inline std::size_t argmax_abs(const float* x) {
  std::size_t best = 0;
  float m = std::fabs(x[0]);
  for (std::size_t j = 1; j < QK; ++j) {
    float a = std::fabs(x[j]);
    if (a > m) {
      m = a;
      best = j;
    }
  }
  return best;
}

inline float inverse(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

void q8_0_block(const float* x, std::uint8_t* out) {
  float amax = 0.0f;
  for (std::size_t j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
  float d = amax / 127.0f;
  float id = inverse(d);
  put_f16(out, d);
  for (std::size_t j = 0; j < QK; ++j) out[2 + j] = np_cast_byte(round_half_away(x[j] * id));
}

// Codes of the "max / -k" formats (Q4_0: k = 8, Q5_0: k = 16).
inline void signed_codes(const float* x, float k, float bias, std::uint8_t qmax, std::uint8_t* q, float* d_out) {
  float maxv = x[argmax_abs(x)];
  float d = maxv / -k;
  float id = inverse(d);
  for (std::size_t j = 0; j < QK; ++j) {
    std::uint8_t v = np_cast_byte(trunc_i32(x[j] * id + bias));
    q[j] = v > qmax ? qmax : v;
  }
  *d_out = d;
}

// Codes of the min/max formats (Q4_1: 15 steps, Q5_1: 31 steps).
inline void affine_codes(const float* x, float steps, std::uint8_t qmax, std::uint8_t* q, float* d_out,
                         float* m_out) {
  float mx = x[0], mn = x[0];
  for (std::size_t j = 1; j < QK; ++j) {
    mx = std::max(mx, x[j]);
    mn = std::min(mn, x[j]);
  }
  float d = (mx - mn) / steps;
  float id = inverse(d);
  for (std::size_t j = 0; j < QK; ++j) {
    std::uint8_t v = np_cast_byte(trunc_i32((x[j] - mn) * id + 0.5f));
    q[j] = v > qmax ? qmax : v;
  }
  *d_out = d;
  *m_out = mn;
}

inline void pack_nibbles(const std::uint8_t* q, std::uint8_t* out) {
  for (std::size_t j = 0; j < QK / 2; ++j) {
    out[j] = static_cast<std::uint8_t>((q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4));
  }
}

inline void pack_high_bits(const std::uint8_t* q, std::uint8_t* out) {
  std::uint32_t qh = 0;
  for (std::size_t j = 0; j < QK; ++j) qh |= static_cast<std::uint32_t>((q[j] >> 4) & 1u) << j;
  for (int b = 0; b < 4; ++b) out[b] = static_cast<std::uint8_t>(qh >> (8 * b));
}

void quantize_block(GgmlType type, const float* x, std::uint8_t* out) {
  std::uint8_t q[QK];
  float d = 0, m = 0;
  switch (type) {
    case GgmlType::Q8_0:
      q8_0_block(x, out);
      return;
    case GgmlType::Q4_0:
      signed_codes(x, 8.0f, 8.5f, 15, q, &d);
      put_f16(out, d);
      pack_nibbles(q, out + 2);
      return;
    case GgmlType::Q4_1:
      affine_codes(x, 15.0f, 15, q, &d, &m);
      put_f16(out, d);
      put_f16(out + 2, m);
      pack_nibbles(q, out + 4);
      return;
    case GgmlType::Q5_0:
      signed_codes(x, 16.0f, 16.5f, 31, q, &d);
      put_f16(out, d);
      pack_high_bits(q, out + 2);
      pack_nibbles(q, out + 6);
      return;
    case GgmlType::Q5_1:
      affine_codes(x, 31.0f, 31, q, &d, &m);
      put_f16(out, d);
      put_f16(out + 2, m);
      pack_high_bits(q, out + 4);
      pack_nibbles(q, out + 8);
      return;
  }
}

inline std::uint8_t nibble(const std::uint8_t* qs, std::size_t j) {
  return j < QK / 2 ? (qs[j] & 0x0f) : (qs[j - QK / 2] >> 4);
}

inline std::uint8_t high_bit(const std::uint8_t* qh, std::size_t j) { return (qh[j / 8] >> (j % 8)) & 1u; }

void dequantize_block(GgmlType type, const std::uint8_t* in, float* y) {
  switch (type) {
    case GgmlType::Q8_0: {
      float d = get_f16(in);
      for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(in[2 + j])) * d;
      return;
    }
    case GgmlType::Q4_0: {
      float d = get_f16(in);
      for (std::size_t j = 0; j < QK; ++j) y[j] = d * static_cast<float>(nibble(in + 2, j) - 8);
      return;
    }
    case GgmlType::Q4_1: {
      float d = get_f16(in), m = get_f16(in + 2);
      for (std::size_t j = 0; j < QK; ++j) y[j] = d * static_cast<float>(nibble(in + 4, j)) + m;
      return;
    }
    case GgmlType::Q5_0: {
      float d = get_f16(in);
      for (std::size_t j = 0; j < QK; ++j) {
        int q = nibble(in + 6, j) | (high_bit(in + 2, j) << 4);
        y[j] = d * static_cast<float>(q - 16);
      }
      return;
    }
    case GgmlType::Q5_1: {
      float d = get_f16(in), m = get_f16(in + 2);
      for (std::size_t j = 0; j < QK; ++j) {
        int q = nibble(in + 8, j) | (high_bit(in + 4, j) << 4);
        y[j] = d * static_cast<float>(q) + m;
      }
      return;
    }
  }
}

const char* type_name(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return "q8_0";
    case GgmlType::Q4_0: return "q4_0";
    case GgmlType::Q4_1: return "q4_1";
    case GgmlType::Q5_0: return "q5_0";
    case GgmlType::Q5_1: return "q5_1";
  }
  return "?";
}

}  // namespace

std::size_t ggml_block_bytes(GgmlType type) noexcept {
  switch (type) {
    case GgmlType::Q8_0: return 34;
    case GgmlType::Q4_0: return 18;
    case GgmlType::Q4_1: return 20;
    case GgmlType::Q5_0: return 22;
    case GgmlType::Q5_1: return 24;
  }
  return 0;
}

std::size_t ggml_row_bytes(GgmlType type, std::size_t cols) {
  if (cols % QK != 0) {
    throw Error(ErrorCode::InvalidArgument, std::string(type_name(type)) + ": row length " + std::to_string(cols) +
                                                " is not a multiple of the block size 32");
  }
  return cols / QK * ggml_block_bytes(type);
}

void ggml_quantize(GgmlType type, const Matrix& in, std::uint8_t* out) {
  check_float_input(in, type_name(type));
  ggml_row_bytes(type, in.cols);  // validates cols
  const std::size_t nblocks = in.rows * (in.cols / QK);
  const std::size_t bb = ggml_block_bytes(type);
  NonFinite bad;
#pragma omp parallel for schedule(static) if (nblocks > 256)
  for (std::int64_t b = 0; b < to_i64(nblocks); ++b) {
    float x[QK];
    const std::size_t off = static_cast<std::size_t>(b) * QK;
    load_f32(in, off, QK, x);
    std::size_t nf = first_nonfinite(x, QK);
    if (nf != QK) {
      bad.report(off + nf);
      continue;
    }
    quantize_block(type, x, out + static_cast<std::size_t>(b) * bb);
  }
  bad.throw_if_any(in, type_name(type));
}

void ggml_dequantize(GgmlType type, const std::uint8_t* in, std::size_t rows, std::size_t cols, float* out) {
  ggml_row_bytes(type, cols);
  const std::size_t nblocks = rows * (cols / QK);
  const std::size_t bb = ggml_block_bytes(type);
#pragma omp parallel for schedule(static) if (nblocks > 256)
  for (std::int64_t b = 0; b < to_i64(nblocks); ++b) {
    dequantize_block(type, in + static_cast<std::size_t>(b) * bb, out + static_cast<std::size_t>(b) * QK);
  }
}

}  // namespace fastensors::quant
