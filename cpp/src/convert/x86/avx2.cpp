// AVX2 + F16C + FMA kernels. Compiled with those flags only (IsaKernels.cmake);
// reached only through the dispatcher when the CPU has them.
#include <immintrin.h>

#include <cstring>

#include "convert/convert_internal.h"
#include "convert/convert_scalar_internal.h"
#include "convert/convert_simd_internal.h"

namespace fastensors::detail {
namespace {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;
using Ptr = const unsigned char*;
using Out = unsigned char*;

// -- loads, stores, constants ----------------------------------------------------

inline __m256i load256(Ptr p) noexcept { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load128(Ptr p) noexcept { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

template <bool Stream>
inline void store256(Out p, __m256i v) noexcept {
  if constexpr (Stream) {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  } else {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
  }
}

inline __m256i c32(u32 v) noexcept { return _mm256_set1_epi32(static_cast<int>(v)); }
inline __m256i c16(u32 v) noexcept { return _mm256_set1_epi16(static_cast<short>(v)); }
inline __m256i as_int(__m256 v) noexcept { return _mm256_castps_si256(v); }
inline __m256 as_float(__m256i v) noexcept { return _mm256_castsi256_ps(v); }
inline __m256i is_nan(__m256i u) noexcept { return as_int(_mm256_cmp_ps(as_float(u), as_float(u), _CMP_UNORD_Q)); }

// Unsigned 32-bit a >= b.
inline __m256i ge_u32(__m256i a, __m256i b) noexcept { return _mm256_cmpeq_epi32(_mm256_max_epu32(a, b), a); }

// Two vectors of 32-bit lanes holding values <= 0xFFFF, narrowed to 16 bits in order.
inline __m256i narrow16(__m256i lo, __m256i hi) noexcept {
  return _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
}

// Two vectors of 32-bit all-ones/all-zeros masks, narrowed to 16-bit masks in order.
inline __m256i narrow_mask16(__m256i lo, __m256i hi) noexcept {
  return _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
}

// -- 16-bit floats ---------------------------------------------------------------

// Ties-to-even BF16 of each F32 lane (in the low 16 bits); NaN -> sign | 0x7FC0.
inline __m256i bf16_round(__m256i u) noexcept {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), c32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, c32(0x7FFF)), lsb), 16);
  const __m256i canon = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u, 16), c32(0x8000)), c32(0x7FC0));
  return _mm256_blendv_epi8(r, canon, is_nan(u));
}

// numpy's F16 NaN for F32 NaN lanes: sign | 0x7C00 | top payload bits, 0x7C01 if those are 0.
inline __m256i f16_nan_bits(__m256i u) noexcept {
  __m256i p = _mm256_srli_epi32(_mm256_and_si256(u, c32(0x7FFFFF)), 13);
  p = _mm256_or_si256(p, _mm256_and_si256(_mm256_cmpeq_epi32(p, _mm256_setzero_si256()), c32(1)));
  return _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u, 16), c32(0x8000)), c32(0x7C00)), p);
}

inline __m128i to_f16(__m256i u) noexcept {
  return _mm256_cvtps_ph(as_float(u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

struct Bf16ToF32 {
  static constexpr std::size_t kIn = 2, kOut = 4, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u16, u32, bf16_to_f32>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i x = load256(s);
    const __m256i lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(x));
    const __m256i hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(x, 1));
    store256<S>(d, _mm256_slli_epi32(lo, 16));
    store256<S>(d + 32, _mm256_slli_epi32(hi, 16));
  }
};

// F16C widens exactly but quiets signaling NaNs; numpy keeps them, so NaN
// lanes (rare: checked once per block) are rebuilt from the bits.
inline __m256i f16_nan_fix(__m128i h, __m256i f, __m128i nan16) noexcept {
  const __m256i h32 = _mm256_cvtepu16_epi32(h);
  const __m256i bits = _mm256_or_si256(
      _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(h32, c32(0x8000)), 16), c32(0x7F800000)),
      _mm256_slli_epi32(_mm256_and_si256(h32, c32(0x3FF)), 13));
  return _mm256_blendv_epi8(f, bits, _mm256_cvtepi16_epi32(nan16));
}

