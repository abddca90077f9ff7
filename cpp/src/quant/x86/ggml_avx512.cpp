// AVX-512 (F + BW) GGML block kernels: two 16-lane vectors per block, opmask
// registers for the selects and vpmovdb for numpy's truncating byte cast.
// Compiled with the Avx512 level's flags (IsaKernels.cmake) and without FMA
// contraction; must produce exactly the output of the scalar kernels in
// quant/quant_ggml.cpp (tested bit for bit). Nothing here is shared inline code.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

constexpr std::size_t QK = 32;

inline void put_f16(std::uint8_t* p, float v) {
  std::uint16_t h = static_cast<std::uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0));
  std::memcpy(p, &h, 2);
}

inline float get_f16(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

inline float inverse(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

// True when the block holds a NaN or an infinity (|x| not below infinity).
inline bool nonfinite(__m512 v0, __m512 v1) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  return (_mm512_cmp_ps_mask(_mm512_abs_ps(v0), inf, _CMP_NLT_UQ) |
          _mm512_cmp_ps_mask(_mm512_abs_ps(v1), inf, _CMP_NLT_UQ)) != 0;
}

inline std::uint32_t eq_mask(__m512 a, __m512 b, __m512 value) {
  return static_cast<std::uint32_t>(_mm512_cmp_ps_mask(a, value, _CMP_EQ_OQ)) |
         (static_cast<std::uint32_t>(_mm512_cmp_ps_mask(b, value, _CMP_EQ_OQ)) << 16);
}

// Low bytes of two vectors of int32 (numpy's float -> uint8 cast after a
// truncating conversion), in element order.
inline __m256i low_bytes(__m512i a, __m512i b) {
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(a)), _mm512_cvtepi32_epi8(b), 1);
}

inline void pack_nibbles(__m256i q, std::uint8_t* out) {
  __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
}

inline __m256i split_high_bits(__m256i q, std::uint8_t* out) {
  std::uint32_t qh = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(q, 3)));
  std::memcpy(out, &qh, 4);
  return _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
}

// gguf's round half away from zero, then numpy's byte cast: floor(|n|) plus
// one when the (exact) fraction is at least a half, the sign put back, and a
// truncating conversion to int32 whose low byte is kept (see q8_code in
// quant_ggml.cpp). NaN, infinities and |n| >= 2^31 convert to INT32_MIN,
// whose low byte is 0, as in the reference.
inline __m512i q8_codes(__m512 n) {
  const __m512 a = _mm512_abs_ps(n);
  const __m512 fl = _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(a, fl), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 r = _mm512_mask_add_ps(fl, up, fl, _mm512_set1_ps(1.0f));
  // r carries no sign bit: xor with the sign bit of n (ternary logic: r | (n & sign)).
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  return _mm512_cvttps_epi32(
      _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(r), _mm512_castps_si512(n), sign, 0xf8)));
}

void q8_0_block(const __m512 v0, const __m512 v1, float d, float id, std::uint8_t* out) {
  put_f16(out, d);
  const __m512 vid = _mm512_set1_ps(id);
  __m256i q = low_bytes(q8_codes(_mm512_mul_ps(v0, vid)), q8_codes(_mm512_mul_ps(v1, vid)));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2), q);
}

// Sixteen blocks at once: the per-block maxima are reduced together (a
// transpose of max operations) into one vector, so the scales, their
// inverses and their F16 forms take three vector instructions per 16 blocks
// instead of a horizontal reduction and two scalar divisions per block.
bool q8_0_sixteen(const float* x, std::uint8_t* out) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 m[16];
  __mmask16 bad = 0;
  for (int b = 0; b < 16; ++b) {
    __m512 a0 = _mm512_abs_ps(_mm512_loadu_ps(x + 32 * b)), a1 = _mm512_abs_ps(_mm512_loadu_ps(x + 32 * b + 16));
    bad = static_cast<__mmask16>(bad | _mm512_cmp_ps_mask(a0, inf, _CMP_NLT_UQ) | _mm512_cmp_ps_mask(a1, inf, _CMP_NLT_UQ));
    m[b] = _mm512_max_ps(a0, a1);
  }
  if (bad) return false;
  // After each step a vector holds fewer, wider partial maxima per block.
  __m512 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i) {
    s1[i] = _mm512_max_ps(_mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], 0x44),
                          _mm512_shuffle_f32x4(m[2 * i], m[2 * i + 1], 0xee));
  }
  for (int i = 0; i < 4; ++i) {
    s2[i] = _mm512_max_ps(_mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0x88),
                          _mm512_shuffle_f32x4(s1[2 * i], s1[2 * i + 1], 0xdd));
  }
  for (int i = 0; i < 2; ++i) {
    s3[i] = _mm512_max_ps(_mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], 0x44),
                          _mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], 0xee));
  }
  __m512 r = _mm512_max_ps(_mm512_shuffle_ps(s3[0], s3[1], 0x88), _mm512_shuffle_ps(s3[0], s3[1], 0xdd));
  // Element 4 * l + e of r is block l + 4 * e: back to block order.
  const __m512 amax =
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
  const __m512 d = _mm512_div_ps(amax, _mm512_set1_ps(127.0f));
  const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ),
                                        _mm512_set1_ps(1.0f), d);
  alignas(64) float ds[16], ids[16];
  _mm512_store_ps(ds, d);
  _mm512_store_ps(ids, id);
  for (int b = 0; b < 16; ++b) {
    q8_0_block(_mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16), ds[b], ids[b], out + 34 * b);
  }
  return true;
}

