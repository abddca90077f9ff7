// AVX2 kernels of the integer schemes: the per-group range (with the
// finiteness check in the same pass) and the F32 codes. Compiled with -mavx2
// and without FMA contraction; bit-identical to the scalar kernels in
// quant_int.cpp (tested). Nothing here is shared inline code.
#include <immintrin.h>

#include <cstdint>

#include "quant_isa_internal.h"

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

void codes(const float* x, std::size_t n, float scale, float zp, float qmin, float qmax, std::int8_t* q) {
  const __m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps(zp);
  const __m256 lo = _mm256_set1_ps(qmin), hi = _mm256_set1_ps(qmax);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  std::size_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m256i r[4];
    for (int k = 0; k < 4; ++k) {
      __m256 v = _mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(x + j + 8 * k), s), z);
      v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
      r[k] = _mm256_cvtps_epi32(v);  // round half to even (default MXCSR mode)
    }
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j), _mm256_permutevar8x32_epi32(p, order));
  }
  for (; j < n; ++j) {
    __m128 v = _mm_add_ss(_mm_div_ss(_mm_set_ss(x[j]), _mm_set_ss(scale)), _mm_set_ss(zp));
    v = _mm_min_ss(_mm_max_ss(v, _mm_set_ss(qmin)), _mm_set_ss(qmax));
    q[j] = static_cast<std::int8_t>(_mm_cvtss_si32(v));
  }
}

const IntKernels kAvx2 = {range, codes};

}  // namespace

const IntKernels& int_kernels_avx2() noexcept { return kAvx2; }

}  // namespace fastensors::quant_detail
