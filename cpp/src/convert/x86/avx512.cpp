// AVX-512 (F, BW, DQ, VL) kernels. Compiled with those flags only
// (IsaKernels.cmake); reached only through the dispatcher when the CPU
// and OS support them. Same algorithms as x86/avx2.cpp, with mask
// registers instead of blends and 64-byte blocks.
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

inline __m512i load512(Ptr p) noexcept { return _mm512_loadu_si512(p); }
inline __m256i load256(Ptr p) noexcept { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load128(Ptr p) noexcept { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

template <bool Stream>
inline void store512(Out p, __m512i v) noexcept {
  if constexpr (Stream) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v);
  } else {
    _mm512_storeu_si512(p, v);
  }
}

inline __m512i c32(u32 v) noexcept { return _mm512_set1_epi32(static_cast<int>(v)); }
inline __m512i c16(u32 v) noexcept { return _mm512_set1_epi16(static_cast<short>(v)); }
inline __m512i as_int(__m512 v) noexcept { return _mm512_castps_si512(v); }
inline __m512 as_float(__m512i v) noexcept { return _mm512_castsi512_ps(v); }
inline __mmask16 nan_mask(__m512i u) noexcept { return _mm512_cmp_ps_mask(as_float(u), as_float(u), _CMP_UNORD_Q); }

inline __m512i join(__m256i lo, __m256i hi) noexcept {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}
inline __m256i low(__m512i v) noexcept { return _mm512_castsi512_si256(v); }
inline __m256i high(__m512i v) noexcept { return _mm512_extracti64x4_epi64(v, 1); }

// -- 16-bit floats -------------------------------------------------------------

inline __m512i bf16_round(__m512i u) noexcept {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), c32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, c32(0x7FFF)), lsb), 16);
  const __m512i canon = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), c32(0x8000)), c32(0x7FC0));
  return _mm512_mask_mov_epi32(r, nan_mask(u), canon);
}

inline __m512i f16_nan_bits(__m512i u) noexcept {
  __m512i p = _mm512_srli_epi32(_mm512_and_si512(u, c32(0x7FFFFF)), 13);
  p = _mm512_mask_mov_epi32(p, _mm512_cmpeq_epi32_mask(p, _mm512_setzero_si512()), c32(1));
  return _mm512_or_si512(_mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), c32(0x8000)), c32(0x7C00)), p);
}

inline __m256i to_f16(__m512i u) noexcept {
  return _mm512_cvtps_ph(as_float(u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

struct Bf16ToF32 {
  static constexpr std::size_t kIn = 2, kOut = 4, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u16, u32, bf16_to_f32>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i x = load512(s);
    store512<S>(d, _mm512_slli_epi32(_mm512_cvtepu16_epi32(low(x)), 16));
    store512<S>(d + 64, _mm512_slli_epi32(_mm512_cvtepu16_epi32(high(x)), 16));
  }
};

// NaN lanes of a widened half: numpy keeps signaling NaNs signaling.
inline __m512i f16_nan_fix(__m256i h, __m512i f, __mmask16 nan) noexcept {
  const __m512i h32 = _mm512_cvtepu16_epi32(h);
  const __m512i bits = _mm512_or_si512(
      _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(h32, c32(0x8000)), 16), c32(0x7F800000)),
      _mm512_slli_epi32(_mm512_and_si512(h32, c32(0x3FF)), 13));
  return _mm512_mask_mov_epi32(f, nan, bits);
}

struct F16ToF32 {
  static constexpr std::size_t kIn = 2, kOut = 4, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u16, u32, f16_to_f32>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i x = load512(s);
    __m512i lo = as_int(_mm512_cvtph_ps(low(x)));
    __m512i hi = as_int(_mm512_cvtph_ps(high(x)));
    const __mmask32 nan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(x, c16(0x7FFF)), c16(0x7C00));
    if (nan) {
      lo = f16_nan_fix(low(x), lo, static_cast<__mmask16>(nan));
      hi = f16_nan_fix(high(x), hi, static_cast<__mmask16>(nan >> 16));
    }
    store512<S>(d, lo);
    store512<S>(d + 64, hi);
  }
};

