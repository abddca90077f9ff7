// AVX-512 kernels of the integer schemes: the per-group range (with the
// finiteness check in the same pass) and the F32 codes, 16 lanes with opmask
// tails. Compiled with the Avx512 level's flags and without FMA contraction;
// bit-identical to the scalar kernels in quant/quant_int.cpp (tested). No shared inline code.
#include <immintrin.h>

#include <cstdint>

#include "convert/convert_internal.h"
#include "quant/quant_isa_internal.h"

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

// Rounds finite values to the precision of `round` (round to nearest even).
inline __m512 round_like(__m512 v, Dtype round) {
  if (round == Dtype::BF16) {  // round to nearest even on the top 16 bits (finite values)
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    return _mm512_castsi512_ps(_mm512_and_si512(u, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  if (round == Dtype::F16) return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return v;
}

void codes(const float* x, std::size_t n, float scale, float zp, Dtype round, float qmin, float qmax,
           std::int8_t* q) {
  const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(zp);
  const __m512 lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
  for (std::size_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    __m512 v = round_like(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), s), round);
    v = round_like(_mm512_add_ps(v, z), round);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i r = _mm512_cvtps_epi32(v);  // round half to even (default MXCSR mode)
    _mm512_mask_cvtepi32_storeu_epi8(q + j, m, r);
  }
}

// FP8: divide, round to the input's precision, clamp; the E4M3 encoding is
// the dtype converter's AVX-512 kernel (bit-exact with ml_dtypes).
constexpr std::size_t kRun = 256;

void fp8_codes(const float* x, std::size_t n, float scale, Dtype round, std::uint8_t* out) {
  static const detail::ConvertKernel encode = detail::level_kernel(fastensors::Isa::Avx512, Dtype::F32, Dtype::F8_E4M3);
  const __m512 s = _mm512_set1_ps(scale), lim = _mm512_set1_ps(448.0f), nlim = _mm512_set1_ps(-448.0f);
  alignas(64) float buf[kRun];
  for (std::size_t i = 0; i < n; i += kRun) {
    const std::size_t m = n - i < kRun ? n - i : kRun;
    for (std::size_t j = 0; j < m; j += 16) {
      __m512 v = round_like(_mm512_div_ps(_mm512_maskz_loadu_ps(tail_mask(m - j), x + i + j), s), round);
      _mm512_store_ps(buf + j, _mm512_min_ps(_mm512_max_ps(v, nlim), lim));
    }
    encode(buf, out + i, m, false);
  }
}

void fp8_values(const std::uint8_t* in, std::size_t n, float scale, float* out) {
  static const detail::ConvertKernel decode = detail::level_kernel(fastensors::Isa::Avx512, Dtype::F8_E4M3, Dtype::F32);
  const __m512 s = _mm512_set1_ps(scale);
  decode(in, out, n, false);
  for (std::size_t j = 0; j < n; j += 16) {
    const __mmask16 m = tail_mask(n - j);
    _mm512_mask_storeu_ps(out + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out + j), s));
  }
}

const IntKernels kAvx512 = {range, codes, fp8_codes, fp8_values};

}  // namespace

const IntKernels& int_kernels_avx512() noexcept { return kAvx512; }

}  // namespace fastensors::quant_detail