bool q8_0_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  std::size_t blk = 0;
  for (; blk + 16 <= nblocks; blk += 16, x += 16 * QK, out += 16 * 34) {
    if (!q8_0_sixteen(x, out)) return false;
  }
  for (; blk < nblocks; ++blk, x += QK, out += 34) {
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    if (nonfinite(v0, v1)) return false;
    float d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))) / 127.0f;
    q8_0_block(v0, v1, d, inverse(d), out);
  }
  return true;
}

template <int K, bool kHighBit>
bool signed_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  constexpr std::size_t bb = kHighBit ? 22 : 18;
  const __m512 bias = _mm512_set1_ps(static_cast<float>(K) + 0.5f);
  const __m256i qmax = _mm256_set1_epi8(2 * K - 1);
  for (std::size_t blk = 0; blk < nblocks; ++blk, x += QK, out += bb) {
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    if (nonfinite(v0, v1)) return false;
    __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
    float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    float d = x[__builtin_ctz(eq_mask(a0, a1, _mm512_set1_ps(amax)))] / -static_cast<float>(K);
    __m512 id = _mm512_set1_ps(inverse(d));
    __m512i c0 = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(v0, id), bias));
    __m512i c1 = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(v1, id), bias));
    __m256i q = _mm256_min_epu8(low_bytes(c0, c1), qmax);
    put_f16(out, d);
    if (kHighBit) q = split_high_bits(q, out + 2);
    pack_nibbles(q, out + bb - QK / 2);
  }
  return true;
}

template <int kSteps, bool kHighBit>
bool affine_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  constexpr std::size_t bb = kHighBit ? 24 : 20;
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m256i qmax = _mm256_set1_epi8(kSteps);
  for (std::size_t blk = 0; blk < nblocks; ++blk, x += QK, out += bb) {
    __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    if (nonfinite(v0, v1)) return false;
    float mn = _mm512_reduce_min_ps(_mm512_min_ps(v0, v1));
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(v0, v1));
    if (mn == 0.0f || mx == 0.0f) {  // the sign of a zero result is that of the first zero
      float z = x[__builtin_ctz(eq_mask(v0, v1, _mm512_setzero_ps()))];
      if (mn == 0.0f) mn = z;
      if (mx == 0.0f) mx = z;
    }
    float d = (mx - mn) / static_cast<float>(kSteps);
    __m512 id = _mm512_set1_ps(inverse(d));
    __m512 vmn = _mm512_set1_ps(mn);
    __m512i c0 = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v0, vmn), id), half));
    __m512i c1 = _mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v1, vmn), id), half));
    __m256i q = _mm256_min_epu8(low_bytes(c0, c1), qmax);
    put_f16(out, d);
    put_f16(out + 2, mn);
    if (kHighBit) q = split_high_bits(q, out + 4);
    pack_nibbles(q, out + bb - QK / 2);
  }
  return true;
}

// Output blocks are 128 bytes: when the output is 64-byte aligned, streaming
// stores skip the read-for-ownership of every destination line, which is a
// third of the memory traffic of a dequantization.
inline void store16(float* y, __m512 v, bool stream) {
  if (stream) {
    _mm512_stream_ps(y, v);
  } else {
    _mm512_storeu_ps(y, v);
  }
}

inline bool streamable(const float* y) { return (reinterpret_cast<std::uintptr_t>(y) & 63u) == 0; }

void q8_0_dequant(const std::uint8_t* in, std::size_t nblocks, float* y) {
  const bool stream = streamable(y);
  for (std::size_t blk = 0; blk < nblocks; ++blk, in += 34, y += QK) {
    __m512 d = _mm512_set1_ps(get_f16(in));
    for (int i = 0; i < 2; ++i) {
      __m128i q8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 + 16 * i));
      store16(y + 16 * i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q8)), d), stream);
    }
  }
  if (stream) _mm_sfence();
}

template <bool kAffine, bool kHighBit>
void nibble_dequant(const std::uint8_t* in, std::size_t nblocks, float* y) {
  const bool stream = streamable(y);
  constexpr std::size_t bb = 18 + (kAffine ? 2 : 0) + (kHighBit ? 4 : 0);
  const __m512i offset = _mm512_set1_epi32(kAffine ? 0 : (kHighBit ? 16 : 8));
  const __m512i sixteen = _mm512_set1_epi32(16);
  for (std::size_t blk = 0; blk < nblocks; ++blk, in += bb, y += QK) {
    __m512 d = _mm512_set1_ps(get_f16(in));
    __m512 m = _mm512_set1_ps(kAffine ? get_f16(in + 2) : 0.0f);
    std::uint32_t qh = 0;
    if (kHighBit) std::memcpy(&qh, in + (kAffine ? 4 : 2), 4);
    __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + bb - QK / 2));
    __m128i nib[2] = {_mm_and_si128(qs, _mm_set1_epi8(0x0f)), _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0f))};
    for (int i = 0; i < 2; ++i) {
      __m512i q = _mm512_cvtepu8_epi32(nib[i]);
      if (kHighBit) q = _mm512_mask_or_epi32(q, static_cast<__mmask16>(qh >> (16 * i)), q, sixteen);
      __m512 v = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(q, offset)));
      if (kAffine) v = _mm512_add_ps(v, m);
      store16(y + 16 * i, v, stream);
    }
  }
  if (stream) _mm_sfence();
}

const GgmlKernels kAvx512 = {
    {q8_0_blocks, signed_blocks<8, false>, affine_blocks<15, false>, signed_blocks<16, true>,
     affine_blocks<31, true>},
    {q8_0_dequant, nibble_dequant<false, false>, nibble_dequant<true, false>, nibble_dequant<false, true>,
     nibble_dequant<true, true>},
};

}  // namespace

const GgmlKernels& ggml_kernels_avx512() noexcept { return kAvx512; }

}  // namespace fastensors::quant_detail