struct F32ToF16 {
  static constexpr std::size_t kIn = 4, kOut = 2, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u32, u16, f32_to_f16>;
  static __m256i half(__m512i u) noexcept {
    __m256i h = to_f16(u);
    const __mmask16 nan = nan_mask(u);
    if (nan) h = _mm256_mask_mov_epi16(h, nan, _mm512_cvtepi32_epi16(f16_nan_bits(u)));
    return h;
  }
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    store512<S>(d, join(half(load512(s)), half(load512(s + 64))));
  }
};

struct F32ToBf16 {
  static constexpr std::size_t kIn = 4, kOut = 2, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u32, u16, f32_to_bf16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256i lo = _mm512_cvtepi32_epi16(bf16_round(load512(s)));
    const __m256i hi = _mm512_cvtepi32_epi16(bf16_round(load512(s + 64)));
    store512<S>(d, join(lo, hi));
  }
};

struct F16ToBf16 {
  static constexpr std::size_t kIn = 2, kOut = 2, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u16, u16, f16_to_bf16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i x = load512(s);
    const __m256i lo = _mm512_cvtepi32_epi16(bf16_round(as_int(_mm512_cvtph_ps(low(x)))));
    const __m256i hi = _mm512_cvtepi32_epi16(bf16_round(as_int(_mm512_cvtph_ps(high(x)))));
    store512<S>(d, join(lo, hi));
  }
};

struct Bf16ToF16 {
  static constexpr std::size_t kIn = 2, kOut = 2, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u16, u16, bf16_to_f16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i x = load512(s);
    const __m256i lo = to_f16(_mm512_slli_epi32(_mm512_cvtepu16_epi32(low(x)), 16));
    const __m256i hi = to_f16(_mm512_slli_epi32(_mm512_cvtepu16_epi32(high(x)), 16));
    const __mmask32 nan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(x, c16(0x7FFF)), c16(0x7F80));
    const __m512i canon = _mm512_or_si512(_mm512_and_si512(x, c16(0x8000)), c16(0x7E00));
    store512<S>(d, _mm512_mask_mov_epi16(join(lo, hi), nan, canon));
  }
};

// -- F64 -----------------------------------------------------------------------------

struct F64ToF32 {
  static constexpr std::size_t kIn = 8, kOut = 4, kStep = 16, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u64, u32, f64_to_f32>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256 a = _mm512_cvtpd_ps(_mm512_loadu_pd(s));
    const __m256 b = _mm512_cvtpd_ps(_mm512_loadu_pd(s + 64));
    store512<S>(d, as_int(_mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1)));
  }
};

struct F32ToF64 {
  static constexpr std::size_t kIn = 4, kOut = 8, kStep = 16, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u32, u64, f32_to_f64>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512 x = _mm512_loadu_ps(s);
    store512<S>(d, _mm512_castpd_si512(_mm512_cvtps_pd(_mm512_castps512_ps256(x))));
    store512<S>(d + 64, _mm512_castpd_si512(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1))));
  }
};

// -- FP8 ------------------------------------------------------------------------------

template <class F>
inline __m512i fp8_decode(__m512i b) noexcept {
  constexpr int M = F::kMbits;
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(b, c32(0x80)), 24);
  const __m512i mag = _mm512_and_si512(b, c32(0x7F));
  const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 23 - M), c32(static_cast<u32>(127 - F::kBias) << 23));
  const float unit = float_of(static_cast<u32>(127 + 1 - F::kBias - M) << 23);
  const __m512i sub = as_int(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(unit)));
  __m512i r = _mm512_mask_mov_epi32(normal, _mm512_cmplt_epu32_mask(mag, c32(1u << M)), sub);
  if constexpr (F::kKind == Fp8Kind::Fnuz) {
    r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(b, c32(0x80)), c32(0x7FC00000));
  } else if constexpr (F::kKind == Fp8Kind::Fn) {
    r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(mag, c32(0x7F)), c32(0x7FC00000));
  } else {
    r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(mag, c32(0x7C)), c32(0x7F800000));
    r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(mag, c32(0x7C)), c32(0x7FC00000));
  }
  return _mm512_or_si512(r, sign);
}

inline __m512i e8m0_decode(__m512i b) noexcept {
  __m512i r = _mm512_slli_epi32(b, 23);
  r = _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(b, _mm512_setzero_si512()), c32(0x00400000));
  return _mm512_mask_mov_epi32(r, _mm512_cmpeq_epi32_mask(b, c32(0xFF)), c32(0x7FC00000));
}

