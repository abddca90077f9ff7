// Private to the library: the scalar reference conversions, one function per
// element, working on bit patterns. They state the semantics of
// docs/dtypes.md in plain code; every SIMD kernel is tested against them bit
// for bit, and uses them for the few elements around its vector loop.
//
// Everything here has internal linkage (an unnamed namespace), on purpose:
// each per-ISA source file compiles its own copy with its own target flags,
// so the linker can never pick an AVX-512 build of a helper for code that
// runs on a CPU without AVX-512.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fastensors::detail {
namespace {

// -- bit casts ---------------------------------------------------------------

inline std::uint32_t bits_of(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float float_of(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline int highest_bit(std::uint32_t x) noexcept { return 31 - __builtin_clz(x); }

// -- generic binary formats ---------------------------------------------------

// F32 bits of the finite value with exponent field `e` and mantissa field `m`
// in a binary format with `Mbits` mantissa bits and exponent bias `Bias`
// (subnormal when e == 0). Exact: every such value is an F32.
template <int Mbits, int Bias>
inline std::uint32_t finite_to_f32(std::uint32_t sign, std::uint32_t e, std::uint32_t m) noexcept {
  if (e == 0) {
    if (m == 0) return sign;
    // m * 2^(1 - Bias - Mbits) = 2^(k + 1 - Bias - Mbits) * (m / 2^k)
    const int k = highest_bit(m);
    const auto exponent = static_cast<std::uint32_t>(k + 1 - Bias - Mbits + 127);
    return sign | (exponent << 23) | ((m - (1u << k)) << (23 - k));
  }
  return sign | ((e - Bias + 127) << 23) | (m << (23 - Mbits));
}

// Rounds the finite, non-negative F32 `a` (bits, sign cleared) to the nearest
// value of a format with `Mbits` mantissa bits and exponent bias `Bias`, ties
// to even, and returns that value's magnitude code (exponent field <<
// Mbits | mantissa field). The exponent is unbounded above: values past the
// format's largest finite number give codes past its range, and the caller
// decides what overflow becomes (infinity, NaN). Subnormal results are exact
// nearest-even roundings too.
template <int Mbits, int Bias>
inline std::uint32_t round_magnitude(std::uint32_t a) noexcept {
  static_assert(Bias <= 127 && Mbits < 23, "the format must fit inside F32");
  constexpr std::uint32_t kMinNormal = static_cast<std::uint32_t>(128 - Bias) << 23;  // 2^(1-Bias)
  if (a >= kMinNormal) {
    // Rebias the exponent, then round the mantissa at bit `s`; a carry out of
    // the mantissa correctly bumps the exponent.
    constexpr int s = 23 - Mbits;
    constexpr std::uint32_t rebias = static_cast<std::uint32_t>(127 - Bias) << 23;
    return (a - rebias + ((1u << (s - 1)) - 1) + ((a >> s) & 1)) >> s;
  }
  // Below the smallest normal: count in units of the smallest subnormal.
  const std::uint32_t e = a >> 23;
  const std::uint32_t m = (a & 0x7FFFFFu) | (e ? 0x800000u : 0u);
  const std::uint32_t e_eff = e ? e : 1;
  std::uint32_t s = 151 - Bias - Mbits - e_eff;  // at least 24 - Mbits
  if (s > 25) s = 25;  // m < 2^24: any shift from 25 on rounds to zero
  return (m + ((1u << (s - 1)) - 1) + ((m >> s) & 1)) >> s;
}

// -- BF16 and F16 -------------------------------------------------------------

inline std::uint32_t bf16_to_f32(std::uint16_t h) noexcept { return std::uint32_t{h} << 16; }

// Ties to even; NaN becomes the quiet NaN 0x7FC0 with the input's sign
// (ml_dtypes); overflow rounds to infinity.
inline std::uint16_t f32_to_bf16(std::uint32_t u) noexcept {
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);
  return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// Exact. NaN payloads shift into place and signaling NaNs stay signaling
// (numpy's float16 -> float32 cast).
inline std::uint32_t f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1Fu;
  const std::uint32_t m = h & 0x3FFu;
  if (e == 0x1F) return sign | 0x7F800000u | (m << 13);
  return finite_to_f32<10, 15>(sign, e, m);
}

// Ties to even; overflow rounds to infinity. NaN keeps the sign and the top
// 10 payload bits, is never quieted, and becomes 0x7C01 (with the sign) when
// those bits are all zero (numpy's float32 -> float16 cast).
inline std::uint16_t f32_to_f16(std::uint32_t u) noexcept {
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) {
    const std::uint32_t payload = (a & 0x7FFFFFu) >> 13;
    return static_cast<std::uint16_t>(sign | 0x7C00u | (payload ? payload : 1u));
  }
  if (a == 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7C00u);
  std::uint32_t r = round_magnitude<10, 15>(a);
  if (r > 0x7C00u) r = 0x7C00u;
  return static_cast<std::uint16_t>(sign | r);
}

// F16 -> BF16 is exact through F32 and a single rounding; NaN becomes 0x7FC0
// with the sign, exactly what f32_to_bf16 does.
inline std::uint16_t f16_to_bf16(std::uint16_t h) noexcept { return f32_to_bf16(f16_to_f32(h)); }

// BF16 -> F16: one rounding (BF16 -> F32 is exact), but NaN becomes the quiet
// NaN 0x7E00 with the sign (ml_dtypes' direct cast), not numpy's truncated
// payload.
inline std::uint16_t bf16_to_f16(std::uint16_t h) noexcept {
  if ((h & 0x7FFFu) > 0x7F80u) return static_cast<std::uint16_t>((h & 0x8000u) | 0x7E00u);
  return f32_to_f16(bf16_to_f32(h));
}

// -- FP8 ------------------------------------------------------------------------

// How a format spends its top codes on infinity and NaN.
enum class Fp8Kind {
  Ieee,  // E5M2: exponent all ones = infinity (mantissa 0) or NaN
  Fn,    // E4M3FN: no infinity; only S.1111.111 is NaN
  Fnuz,  // *FNUZ: no infinity, no negative zero; 0x80 is the only NaN
};

template <int Mbits, int Bias, Fp8Kind Kind>
struct Fp8Format {
  static constexpr int kMbits = Mbits;
  static constexpr int kBias = Bias;
  static constexpr Fp8Kind kKind = Kind;
};

using E4M3 = Fp8Format<3, 7, Fp8Kind::Fn>;
using E5M2 = Fp8Format<2, 15, Fp8Kind::Ieee>;
using E4M3Fnuz = Fp8Format<3, 8, Fp8Kind::Fnuz>;
using E5M2Fnuz = Fp8Format<2, 16, Fp8Kind::Fnuz>;

// Exact; every NaN becomes the quiet NaN 0x7FC00000 with the input's sign
// (FNUZ's NaN 0x80 has the sign bit set, so it gives 0xFFC00000).
template <class F>
inline std::uint32_t fp8_to_f32(std::uint8_t b) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  const std::uint32_t mag = b & 0x7Fu;
  if constexpr (F::kKind == Fp8Kind::Fnuz) {
    if (b == 0x80) return 0xFFC00000u;
  } else if constexpr (F::kKind == Fp8Kind::Fn) {
    if (mag == 0x7F) return sign | 0x7FC00000u;
  } else {
    if (mag >= 0x7C) return sign | (mag == 0x7C ? 0x7F800000u : 0x7FC00000u);
  }
  return finite_to_f32<F::kMbits, F::kBias>(sign, mag >> F::kMbits, mag & ((1u << F::kMbits) - 1));
}

