// AVX-512 K-quant searches: sixteen super-blocks at once, one per lane
// (kquant_lanes.h). Compiled with the Avx512 level's flags and without FMA
// contraction; tested to give the scalar kernels' bytes.
#include <immintrin.h>

#include "quant/x86/kquant_lanes.h"

namespace fastensors::quant_detail {

namespace {

struct Avx512Lanes {
  static constexpr int N = 16;
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;

  static F set(float v) { return _mm512_set1_ps(v); }
  static I seti(int v) { return _mm512_set1_epi32(v); }
  static F load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, F v) { _mm512_store_ps(p, v); }
  static void storei(std::int32_t* p, I v) { _mm512_store_si512(p, v); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  static F sqrt(F a) { return _mm512_sqrt_ps(a); }
  static F abs(F a) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff)));
  }
  static F neg(F a) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)));
  }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }  // a < b ? a : b
  static F max(F a, F b) { return _mm512_max_ps(a, b); }  // a > b ? a : b
  static M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M eq(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M ne(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
  static M ine(I a, I b) { return _mm512_cmpneq_epi32_mask(a, b); }
  static M and_(M a, M b) { return static_cast<M>(a & b); }
  static M or_(M a, M b) { return static_cast<M>(a | b); }
  static M none() { return 0; }
  static bool any(M m) { return m != 0; }
  static F sel(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static I seli(M m, I a, I b) { return _mm512_mask_blend_epi32(m, b, a); }
  // ggml's nearest_int: the low mantissa bits of v + 1.5 * 2^23.
  static I nearest(F v) {
    const I bits = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.f)));
    return _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
  }
  static F cvt(I v) { return _mm512_cvtepi32_ps(v); }
  static I imin(I a, I b) { return _mm512_min_epi32(a, b); }
  static I imax(I a, I b) { return _mm512_max_epi32(a, b); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
};

}  // namespace

// Built on first use: the table copies the scalar one, which lives in
// another file.
const GgmlKernels& kquant_kernels_avx512() noexcept {
  static const GgmlKernels table = KLanes<Avx512Lanes>::table();
  return table;
}

}  // namespace fastensors::quant_detail