struct F16ToF32 {
  static constexpr std::size_t kIn = 2, kOut = 4, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u16, u32, f16_to_f32>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i x = load256(s);
    const __m128i hl = _mm256_castsi256_si128(x);
    const __m128i hh = _mm256_extracti128_si256(x, 1);
    __m256i lo = as_int(_mm256_cvtph_ps(hl));
    __m256i hi = as_int(_mm256_cvtph_ps(hh));
    const __m256i nan = _mm256_cmpgt_epi16(_mm256_and_si256(x, c16(0x7FFF)), c16(0x7C00));
    if (!_mm256_testz_si256(nan, nan)) {
      lo = f16_nan_fix(hl, lo, _mm256_castsi256_si128(nan));
      hi = f16_nan_fix(hh, hi, _mm256_extracti128_si256(nan, 1));
    }
    store256<S>(d, lo);
    store256<S>(d + 32, hi);
  }
};

struct F32ToF16 {
  static constexpr std::size_t kIn = 4, kOut = 2, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u32, u16, f32_to_f16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i a = load256(s);
    const __m256i b = load256(s + 32);
    __m256i r = _mm256_set_m128i(to_f16(b), to_f16(a));
    const __m256i na = is_nan(a);
    const __m256i nb = is_nan(b);
    if (!_mm256_testz_si256(_mm256_or_si256(na, nb), _mm256_or_si256(na, nb))) {
      // The hardware quiets NaNs; numpy truncates the payload and never quiets.
      r = _mm256_blendv_epi8(r, narrow16(f16_nan_bits(a), f16_nan_bits(b)), narrow_mask16(na, nb));
    }
    store256<S>(d, r);
  }
};

struct F32ToBf16 {
  static constexpr std::size_t kIn = 4, kOut = 2, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u32, u16, f32_to_bf16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    store256<S>(d, narrow16(bf16_round(load256(s)), bf16_round(load256(s + 32))));
  }
};

struct F16ToBf16 {
  static constexpr std::size_t kIn = 2, kOut = 2, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u16, u16, f16_to_bf16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    // Widening is exact (NaNs stay NaN, which bf16_round makes canonical).
    const __m256i x = load256(s);
    const __m256i lo = as_int(_mm256_cvtph_ps(_mm256_castsi256_si128(x)));
    const __m256i hi = as_int(_mm256_cvtph_ps(_mm256_extracti128_si256(x, 1)));
    store256<S>(d, narrow16(bf16_round(lo), bf16_round(hi)));
  }
};

struct Bf16ToF16 {
  static constexpr std::size_t kIn = 2, kOut = 2, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u16, u16, bf16_to_f16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i x = load256(s);
    const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(x)), 16);
    const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(x, 1)), 16);
    const __m256i h = _mm256_set_m128i(to_f16(hi), to_f16(lo));
    const __m256i nan = _mm256_cmpgt_epi16(_mm256_and_si256(x, c16(0x7FFF)), c16(0x7F80));
    const __m256i canon = _mm256_or_si256(_mm256_and_si256(x, c16(0x8000)), c16(0x7E00));
    store256<S>(d, _mm256_blendv_epi8(h, canon, nan));
  }
};

// -- F64 -----------------------------------------------------------------------------

// The hardware conversions are exactly the semantics (docs/dtypes.md), under
// the default MXCSR the dispatcher sets.
struct F64ToF32 {
  static constexpr std::size_t kIn = 8, kOut = 4, kStep = 8, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u64, u32, f64_to_f32>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m128 a = _mm256_cvtpd_ps(_mm256_loadu_pd(reinterpret_cast<const double*>(s)));
    const __m128 b = _mm256_cvtpd_ps(_mm256_loadu_pd(reinterpret_cast<const double*>(s + 32)));
    store256<S>(d, as_int(_mm256_set_m128(b, a)));
  }
};

struct F32ToF64 {
  static constexpr std::size_t kIn = 4, kOut = 8, kStep = 8, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u32, u64, f32_to_f64>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256 x = _mm256_loadu_ps(reinterpret_cast<const float*>(s));
    store256<S>(d, _mm256_castpd_si256(_mm256_cvtps_pd(_mm256_castps256_ps128(x))));
    store256<S>(d + 32, _mm256_castpd_si256(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1))));
  }
};

// -- FP8 ------------------------------------------------------------------------------

