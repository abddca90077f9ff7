// AVX2 + F16C GGML block kernels. Compiled with the Avx2 level's flags
// (IsaKernels.cmake) and without FMA contraction; must produce exactly the
// bytes and floats of the scalar kernels in quant/quant_ggml.cpp (tested bit
// for bit). Nothing here is inline in a
// shared header, so no AVX2 code can be picked by the linker for baseline
// callers.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

constexpr std::size_t QK = 32;

struct Block {
  __m256 v[4];
};

inline Block load_block(const float* x) {
  return {{_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8), _mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)}};
}

inline __m256 abs_ps(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

// True when the block holds a NaN or an infinity (|x| not below infinity).
inline bool nonfinite(const Block& b) {
  const __m256 inf = _mm256_set1_ps(__builtin_inff());
  __m256 m = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(abs_ps(b.v[0]), inf, _CMP_NLT_UQ),
                                       _mm256_cmp_ps(abs_ps(b.v[1]), inf, _CMP_NLT_UQ)),
                          _mm256_or_ps(_mm256_cmp_ps(abs_ps(b.v[2]), inf, _CMP_NLT_UQ),
                                       _mm256_cmp_ps(abs_ps(b.v[3]), inf, _CMP_NLT_UQ)));
  return !_mm256_testz_ps(m, m);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline float amax_block(const Block& b) {
  __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(b.v[0]), abs_ps(b.v[1])), _mm256_max_ps(abs_ps(b.v[2]), abs_ps(b.v[3])));
  return hmax(m);
}

// Bit j set where x[j] == value (32 lanes).
inline std::uint32_t eq_mask(const Block& b, __m256 value, bool magnitude) {
  std::uint32_t m = 0;
  for (int i = 0; i < 4; ++i) {
    __m256 v = magnitude ? abs_ps(b.v[i]) : b.v[i];
    m |= static_cast<std::uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, value, _CMP_EQ_OQ))) << (8 * i);
  }
  return m;
}

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

// Low bytes of four vectors of int32, in element order.
inline __m256i low_bytes(const __m256i r[4]) {
  const __m256i ff = _mm256_set1_epi32(0xff);
  __m256i p01 = _mm256_packus_epi32(_mm256_and_si256(r[0], ff), _mm256_and_si256(r[1], ff));
  __m256i p23 = _mm256_packus_epi32(_mm256_and_si256(r[2], ff), _mm256_and_si256(r[3], ff));
  __m256i p = _mm256_packus_epi16(p01, p23);
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

bool q8_0_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  const __m256i int_min = _mm256_set1_epi32(INT32_MIN);
  const __m256 half = _mm256_set1_ps(0.5f);
  for (std::size_t blk = 0; blk < nblocks; ++blk, x += QK, out += 34) {
    Block b = load_block(x);
    if (nonfinite(b)) return false;
    float d = amax_block(b) / 127.0f;
    __m256 id = _mm256_set1_ps(inverse(d));
    put_f16(out, d);
    __m256i r[4];
    for (int i = 0; i < 4; ++i) {
      __m256 n = _mm256_mul_ps(b.v[i], id);
      __m256 a = abs_ps(n);
      __m256i ia = _mm256_cvttps_epi32(a);  // INT32_MIN for a >= 2^31 and NaN
      __m256 frac = _mm256_sub_ps(a, _mm256_cvtepi32_ps(ia));
      __m256i inc = _mm256_castps_si256(_mm256_cmp_ps(frac, half, _CMP_GE_OQ));
      __m256i bq = _mm256_sub_epi32(ia, inc);
      bq = _mm256_andnot_si256(_mm256_cmpeq_epi32(ia, int_min), bq);
      r[i] = _mm256_sign_epi32(bq, _mm256_castps_si256(n));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2), low_bytes(r));
  }
  return true;
}

// numpy's float -> uint8 cast (low byte of a truncating int32 conversion),
// clipped to qmax.
inline __m256i clipped_codes(const __m256 v[4], std::uint8_t qmax) {
  __m256i r[4];
  for (int i = 0; i < 4; ++i) r[i] = _mm256_cvttps_epi32(v[i]);
  return _mm256_min_epu8(low_bytes(r), _mm256_set1_epi8(static_cast<char>(qmax)));
}

// q[j] | q[j + 16] << 4 for codes below 16.
inline void pack_nibbles(__m256i q, std::uint8_t* out) {
  __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
}

// Bit 4 of each code, one bit per element; returns the codes' low nibbles.
inline __m256i split_high_bits(__m256i q, std::uint8_t* out) {
  std::uint32_t qh = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(q, 3)));
  std::memcpy(out, &qh, 4);
  return _mm256_and_si256(q, _mm256_set1_epi8(0x0f));
}

