// AVX2 NF4 kernels: eight lanes, the code counted as the number of the 15
// thresholds a value exceeds (as the scalar kernel does), the 16 code values
// looked up with two vpermps and a blend. Bit-identical to
// quant/quant_nf4.cpp (tested).
#include <immintrin.h>

#include <cstdint>

#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

constexpr std::size_t kBlock = 64;

bool quantize_block(const float* x, const float* thresholds, float* absmax, std::uint8_t* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(__builtin_inff());
  __m256 v[8];
  __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int i = 0; i < 8; ++i) {
    v[i] = _mm256_loadu_ps(x + 8 * i);
    __m256 a = _mm256_andnot_ps(sign, v[i]);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
    amax = _mm256_max_ps(amax, a);
  }
  if (_mm256_movemask_ps(bad)) return false;
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  const float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
  *absmax = m;
  const __m256 inv = _mm256_set1_ps(m == 0.0f ? 0.0f : 1.0f / m);
  __m256i codes[8];
  for (int i = 0; i < 8; ++i) {
    __m256 s = _mm256_mul_ps(v[i], inv);
    __m256i idx = _mm256_setzero_si256();
    for (int t = 0; t < 15; ++t) {  // each comparison is all ones (-1) where s > t
      idx = _mm256_sub_epi32(idx, _mm256_castps_si256(_mm256_cmp_ps(s, _mm256_broadcast_ss(thresholds + t), _CMP_GT_OQ)));
    }
    codes[i] = idx;
  }
  // int32 codes -> 64 bytes in order (packs work per 128-bit lane, hence the permutes).
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  __m256i bytes[2];
  for (int h = 0; h < 2; ++h) {
    const __m256i* c = codes + 4 * h;
    __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    bytes[h] = _mm256_permutevar8x32_epi32(b, order);
  }
  // Pairs of codes -> (first << 4) | second, as 16-bit lanes.
  __m256i pairs[2];
  for (int h = 0; h < 2; ++h) {
    pairs[h] = _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi16(bytes[h], 4), _mm256_set1_epi16(0xf0)),
                               _mm256_srli_epi16(bytes[h], 8));
  }
  __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(pairs[0], pairs[1]), 0xd8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed);
  return true;
}

void dequantize_blocks(const std::uint8_t* in, const float* absmax, std::size_t nblocks, const float* codes,
                       float* out) {
  const __m256 table_lo = _mm256_loadu_ps(codes), table_hi = _mm256_loadu_ps(codes + 8);
  const bool stream = (reinterpret_cast<std::uintptr_t>(out) & 31u) == 0;
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (std::size_t b = 0; b < nblocks; ++b, in += kBlock / 2, out += kBlock) {
    const __m256 scale = _mm256_set1_ps(absmax[b]);
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in));
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low), lo = _mm256_and_si256(raw, low);
    __m256i a = _mm256_unpacklo_epi8(hi, lo), c = _mm256_unpackhi_epi8(hi, lo);
    alignas(32) std::uint8_t q[kBlock];
    _mm256_store_si256(reinterpret_cast<__m256i*>(q), _mm256_permute2x128_si256(a, c, 0x20));
    _mm256_store_si256(reinterpret_cast<__m256i*>(q + 32), _mm256_permute2x128_si256(a, c, 0x31));
    for (std::size_t i = 0; i < kBlock; i += 8) {
      __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i)));
      __m256 pick_hi = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // sign bit set for codes 8..15
      __m256 val = _mm256_blendv_ps(_mm256_permutevar8x32_ps(table_lo, idx), _mm256_permutevar8x32_ps(table_hi, idx),
                                    pick_hi);
      val = _mm256_mul_ps(val, scale);
      if (stream) {
        _mm256_stream_ps(out + i, val);
      } else {
        _mm256_storeu_ps(out + i, val);
      }
    }
  }
  if (stream) _mm_sfence();
}

const Nf4Kernels kAvx2 = {quantize_block, dequantize_blocks};

}  // namespace

const Nf4Kernels& nf4_kernels_avx2() noexcept { return kAvx2; }

}  // namespace fastensors::quant_detail