// Bytes in 32-bit lanes -> F32 bits (fp8_to_f32).
template <class F>
inline __m256i fp8_decode(__m256i b) noexcept {
  constexpr int M = F::kMbits;
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, c32(0x80)), 24);
  const __m256i mag = _mm256_and_si256(b, c32(0x7F));
  const __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(mag, 23 - M), c32(static_cast<u32>(127 - F::kBias) << 23));
  // Subnormal: m * 2^(1 - bias - M), exact in F32 (mag == m when the exponent is 0).
  const float unit = float_of(static_cast<u32>(127 + 1 - F::kBias - M) << 23);
  const __m256i sub = as_int(_mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(unit)));
  __m256i r = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(c32(1u << M), mag));
  if constexpr (F::kKind == Fp8Kind::Fnuz) {
    r = _mm256_blendv_epi8(r, c32(0x7FC00000), _mm256_cmpeq_epi32(b, c32(0x80)));
  } else if constexpr (F::kKind == Fp8Kind::Fn) {
    r = _mm256_blendv_epi8(r, c32(0x7FC00000), _mm256_cmpeq_epi32(mag, c32(0x7F)));
  } else {
    r = _mm256_blendv_epi8(r, c32(0x7F800000), _mm256_cmpeq_epi32(mag, c32(0x7C)));
    r = _mm256_blendv_epi8(r, c32(0x7FC00000), _mm256_cmpgt_epi32(mag, c32(0x7C)));
  }
  return _mm256_or_si256(r, sign);
}

inline __m256i e8m0_decode(__m256i b) noexcept {
  __m256i r = _mm256_slli_epi32(b, 23);
  r = _mm256_blendv_epi8(r, c32(0x00400000), _mm256_cmpeq_epi32(b, _mm256_setzero_si256()));
  return _mm256_blendv_epi8(r, c32(0x7FC00000), _mm256_cmpeq_epi32(b, c32(0xFF)));
}

// The round_magnitude of each lane (sign cleared), as in the scalar reference.
template <int M, int Bias>
inline __m256i round_magnitude_v(__m256i a) noexcept {
  constexpr int s = 23 - M;
  const __m256i one = c32(1);
  // Normal results: rebias, then round at bit s.
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, s), one);
  const __m256i rn = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_sub_epi32(a, c32(static_cast<u32>(127 - Bias) << 23)),
                       _mm256_add_epi32(c32((1u << (s - 1)) - 1), lsb)),
      s);
  // Below the smallest normal: adding 2^(unit exponent + 23), whose ulp is
  // the smallest subnormal, makes the FPU round to a whole number of units,
  // to nearest even (the dispatcher guarantees that rounding mode and no
  // DAZ); the sum's low bits are then that number.
  const u32 magic = static_cast<u32>(127 + 1 - Bias - M + 23) << 23;
  const __m256i rs = _mm256_sub_epi32(as_int(_mm256_add_ps(as_float(a), as_float(c32(magic)))), c32(magic));
  const __m256i is_normal = _mm256_cmpgt_epi32(a, c32((static_cast<u32>(128 - Bias) << 23) - 1));
  return _mm256_blendv_epi8(rs, rn, is_normal);
}

// F32 bits -> FP8 code in each 32-bit lane (f32_to_fp8).
template <class F>
inline __m256i fp8_encode(__m256i u) noexcept {
  const __m256i a = _mm256_and_si256(u, c32(0x7FFFFFFF));
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), c32(0x80));
  __m256i r = round_magnitude_v<F::kMbits, F::kBias>(a);
  if constexpr (F::kKind == Fp8Kind::Fnuz) {
    // Inf/NaN inputs round past 0x7F too, so one test covers them.
    const __m256i overflow = _mm256_cmpgt_epi32(r, c32(0x7F));
    const __m256i zero = _mm256_cmpeq_epi32(r, _mm256_setzero_si256());
    r = _mm256_or_si256(r, _mm256_andnot_si256(zero, sign));
    return _mm256_blendv_epi8(r, c32(0x80), overflow);
  } else if constexpr (F::kKind == Fp8Kind::Fn) {
    return _mm256_or_si256(_mm256_min_epu32(r, c32(0x7F)), sign);
  } else {
    r = _mm256_min_epu32(r, c32(0x7C));
    r = _mm256_blendv_epi8(r, c32(0x7E), _mm256_cmpgt_epi32(a, c32(0x7F800000)));
    return _mm256_or_si256(r, sign);
  }
}

inline __m256i e8m0_encode(__m256i u) noexcept {
  const __m256i one = c32(1);
  __m256i r = _mm256_add_epi32(_mm256_srli_epi32(u, 23), _mm256_and_si256(_mm256_srli_epi32(u, 22), one));
  r = _mm256_min_epu32(r, c32(0xFF));
  const __m256i sub = _mm256_and_si256(_mm256_cmpgt_epi32(u, c32(0x005FFFFF)), one);
  r = _mm256_blendv_epi8(r, sub, _mm256_cmpeq_epi32(_mm256_min_epu32(u, c32(0x7FFFFF)), u));
  const __m256i bad = _mm256_or_si256(_mm256_cmpeq_epi32(u, _mm256_setzero_si256()), ge_u32(u, c32(0x7F800000)));
  return _mm256_blendv_epi8(r, c32(0xFF), bad);
}