// Ties to even. Overflow (a rounded magnitude past the largest finite value)
// and infinities become infinity in E5M2 and NaN in the others; NaN stays
// NaN: E5M2 0x7E and E4M3FN 0x7F with the input's sign, FNUZ 0x80. FNUZ has
// no negative zero: anything rounding to zero is 0x00.
template <class F>
inline std::uint8_t f32_to_fp8(std::uint32_t u) noexcept {
  const std::uint32_t sign = (u >> 24) & 0x80u;
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if constexpr (F::kKind == Fp8Kind::Fnuz) {
    if (a >= 0x7F800000u) return 0x80;
    const std::uint32_t r = round_magnitude<F::kMbits, F::kBias>(a);
    if (r > 0x7Fu) return 0x80;
    return static_cast<std::uint8_t>(r ? (sign | r) : 0u);
  } else if constexpr (F::kKind == Fp8Kind::Fn) {
    if (a >= 0x7F800000u) return static_cast<std::uint8_t>(sign | 0x7Fu);
    std::uint32_t r = round_magnitude<F::kMbits, F::kBias>(a);
    if (r > 0x7Fu) r = 0x7Fu;  // 0x7F itself is NaN
    return static_cast<std::uint8_t>(sign | r);
  } else {
    if (a > 0x7F800000u) return static_cast<std::uint8_t>(sign | 0x7Eu);
    std::uint32_t r = a == 0x7F800000u ? 0x7Cu : round_magnitude<F::kMbits, F::kBias>(a);
    if (r > 0x7Cu) r = 0x7Cu;
    return static_cast<std::uint8_t>(sign | r);
  }
}

// F8_E8M0 (ml_dtypes float8_e8m0fnu): 2^(b - 127), 0xFF is NaN; no sign, no
// zero. Code 0 is 2^-127, an F32 subnormal.
inline std::uint32_t e8m0_to_f32(std::uint8_t b) noexcept {
  if (b == 0xFF) return 0x7FC00000u;
  if (b == 0) return 0x00400000u;
  return static_cast<std::uint32_t>(b) << 23;
}

