// AVX-512 (F + BW) NF4 kernels: the nearest code by a four-step binary search
// over the 15 sorted thresholds (vpermps picks each step's threshold per
// lane), which counts the thresholds a value exceeds exactly as the scalar
// kernel does; dequantization looks the 16 code values up with vpermps.
// Bit-identical to quant/quant_nf4.cpp (tested); streaming stores into
// 64-byte aligned outputs as in ggml_avx512.cpp.
#include <immintrin.h>

#include <cstdint>

#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

constexpr std::size_t kBlock = 64;

inline __m512i nf4_codes(__m512 v, __m512 thr) {
  __m512i idx = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step /= 2) {
    // Lanes at idx compare with threshold idx + step - 1 (at most 14).
    __m512i probe = _mm512_add_epi32(idx, _mm512_set1_epi32(step - 1));
    __mmask16 gt = _mm512_cmp_ps_mask(v, _mm512_permutexvar_ps(probe, thr), _CMP_GT_OQ);
    idx = _mm512_mask_add_epi32(idx, gt, idx, _mm512_set1_epi32(step));
  }
  return idx;
}

bool quantize_block(const float* x, const float* thresholds, float* absmax, std::uint8_t* out) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 v[4];
  __m512 amax = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int i = 0; i < 4; ++i) {
    v[i] = _mm512_loadu_ps(x + 16 * i);
    __m512 a = _mm512_abs_ps(v[i]);
    bad = static_cast<__mmask16>(bad | _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ));
    amax = _mm512_max_ps(amax, a);
  }
  if (bad) return false;
  const float m = _mm512_reduce_max_ps(amax);
  *absmax = m;
  const __m512 inv = _mm512_set1_ps(m == 0.0f ? 0.0f : 1.0f / m);
  const __m512 thr = _mm512_maskz_loadu_ps(0x7fff, thresholds);
  __m128i bytes[4];
  for (int i = 0; i < 4; ++i) bytes[i] = _mm512_cvtepi32_epi8(nf4_codes(_mm512_mul_ps(v[i], inv), thr));
  // 64 codes as 32 little-endian pairs: byte = (first << 4) | second.
  __m512i q = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_set_m128i(bytes[1], bytes[0])), _mm256_set_m128i(bytes[3], bytes[2]), 1);
  __m512i packed = _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi16(q, 4), _mm512_set1_epi16(0xf0)),
                                   _mm512_srli_epi16(q, 8));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi16_epi8(packed));
  return true;
}

void dequantize_blocks(const std::uint8_t* in, const float* absmax, std::size_t nblocks, const float* codes,
                       float* out) {
  const __m512 table = _mm512_loadu_ps(codes);
  const bool stream = (reinterpret_cast<std::uintptr_t>(out) & 63u) == 0;
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (std::size_t b = 0; b < nblocks; ++b, in += kBlock / 2, out += kBlock) {
    const __m512 scale = _mm512_set1_ps(absmax[b]);
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low), lo = _mm256_and_si256(raw, low);
    // Interleave (first, second) per byte; unpack works per 128-bit lane.
    __m256i a = _mm256_unpacklo_epi8(hi, lo), c = _mm256_unpackhi_epi8(hi, lo);
    __m256i first = _mm256_permute2x128_si256(a, c, 0x20), second = _mm256_permute2x128_si256(a, c, 0x31);
    const __m128i parts[4] = {_mm256_castsi256_si128(first), _mm256_extracti128_si256(first, 1),
                              _mm256_castsi256_si128(second), _mm256_extracti128_si256(second, 1)};
    for (int i = 0; i < 4; ++i) {
      __m512 val = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(parts[i]), table), scale);
      if (stream) {
        _mm512_stream_ps(out + 16 * i, val);
      } else {
        _mm512_storeu_ps(out + 16 * i, val);
      }
    }
  }
  if (stream) _mm_sfence();
}

const Nf4Kernels kAvx512 = {quantize_block, dequantize_blocks};

}  // namespace

const Nf4Kernels& nf4_kernels_avx512() noexcept { return kAvx512; }

}  // namespace fastensors::quant_detail
