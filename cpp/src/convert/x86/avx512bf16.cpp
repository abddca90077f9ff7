// AVX512-BF16 kernels: VCVTNE2PS2BF16 rounds F32 to BF16 to nearest even in
// one instruction, but it is not exact on its own: it treats subnormal inputs
// as zero and quiets NaNs keeping their payload, where the semantics
// (docs/dtypes.md) round subnormals exactly and make NaN canonical. Those
// lanes (checked once per block; rare in real tensors) are redone with the
// integer rounding. Everything else comes from the AVX-512 level.
//
// AVX512-FP16 is not used: its F16 <-> F32 conversions (VCVTPH2PSX,
// VCVTPS2PHX) compute exactly what AVX-512F's VCVTPH2PS / VCVTPS2PH already
// do, and FP16 arithmetic cannot round F32 to FP8 without a double rounding.
#include <immintrin.h>

#include "convert/convert_internal.h"
#include "convert/convert_scalar_internal.h"
#include "convert/convert_simd_internal.h"

namespace fastensors::detail {
namespace {

using u16 = std::uint16_t;
using u32 = std::uint32_t;
using Ptr = const unsigned char*;
using Out = unsigned char*;

inline __m512i c32(u32 v) noexcept { return _mm512_set1_epi32(static_cast<int>(v)); }
inline __m512i c16(u32 v) noexcept { return _mm512_set1_epi16(static_cast<short>(v)); }
inline __m512i as_int(__m512 v) noexcept { return _mm512_castps_si512(v); }
inline __m512 as_float(__m512i v) noexcept { return _mm512_castsi512_ps(v); }
inline __m256i low(__m512i v) noexcept { return _mm512_castsi512_si256(v); }
inline __m256i high(__m512i v) noexcept { return _mm512_extracti64x4_epi64(v, 1); }

template <bool Stream>
inline void store512(Out p, __m512i v) noexcept {
  if constexpr (Stream) {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v);
  } else {
    _mm512_storeu_si512(p, v);
  }
}

// BF16 of 32 F32 lanes: `lo` gives elements 0-15, `hi` 16-31.
inline __m512i cvtne(__m512i lo, __m512i hi) noexcept {
  const __m512bh r = _mm512_cvtne2ps_pbh(as_float(hi), as_float(lo));
  __m512i out;
  static_assert(sizeof out == sizeof r, "same width");
  __builtin_memcpy(&out, &r, sizeof out);
  return out;
}

// The integer rounding (as f32_to_bf16), narrowed to 16-bit lanes.
inline __m256i bf16_exact(__m512i u) noexcept {
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), c32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, c32(0x7FFF)), lsb), 16);
  const __m512i canon = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u, 16), c32(0x8000)), c32(0x7FC0));
  const __mmask16 nan = _mm512_cmp_ps_mask(as_float(u), as_float(u), _CMP_UNORD_Q);
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, canon));
}

// Lanes VCVTNE2PS2BF16 gets wrong: NaN, and non-zero subnormals.
inline __mmask16 needs_fix(__m512i u) noexcept {
  const __m512i a = _mm512_and_si512(u, c32(0x7FFFFFFF));
  return _mm512_cmplt_epu32_mask(_mm512_sub_epi32(a, c32(1)), c32(0x7FFFFF)) |
         _mm512_cmpgt_epu32_mask(a, c32(0x7F800000));
}

struct F32ToBf16 {
  static constexpr std::size_t kIn = 4, kOut = 2, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u32, u16, f32_to_bf16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    const __m512i a = _mm512_loadu_si512(s);
    const __m512i b = _mm512_loadu_si512(s + 64);
    __m512i r = cvtne(a, b);
    const __mmask32 fix = static_cast<__mmask32>(needs_fix(a)) | (static_cast<__mmask32>(needs_fix(b)) << 16);
    if (fix) {
      const __m512i exact = _mm512_inserti64x4(_mm512_castsi256_si512(bf16_exact(a)), bf16_exact(b), 1);
      r = _mm512_mask_mov_epi16(r, fix, exact);
    }
    store512<S>(d, r);
  }
};

struct F16ToBf16 {
  static constexpr std::size_t kIn = 2, kOut = 2, kStep = 32, kAlign = 64;
  static constexpr auto scalar = scalar_loop<u16, u16, f16_to_bf16>;
  template <bool S>
  static void block(Ptr s, Out d) noexcept {
    // F16 widens exactly, and never to an F32 subnormal: only NaN needs fixing.
    const __m512i x = _mm512_loadu_si512(s);
    __m512i r = cvtne(as_int(_mm512_cvtph_ps(low(x))), as_int(_mm512_cvtph_ps(high(x))));
    const __mmask32 nan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(x, c16(0x7FFF)), c16(0x7C00));
    if (nan) r = _mm512_mask_mov_epi16(r, nan, _mm512_or_si512(_mm512_and_si512(x, c16(0x8000)), c16(0x7FC0)));
    store512<S>(d, r);
  }
};

}  // namespace

void add_avx512bf16_kernels(KernelTable& t) {
  t.at(Dtype::F32, Dtype::BF16) = kernel<F32ToBf16>;
  t.at(Dtype::F16, Dtype::BF16) = kernel<F16ToBf16>;
}

}  // namespace fastensors::detail
