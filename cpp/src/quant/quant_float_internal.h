// Scalar float-format helpers for the quantization kernels: F16/BF16 <-> F32
// and F32 <-> FP8 E4M3FN, all round-to-nearest-even and bit-exact with
// numpy / ml_dtypes for finite inputs. Kept private so that they can later be
// replaced by the shared dtype converter without touching the kernels.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastensors::quant_detail {

inline std::uint32_t f32_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_f32(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Right shift of a magnitude by `s` (1..31) with round-to-nearest-even.
inline std::uint32_t shift_rne(std::uint32_t m, unsigned s) {
  std::uint32_t q = m >> s;
  std::uint32_t rem = m & ((1u << s) - 1u);
  std::uint32_t half = 1u << (s - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return q;
}

inline std::uint16_t f32_to_f16_bits(float f) {
  std::uint32_t x = f32_bits(f);
  std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // Inf or NaN (NaN stays quiet and keeps its top payload bits)
    if (ax == 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds past 65504
  if (ax < 0x38800000u) {                                                    // F16 subnormal or zero
    if (ax < 0x33000000u) return sign;                                       // at most half of 2^-24
    unsigned e = ax >> 23;
    std::uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    return static_cast<std::uint16_t>(sign | shift_rne(m, 126u - e));
  }
  std::uint32_t r = ax - 0x38000000u;  // rebias the exponent 127 -> 15
  return static_cast<std::uint16_t>(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
}

inline float f16_bits_to_f32(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t e = (h >> 10) & 0x1fu;
  std::uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    if (m == 0) return bits_f32(sign);
    // Subnormal: m * 2^-24, exact in F32.
    float v = static_cast<float>(m) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

inline std::uint16_t f32_to_bf16_bits(float f) {
  std::uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_f32(std::uint16_t b) { return bits_f32(static_cast<std::uint32_t>(b) << 16); }

// F32 -> FP8 E4M3FN (no infinities, one NaN pattern per sign, max 448).
// Out-of-range values become NaN, as in ml_dtypes; the kernels clamp first.
inline std::uint8_t f32_to_e4m3_bits(float f) {
  std::uint32_t x = f32_bits(f);
  std::uint8_t sign = static_cast<std::uint8_t>((x >> 24) & 0x80u);
  std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<std::uint8_t>(sign | 0x7fu);
  std::uint32_t q;
  if (ax < 0x3c800000u) {  // below 2^-6: E4M3 subnormal (unit 2^-9) or zero
    unsigned e = ax >> 23;
    if (e < 117u) return sign;  // below 2^-10: rounds to zero
    std::uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    q = shift_rne(m, 141u - e);
  } else {
    std::uint32_t r = ax - (120u << 23);  // rebias 127 -> 7
    q = (r + 0x7ffffu + ((r >> 20) & 1u)) >> 20;
  }
  if (q > 0x7eu) q = 0x7fu;
  return static_cast<std::uint8_t>(sign | q);
}

inline float e4m3_bits_to_f32(std::uint8_t b) {
  std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  std::uint32_t e = (b >> 3) & 0xfu;
  std::uint32_t m = b & 0x7u;
  if (e == 0xf && m == 0x7) return bits_f32(sign | 0x7fc00000u);
  if (e == 0) {
    float v = static_cast<float>(m) * 0.001953125f;  // m * 2^-9
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 120u) << 23) | (m << 20));
}

// numpy's float32 -> int8/uint8 cast on x86-64: a truncating conversion to
// int32 (INT32_MIN when out of range or NaN), then the low byte.
inline std::uint8_t np_cast_byte(float v) {
  std::int32_t i = (v > -2147483904.0f && v < 2147483648.0f) ? static_cast<std::int32_t>(v) : INT32_MIN;
  return static_cast<std::uint8_t>(static_cast<std::uint32_t>(i) & 0xffu);
}

}  // namespace fastensors::quant_detail