template <int M, int Bias>
inline __m512i round_magnitude_v(__m512i a) noexcept {
  constexpr int s = 23 - M;
  const __m512i one = c32(1);
  // Normal results: rebias, then round at bit s.
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, s), one);
  const __m512i rn = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_sub_epi32(a, c32(static_cast<u32>(127 - Bias) << 23)),
                       _mm512_add_epi32(c32((1u << (s - 1)) - 1), lsb)),
      s);
  // Below the smallest normal: adding 2^(unit exponent + 23), whose ulp is
  // the smallest subnormal, makes the FPU round to a whole number of units,
  // to nearest even (the dispatcher guarantees that rounding mode and no
  // DAZ); the sum's low bits are then that number.
  const u32 magic = static_cast<u32>(127 + 1 - Bias - M + 23) << 23;
  const __m512i rs = _mm512_sub_epi32(as_int(_mm512_add_ps(as_float(a), as_float(c32(magic)))), c32(magic));
  return _mm512_mask_mov_epi32(rs, _mm512_cmpge_epu32_mask(a, c32(static_cast<u32>(128 - Bias) << 23)), rn);
}

template <class F>
inline __m512i fp8_encode(__m512i u) noexcept {
  const __m512i a = _mm512_and_si512(u, c32(0x7FFFFFFF));
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), c32(0x80));
  __m512i r = round_magnitude_v<F::kMbits, F::kBias>(a);
  if constexpr (F::kKind == Fp8Kind::Fnuz) {
    const __mmask16 overflow = _mm512_cmpgt_epu32_mask(r, c32(0x7F));
    r = _mm512_mask_or_epi32(r, _mm512_test_epi32_mask(r, r), r, sign);
    return _mm512_mask_mov_epi32(r, overflow, c32(0x80));
  } else if constexpr (F::kKind == Fp8Kind::Fn) {
    return _mm512_or_si512(_mm512_min_epu32(r, c32(0x7F)), sign);
  } else {
    r = _mm512_min_epu32(r, c32(0x7C));
    r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(a, c32(0x7F800000)), c32(0x7E));
    return _mm512_or_si512(r, sign);
  }
}

inline __m512i e8m0_encode(__m512i u) noexcept {
  const __m512i one = c32(1);
  __m512i r = _mm512_add_epi32(_mm512_srli_epi32(u, 23), _mm512_and_si512(_mm512_srli_epi32(u, 22), one));
  r = _mm512_min_epu32(r, c32(0xFF));
  const __m512i sub = _mm512_maskz_mov_epi32(_mm512_cmpge_epu32_mask(u, c32(0x00600000)), one);
  r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epu32_mask(u, c32(0x00800000)), sub);
  const __mmask16 bad = _mm512_cmpeq_epi32_mask(u, _mm512_setzero_si512()) |
                        _mm512_cmpge_epu32_mask(u, c32(0x7F800000));
  return _mm512_mask_mov_epi32(r, bad, c32(0xFF));
}

template <class Decode, u32 (*Ref)(u8)>
struct ByteToF32 {
  static constexpr std::size_t kIn = 1, kOut = 4, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u8, u32, Ref>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    store512<S>(d, Decode::apply(_mm512_cvtepu8_epi32(load128(s))));
    store512<S>(d + 64, Decode::apply(_mm512_cvtepu8_epi32(load128(s + 16))));
  }
};

template <class Encode, u8 (*Ref)(u32)>
struct F32ToByte {
  static constexpr std::size_t kIn = 4, kOut = 1, kStep = 64, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u32, u8, Ref>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m128i b0 = _mm512_cvtepi32_epi8(Encode::apply(load512(s)));
    const __m128i b1 = _mm512_cvtepi32_epi8(Encode::apply(load512(s + 64)));
    const __m128i b2 = _mm512_cvtepi32_epi8(Encode::apply(load512(s + 128)));
    const __m128i b3 = _mm512_cvtepi32_epi8(Encode::apply(load512(s + 192)));
    const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(b0), b1, 1);
    const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(b2), b3, 1);
    store512<S>(d, join(lo, hi));
  }
};