template <int K, bool kHighBit>
bool signed_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  constexpr std::size_t bb = kHighBit ? 22 : 18;
  const __m256 bias = _mm256_set1_ps(static_cast<float>(K) + 0.5f);
  for (std::size_t blk = 0; blk < nblocks; ++blk, x += QK, out += bb) {
    Block b = load_block(x);
    if (nonfinite(b)) return false;
    float amax = amax_block(b);
    float maxv = x[__builtin_ctz(eq_mask(b, _mm256_set1_ps(amax), true))];
    float d = maxv / -static_cast<float>(K);
    __m256 id = _mm256_set1_ps(inverse(d));
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_add_ps(_mm256_mul_ps(b.v[i], id), bias);
    __m256i q = clipped_codes(v, 2 * K - 1);
    put_f16(out, d);
    if (kHighBit) q = split_high_bits(q, out + 2);
    pack_nibbles(q, out + bb - QK / 2);
  }
  return true;
}

template <int kSteps, bool kHighBit>
bool affine_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  constexpr std::size_t bb = kHighBit ? 24 : 20;
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256 zero = _mm256_setzero_ps();
  for (std::size_t blk = 0; blk < nblocks; ++blk, x += QK, out += bb) {
    Block b = load_block(x);
    if (nonfinite(b)) return false;
    float mn = hmin(_mm256_min_ps(_mm256_min_ps(b.v[0], b.v[1]), _mm256_min_ps(b.v[2], b.v[3])));
    float mx = hmax(_mm256_max_ps(_mm256_max_ps(b.v[0], b.v[1]), _mm256_max_ps(b.v[2], b.v[3])));
    if (mn == 0.0f || mx == 0.0f) {  // the sign of a zero result is that of the first zero
      float z = x[__builtin_ctz(eq_mask(b, zero, false))];
      if (mn == 0.0f) mn = z;
      if (mx == 0.0f) mx = z;
    }
    float d = (mx - mn) / static_cast<float>(kSteps);
    __m256 id = _mm256_set1_ps(inverse(d));
    __m256 vmn = _mm256_set1_ps(mn);
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(b.v[i], vmn), id), half);
    __m256i q = clipped_codes(v, kSteps);
    put_f16(out, d);
    put_f16(out + 2, mn);
    if (kHighBit) q = split_high_bits(q, out + 4);
    pack_nibbles(q, out + bb - QK / 2);
  }
  return true;
}

void q8_0_dequant(const std::uint8_t* in, std::size_t nblocks, float* y) {
  for (std::size_t blk = 0; blk < nblocks; ++blk, in += 34, y += QK) {
    __m256 d = _mm256_set1_ps(get_f16(in));
    for (int i = 0; i < 4; ++i) {
      __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + 2 + 8 * i));
      __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8));
      _mm256_storeu_ps(y + 8 * i, _mm256_mul_ps(q, d));
    }
  }
}

template <bool kAffine, bool kHighBit>
void nibble_dequant(const std::uint8_t* in, std::size_t nblocks, float* y) {
  constexpr std::size_t bb = 18 + (kAffine ? 2 : 0) + (kHighBit ? 4 : 0);
  const __m256i offset = _mm256_set1_epi32(kAffine ? 0 : (kHighBit ? 16 : 8));
  const __m256i shifts = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i one = _mm256_set1_epi32(1);
  for (std::size_t blk = 0; blk < nblocks; ++blk, in += bb, y += QK) {
    __m256 d = _mm256_set1_ps(get_f16(in));
    __m256 m = _mm256_set1_ps(kAffine ? get_f16(in + 2) : 0.0f);
    std::uint32_t qh = 0;
    if (kHighBit) std::memcpy(&qh, in + (kAffine ? 4 : 2), 4);
    __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + bb - QK / 2));
    __m128i nib[2] = {_mm_and_si128(qs, _mm_set1_epi8(0x0f)), _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0f))};
    for (int i = 0; i < 4; ++i) {
      __m128i src = i < 2 ? nib[0] : nib[1];
      __m256i q = _mm256_cvtepu8_epi32(i % 2 == 0 ? src : _mm_srli_si128(src, 8));
      if (kHighBit) {
        __m256i h = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(qh >> (8 * i))), shifts);
        q = _mm256_or_si256(q, _mm256_slli_epi32(_mm256_and_si256(h, one), 4));
      }
      __m256 v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, offset)));
      if (kAffine) v = _mm256_add_ps(v, m);
      _mm256_storeu_ps(y + 8 * i, v);
    }
  }
}

const GgmlKernels kAvx2 = {
    {q8_0_blocks, signed_blocks<8, false>, affine_blocks<15, false>, signed_blocks<16, true>,
     affine_blocks<31, true>},
    {q8_0_dequant, nibble_dequant<false, false>, nibble_dequant<true, false>, nibble_dequant<false, true>,
     nibble_dequant<true, true>},
};

}  // namespace

const GgmlKernels& ggml_kernels_avx2() noexcept { return kAvx2; }

}  // namespace fastensors::quant_detail