// The nearest power of two, ties (1.5 * 2^k) going up (docs/dtypes.md):
// normal inputs add one to the exponent when the mantissa is >= 0.5;
// subnormal inputs give 2^-127 below 1.5 * 2^-127 and 2^-126 from there up;
// zero, negative numbers (-0 too), infinity, NaN and overflow give NaN.
inline std::uint8_t f32_to_e8m0(std::uint32_t u) noexcept {
  if (u == 0 || u >= 0x7F800000u) return 0xFF;
  if (u < 0x00800000u) return u >= 0x00600000u ? 1 : 0;
  const std::uint32_t r = (u >> 23) + ((u >> 22) & 1u);
  return static_cast<std::uint8_t>(r >= 0xFFu ? 0xFFu : r);
}

// -- F64 ------------------------------------------------------------------------

// Exact; NaN is quieted and its payload shifted into place (the x86
// CVTSS2SD result numpy gives).
inline std::uint64_t f32_to_f64(std::uint32_t u) noexcept {
  const std::uint64_t sign = static_cast<std::uint64_t>(u & 0x80000000u) << 32;
  const std::uint32_t e = (u >> 23) & 0xFFu;
  const std::uint64_t m = u & 0x7FFFFFu;
  if (e == 0xFF) {
    if (m == 0) return sign | 0x7FF0000000000000ull;
    return sign | 0x7FF8000000000000ull | (m << 29);
  }
  if (e == 0) {
    if (m == 0) return sign;
    const int k = highest_bit(static_cast<std::uint32_t>(m));  // m * 2^-149
    const auto exponent = static_cast<std::uint64_t>(k - 149 + 1023);
    return sign | (exponent << 52) | ((m - (1ull << k)) << (52 - k));
  }
  return sign | (static_cast<std::uint64_t>(e + 896) << 52) | (m << 29);
}

// Ties to even; overflow rounds to infinity; subnormal results are exact
// roundings. NaN is quieted and keeps the sign and the top 22 payload bits
// (the x86 CVTSD2SS result numpy gives).
inline std::uint32_t f64_to_f32(std::uint64_t u) noexcept {
  const auto sign = static_cast<std::uint32_t>((u >> 32) & 0x80000000u);
  const std::uint64_t a = u & 0x7FFFFFFFFFFFFFFFull;
  if (a > 0x7FF0000000000000ull) {
    return sign | 0x7FC00000u | static_cast<std::uint32_t>((a & 0xFFFFFFFFFFFFFull) >> 29);
  }
  if (a == 0x7FF0000000000000ull) return sign | 0x7F800000u;
  constexpr std::uint64_t kMinNormal = 897ull << 52;  // 2^-126
  std::uint64_t r;
  if (a >= kMinNormal) {
    r = (a - (896ull << 52) + ((1ull << 28) - 1) + ((a >> 29) & 1)) >> 29;
  } else {
    const std::uint64_t e = a >> 52;
    const std::uint64_t m = (a & 0xFFFFFFFFFFFFFull) | (e ? (1ull << 52) : 0);
    std::uint64_t s = 926 - (e ? e : 1);  // units of 2^-149; at least 30
    if (s > 54) s = 54;                   // m < 2^53
    r = (m + ((1ull << (s - 1)) - 1) + ((m >> s) & 1)) >> s;
  }
  if (r > 0x7F800000ull) r = 0x7F800000ull;
  return sign | static_cast<std::uint32_t>(r);
}

// -- integers -------------------------------------------------------------------

// Nearest, ties to even (the C++ conversion under the default rounding mode,
// which the dispatcher guarantees). BOOL: any non-zero byte is 1.
template <class T>
inline std::uint32_t int_to_f32(T v) noexcept {
  return bits_of(static_cast<float>(v));
}

inline std::uint32_t bool_to_f32(std::uint8_t v) noexcept { return v ? 0x3F800000u : 0u; }

// -- element loops --------------------------------------------------------------

// Loads and stores through memcpy: tensors inside a file need not be aligned.
template <class S, class D, D (*F)(S)>
inline void scalar_loop(const void* src, void* dst, std::size_t n) noexcept {
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  for (std::size_t i = 0; i < n; ++i) {
    S x;
    std::memcpy(&x, s + i * sizeof(S), sizeof(S));
    const D y = F(x);
    std::memcpy(d + i * sizeof(D), &y, sizeof(D));
  }
}

template <class S, class D, D (*F)(S)>
inline void scalar_kernel(const void* src, void* dst, std::size_t n, bool /*stream*/) noexcept {
  scalar_loop<S, D, F>(src, dst, n);
}

}  // namespace
}  // namespace fastensors::detail