// 8-bit source -> 32-bit lanes, 16 elements per block.
template <class Decode, u32 (*Ref)(u8)>
struct ByteToF32 {
  static constexpr std::size_t kIn = 1, kOut = 4, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u8, u32, Ref>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m128i x = load128(s);
    store256<S>(d, Decode::apply(_mm256_cvtepu8_epi32(x)));
    store256<S>(d + 32, Decode::apply(_mm256_cvtepu8_epi32(_mm_srli_si128(x, 8))));
  }
};

// 32-bit source -> bytes, 32 elements per block.
template <class Encode, u8 (*Ref)(u32)>
struct F32ToByte {
  static constexpr std::size_t kIn = 4, kOut = 1, kStep = 32, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u32, u8, Ref>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i c0 = Encode::apply(load256(s));
    const __m256i c1 = Encode::apply(load256(s + 32));
    const __m256i c2 = Encode::apply(load256(s + 64));
    const __m256i c3 = Encode::apply(load256(s + 96));
    const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
    store256<S>(d, _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
};

template <class F>
struct Fp8Decode {
  static __m256i apply(__m256i b) noexcept { return fp8_decode<F>(b); }
};
struct E8m0Decode {
  static __m256i apply(__m256i b) noexcept { return e8m0_decode(b); }
};
struct BoolDecode {
  static __m256i apply(__m256i b) noexcept {
    return _mm256_andnot_si256(_mm256_cmpeq_epi32(b, _mm256_setzero_si256()), c32(0x3F800000));
  }
};
struct U8Decode {
  static __m256i apply(__m256i b) noexcept { return as_int(_mm256_cvtepi32_ps(b)); }
};
template <class F>
struct Fp8Encode {
  static __m256i apply(__m256i u) noexcept { return fp8_encode<F>(u); }
};
struct E8m0Encode {
  static __m256i apply(__m256i u) noexcept { return e8m0_encode(u); }
};

// -- integers ----------------------------------------------------------------------

struct I8ToF32 {
  static constexpr std::size_t kIn = 1, kOut = 4, kStep = 16, kAlign = 32;
  static constexpr auto scalar = scalar_loop<std::int8_t, u32, int_to_f32<std::int8_t>>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m128i x = load128(s);
    store256<S>(d, as_int(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x))));
    store256<S>(d + 32, as_int(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(x, 8)))));
  }
};

template <bool Signed>
struct I16ToF32 {
  static constexpr std::size_t kIn = 2, kOut = 4, kStep = 16, kAlign = 32;
  static constexpr auto scalar = Signed ? scalar_loop<std::int16_t, u32, int_to_f32<std::int16_t>>
                                        : scalar_loop<u16, u32, int_to_f32<std::uint16_t>>;
  static __m256i widen(__m128i x) noexcept {
    return Signed ? _mm256_cvtepi16_epi32(x) : _mm256_cvtepu16_epi32(x);
  }
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i x = load256(s);
    store256<S>(d, as_int(_mm256_cvtepi32_ps(widen(_mm256_castsi256_si128(x)))));
    store256<S>(d + 32, as_int(_mm256_cvtepi32_ps(widen(_mm256_extracti128_si256(x, 1)))));
  }
};

struct I32ToF32 {
  static constexpr std::size_t kIn = 4, kOut = 4, kStep = 8, kAlign = 32;
  static constexpr auto scalar = scalar_loop<std::int32_t, u32, int_to_f32<std::int32_t>>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    store256<S>(d, as_int(_mm256_cvtepi32_ps(load256(s))));
  }
};

struct U32ToF32 {
  static constexpr std::size_t kIn = 4, kOut = 4, kStep = 8, kAlign = 32;
  static constexpr auto scalar = scalar_loop<u32, u32, int_to_f32<std::uint32_t>>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    // No unsigned convert before AVX-512: hi * 65536 is exact, so the fused
    // multiply-add rounds once, to the nearest F32 of the whole value.
    const __m256i x = load256(s);
    const __m256 hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(x, 16));
    const __m256 lo = _mm256_cvtepi32_ps(_mm256_and_si256(x, c32(0xFFFF)));
    store256<S>(d, as_int(_mm256_fmadd_ps(hi, _mm256_set1_ps(65536.0f), lo)));
  }
};

