// AVX2 kernels of the integer schemes: the per-group range (with the
// finiteness check in the same pass) and the F32 codes. Compiled with the
// Avx2 level's flags and without FMA contraction; bit-identical to the
// scalar kernels in quant/quant_int.cpp (tested). Nothing here is shared inline code.
#include <immintrin.h>

#include <cstdint>

#include "convert/convert_internal.h"
#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

inline float hmin(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

bool range(const float* x, std::size_t n, float* lo, float* hi) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 inf = _mm256_set1_ps(__builtin_inff());
  __m256 a = _mm256_set1_ps(x[0]), b = a, bad = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), inf, _CMP_NLT_UQ));
    a = _mm256_min_ps(a, v);
    b = _mm256_max_ps(b, v);
  }
  if (!_mm256_testz_ps(bad, bad)) return false;
  float mn = hmin(a), mx = hmax(b);
  for (; i < n; ++i) {
    const float v = x[i];
    if (!(v - v == 0.0f)) return false;  // NaN or infinite
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  *lo = mn;
  *hi = mx;
  return true;
}

// Rounds finite values to the precision of `round` (round to nearest even).
inline __m256 round_like(__m256 v, Dtype round) {
  if (round == Dtype::BF16) {  // round to nearest even on the top 16 bits (finite values)
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    u = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    return _mm256_castsi256_ps(_mm256_and_si256(u, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  if (round == Dtype::F16) return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return v;
}

inline __m256i code_lanes(__m256 x, __m256 s, __m256 z, Dtype round, __m256 lo, __m256 hi) {
  __m256 v = round_like(_mm256_add_ps(round_like(_mm256_div_ps(x, s), round), z), round);
  v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
  return _mm256_cvtps_epi32(v);  // round half to even (default MXCSR mode)
}

void codes(const float* x, std::size_t n, float scale, float zp, Dtype round, float qmin, float qmax,
           std::int8_t* q) {
  const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(zp);
  const __m256 lo = _mm256_set1_ps(qmin), hi = _mm256_set1_ps(qmax);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  std::size_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256i r[4];
    for (int k = 0; k < 4; ++k) r[k] = code_lanes(_mm256_loadu_ps(x + j + 8 * k), s, z, round, lo, hi);
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j), _mm256_permutevar8x32_epi32(p, order));
  }
  for (; j < n; j += 8) {  // the tail, eight lanes at a time through zero-padded buffers
    const std::size_t m = n - j < 8 ? n - j : 8;
    alignas(32) float t[8] = {};
    alignas(32) std::int32_t c[8];
    for (std::size_t k = 0; k < m; ++k) t[k] = x[j + k];
    _mm256_store_si256(reinterpret_cast<__m256i*>(c), code_lanes(_mm256_load_ps(t), s, z, round, lo, hi));
    for (std::size_t k = 0; k < m; ++k) q[j + k] = static_cast<std::int8_t>(c[k]);
  }
}

// FP8: divide, round to the input's precision, clamp; the E4M3 encoding is
// the dtype converter's AVX2 kernel (bit-exact with ml_dtypes).
constexpr std::size_t kRun = 256;

void fp8_codes(const float* x, std::size_t n, float scale, Dtype round, std::uint8_t* out) {
  static const detail::ConvertKernel encode = detail::level_kernel(fastensors::Isa::Avx2, Dtype::F32, Dtype::F8_E4M3);
  const __m256 s = _mm256_set1_ps(scale), lim = _mm256_set1_ps(448.0f), nlim = _mm256_set1_ps(-448.0f);
  alignas(32) float buf[kRun];
  for (std::size_t i = 0; i < n; i += kRun) {
    const std::size_t m = n - i < kRun ? n - i : kRun;
    std::size_t j = 0;
    for (; j + 8 <= m; j += 8) {
      __m256 v = round_like(_mm256_div_ps(_mm256_loadu_ps(x + i + j), s), round);
      _mm256_store_ps(buf + j, _mm256_min_ps(_mm256_max_ps(v, nlim), lim));
    }
    if (j < m) {  // the tail through a zero-padded vector
      alignas(32) float t[8] = {};
      for (std::size_t k = j; k < m; ++k) t[k - j] = x[i + k];
      __m256 v = round_like(_mm256_div_ps(_mm256_load_ps(t), s), round);
      _mm256_store_ps(t, _mm256_min_ps(_mm256_max_ps(v, nlim), lim));
      for (std::size_t k = j; k < m; ++k) buf[k] = t[k - j];
    }
    encode(buf, out + i, m, false);
  }
}

void fp8_values(const std::uint8_t* in, std::size_t n, float scale, float* out) {
  static const detail::ConvertKernel decode = detail::level_kernel(fastensors::Isa::Avx2, Dtype::F8_E4M3, Dtype::F32);
  const __m256 s = _mm256_set1_ps(scale);
  decode(in, out, n, false);
  std::size_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_loadu_ps(out + j), s));
  for (; j < n; ++j) out[j] = _mm_cvtss_f32(_mm_mul_ss(_mm_set_ss(out[j]), _mm_set_ss(scale)));
}

const IntKernels kAvx2 = {range, codes, fp8_codes, fp8_values};

}  // namespace

const IntKernels& int_kernels_avx2() noexcept { return kAvx2; }

}  // namespace fastensors::quant_detail
