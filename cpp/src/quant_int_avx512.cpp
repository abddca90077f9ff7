// AVX-512 kernels of the integer schemes: the per-group range (with the
// finiteness check in the same pass) and the F32 codes, 16 lanes with opmask
// tails. Compiled with -mavx512f and without FMA contraction; bit-identical
// to the scalar kernels in quant_int.cpp (tested). No shared inline code.
#include <immintrin.h>

#include <cstdint>

#include "quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

inline __mmask16 tail_mask(std::size_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
}

bool range(const float* x, std::size_t n, float* lo, float* hi) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 a = _mm512_set1_ps(x[0]), b = a;
  __mmask16 bad = 0;
  for (std::size_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    __m512 v = _mm512_mask_loadu_ps(a, m, x + i);  // lanes past the end repeat x[0]: no effect on min/max
    bad = static_cast<__mmask16>(bad | _mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_NLT_UQ));
    a = _mm512_min_ps(a, v);
    v = _mm512_mask_loadu_ps(b, m, x + i);
    b = _mm512_max_ps(b, v);
  }
  if (bad) return false;
  *lo = _mm512_reduce_min_ps(a);
  *hi = _mm512_reduce_max_ps(b);
  return true;
}

void codes(const float* x, std::size_t n, float scale, float zp, float qmin, float qmax, std::int8_t* q) {
  const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(zp);
  const __m512 lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
  for (std::size_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    __m512 v = _mm512_add_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), s), z);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i r = _mm512_cvtps_epi32(v);  // round half to even (default MXCSR mode)
    _mm512_mask_cvtepi32_storeu_epi8(q + j, m, r);
  }
}

const IntKernels kAvx512 = {range, codes};

}  // namespace

const IntKernels& int_kernels_avx512() noexcept { return kAvx512; }

}  // namespace fastensors::quant_detail
