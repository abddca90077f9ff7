// AVX2 K-quant searches: eight super-blocks at once, one per lane
// (kquant_lanes.h). Compiled with the Avx2 level's flags and without FMA
// contraction; tested to give the scalar kernels' bytes.
#include <immintrin.h>

#include "quant/x86/kquant_lanes.h"

namespace fastensors::quant_detail {

namespace {

struct Avx2Lanes {
  static constexpr int N = 8;
  using F = __m256;
  using I = __m256i;
  using M = __m256;

  static F set(float v) { return _mm256_set1_ps(v); }
  static I seti(int v) { return _mm256_set1_epi32(v); }
  static F load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, F v) { _mm256_store_ps(p, v); }
  static void storei(std::int32_t* p, I v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  static F sqrt(F a) { return _mm256_sqrt_ps(a); }
  static F abs(F a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  static F neg(F a) { return _mm256_xor_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }  // a < b ? a : b
  static F max(F a, F b) { return _mm256_max_ps(a, b); }  // a > b ? a : b
  static M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M eq(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static M ne(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
  static M ine(I a, I b) {
    return _mm256_xor_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(a, b)), _mm256_castsi256_ps(_mm256_set1_epi32(-1)));
  }
  static M and_(M a, M b) { return _mm256_and_ps(a, b); }
  static M or_(M a, M b) { return _mm256_or_ps(a, b); }
  static M none() { return _mm256_setzero_ps(); }
  static bool any(M m) { return !_mm256_testz_ps(m, m); }
  static F sel(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }
  static I seli(M m, I a, I b) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(a), m));
  }
  // ggml's nearest_int: the low mantissa bits of v + 1.5 * 2^23.
  static I nearest(F v) {
    const I bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
  }
  static F cvt(I v) { return _mm256_cvtepi32_ps(v); }
  static I imin(I a, I b) { return _mm256_min_epi32(a, b); }
  static I imax(I a, I b) { return _mm256_max_epi32(a, b); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
};

}  // namespace

// Built on first use: the table copies the scalar one, which lives in
// another file.
const GgmlKernels& kquant_kernels_avx2() noexcept {
  static const GgmlKernels table = KLanes<Avx2Lanes>::table();
  return table;
}

}  // namespace fastensors::quant_detail