// A dtype to itself: a copy, with non-temporal stores when streaming (glibc's
// memcpy picks them only past its own, much larger, threshold per call).
template <std::size_t W>
struct Copy {
  static constexpr std::size_t kIn = W, kOut = W, kStep = 128 / W, kAlign = 32;
  static void scalar(const void* s, void* d, std::size_t n) noexcept {
    if (n) std::memcpy(d, s, n * W);
  }
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i a = load256(s), b = load256(s + 32), c = load256(s + 64), e = load256(s + 96);
    store256<S>(d, a);
    store256<S>(d + 32, b);
    store256<S>(d + 64, c);
    store256<S>(d + 96, e);
  }
};

template <std::size_t W>
void copy_kernel(const void* src, void* dst, std::size_t n, bool stream) noexcept {
  if (src == dst || n == 0) return;
  // Cached stores: libc's memcpy is tuned per CPU (rep movsb on large
  // copies) and beats these loops, most on short rows of a strided gather.
  if (!stream) {
    std::memcpy(dst, src, n * W);
    return;
  }
  kernel<Copy<W>>(src, dst, n, stream);
}

}  // namespace

void add_avx2_kernels(KernelTable& t) {
  set_copy_kernels(t, {copy_kernel<1>, copy_kernel<2>, copy_kernel<4>, copy_kernel<8>});

  t.at(Dtype::BF16, Dtype::F32) = kernel<Bf16ToF32>;
  t.at(Dtype::F32, Dtype::BF16) = kernel<F32ToBf16>;
  t.at(Dtype::F16, Dtype::F32) = kernel<F16ToF32>;
  t.at(Dtype::F32, Dtype::F16) = kernel<F32ToF16>;
  t.at(Dtype::F16, Dtype::BF16) = kernel<F16ToBf16>;
  t.at(Dtype::BF16, Dtype::F16) = kernel<Bf16ToF16>;
  t.at(Dtype::F64, Dtype::F32) = kernel<F64ToF32>;
  t.at(Dtype::F32, Dtype::F64) = kernel<F32ToF64>;

  t.at(Dtype::F8_E4M3, Dtype::F32) = kernel<ByteToF32<Fp8Decode<E4M3>, fp8_to_f32<E4M3>>>;
  t.at(Dtype::F8_E5M2, Dtype::F32) = kernel<ByteToF32<Fp8Decode<E5M2>, fp8_to_f32<E5M2>>>;
  t.at(Dtype::F8_E4M3FNUZ, Dtype::F32) = kernel<ByteToF32<Fp8Decode<E4M3Fnuz>, fp8_to_f32<E4M3Fnuz>>>;
  t.at(Dtype::F8_E5M2FNUZ, Dtype::F32) = kernel<ByteToF32<Fp8Decode<E5M2Fnuz>, fp8_to_f32<E5M2Fnuz>>>;
  t.at(Dtype::F8_E8M0, Dtype::F32) = kernel<ByteToF32<E8m0Decode, e8m0_to_f32>>;
  t.at(Dtype::F32, Dtype::F8_E4M3) = kernel<F32ToByte<Fp8Encode<E4M3>, f32_to_fp8<E4M3>>>;
  t.at(Dtype::F32, Dtype::F8_E5M2) = kernel<F32ToByte<Fp8Encode<E5M2>, f32_to_fp8<E5M2>>>;
  t.at(Dtype::F32, Dtype::F8_E4M3FNUZ) = kernel<F32ToByte<Fp8Encode<E4M3Fnuz>, f32_to_fp8<E4M3Fnuz>>>;
  t.at(Dtype::F32, Dtype::F8_E5M2FNUZ) = kernel<F32ToByte<Fp8Encode<E5M2Fnuz>, f32_to_fp8<E5M2Fnuz>>>;
  t.at(Dtype::F32, Dtype::F8_E8M0) = kernel<F32ToByte<E8m0Encode, f32_to_e8m0>>;

  t.at(Dtype::BOOL, Dtype::F32) = kernel<ByteToF32<BoolDecode, bool_to_f32>>;
  t.at(Dtype::U8, Dtype::F32) = kernel<ByteToF32<U8Decode, int_to_f32<std::uint8_t>>>;
  t.at(Dtype::I8, Dtype::F32) = kernel<I8ToF32>;
  t.at(Dtype::U16, Dtype::F32) = kernel<I16ToF32<false>>;
  t.at(Dtype::I16, Dtype::F32) = kernel<I16ToF32<true>>;
  t.at(Dtype::I32, Dtype::F32) = kernel<I32ToF32>;
  t.at(Dtype::U32, Dtype::F32) = kernel<U32ToF32>;
  // I64/U64: no 64-bit integer converts before AVX-512DQ; the scalar kernel stays.
}

}  // namespace fastensors::detail