template <class F>
struct Fp8Decode {
  static __m512i apply(__m512i b) noexcept { return fp8_decode<F>(b); }
};
struct E8m0Decode {
  static __m512i apply(__m512i b) noexcept { return e8m0_decode(b); }
};
struct BoolDecode {
  static __m512i apply(__m512i b) noexcept { return _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(b, b), c32(0x3F800000)); }
};
struct U8Decode {
  static __m512i apply(__m512i b) noexcept { return as_int(_mm512_cvtepi32_ps(b)); }
};
template <class F>
struct Fp8Encode {
  static __m512i apply(__m512i u) noexcept { return fp8_encode<F>(u); }
};
struct E8m0Encode {
  static __m512i apply(__m512i u) noexcept { return e8m0_encode(u); }
};

// -- integers ----------------------------------------------------------------------

struct I8ToF32 {
  static constexpr std::size_t kIn = 1, kOut = 4, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<std::int8_t, u32, int_to_f32<std::int8_t>>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    store512<S>(d, as_int(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load128(s)))));
    store512<S>(d + 64, as_int(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load128(s + 16)))));
  }
};

template <bool Signed>
struct I16ToF32 {
  static constexpr std::size_t kIn = 2, kOut = 4, kStep = 32, kAlign = 64;
  static constexpr auto scalar = Signed ? scalar_loop<std::int16_t, u32, int_to_f32<std::int16_t>>
                                        : scalar_loop<u16, u32, int_to_f32<std::uint16_t>>;
  static __m512i widen(__m256i x) noexcept { return Signed ? _mm512_cvtepi16_epi32(x) : _mm512_cvtepu16_epi32(x); }
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i x = load512(s);
    store512<S>(d, as_int(_mm512_cvtepi32_ps(widen(low(x)))));
    store512<S>(d + 64, as_int(_mm512_cvtepi32_ps(widen(high(x)))));
  }
};

template <bool Signed>
struct I32ToF32 {
  static constexpr std::size_t kIn = 4, kOut = 4, kStep = 16, kAlign = 64;
  static constexpr auto scalar = Signed ? scalar_loop<std::int32_t, u32, int_to_f32<std::int32_t>>
                                        : scalar_loop<u32, u32, int_to_f32<std::uint32_t>>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i x = load512(s);
    store512<S>(d, as_int(Signed ? _mm512_cvtepi32_ps(x) : _mm512_cvtepu32_ps(x)));
  }
};

template <bool Signed>
struct I64ToF32 {
  static constexpr std::size_t kIn = 8, kOut = 4, kStep = 16, kAlign = 64;
  static constexpr auto scalar = Signed ? scalar_loop<std::int64_t, u32, int_to_f32<std::int64_t>>
                                        : scalar_loop<u64, u32, int_to_f32<std::uint64_t>>;
  static __m256 cvt(__m512i x) noexcept { return Signed ? _mm512_cvtepi64_ps(x) : _mm512_cvtepu64_ps(x); }
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m256 a = cvt(load512(s));
    const __m256 b = cvt(load512(s + 64));
    store512<S>(d, as_int(_mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1)));
  }
};

// A dtype to itself: a copy, with non-temporal stores when streaming (glibc's
// memcpy picks them only past its own, much larger, threshold per call).
template <std::size_t W>
struct Copy {
  static constexpr std::size_t kIn = W, kOut = W, kStep = 256 / W, kAlign = 64;
  static void scalar(const void* s, void* d, std::size_t n) noexcept {
    if (n) std::memcpy(d, s, n * W);
  }
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i a = load512(s), b = load512(s + 64), c = load512(s + 128), e = load512(s + 192);
    store512<S>(d, a);
    store512<S>(d + 64, b);
    store512<S>(d + 128, c);
    store512<S>(d + 192, e);
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

void add_avx512_kernels(KernelTable& t) {
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
  t.at(Dtype::I32, Dtype::F32) = kernel<I32ToF32<true>>;
  t.at(Dtype::U32, Dtype::F32) = kernel<I32ToF32<false>>;
  t.at(Dtype::I64, Dtype::F32) = kernel<I64ToF32<true>>;
  t.at(Dtype::U64, Dtype::F32) = kernel<I64ToF32<false>>;
}

}  // namespace fastensors::detail
