// GGML K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of 256 values.
//
// Byte-identical with ggml's reference quantizers (what `llama-quantize` runs
// without an importance matrix) and bit-identical with ggml's dequantizers.
// That holds because every value is computed by the same IEEE operations in
// the same order: F32 throughout, sums accumulated element by element, no
// fused multiply-add (this file is compiled with -ffp-contract=off), integer
// conversions where ggml converts (an int narrowed to a byte wraps), and
// ggml's rounding of floats to int (add 1.5 * 2^23, take the mantissa: round
// half to even for |v| < 2^22). The formats, block by block:
//   Q2_K  84 B: scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit), d, dmin
//   Q3_K 110 B: hmask[32] (bit 2), qs[64] (2-bit), scales[12] (6-bit), d
//   Q4_K 144 B: d, dmin, scales[12] (6-bit scales and mins), qs[128]
//   Q5_K 176 B: d, dmin, scales[12], qh[32] (bit 4), qs[128]
//   Q6_K 210 B: ql[128], qh[64] (bits 4-5), scales[16] (int8), d
// d and dmin are F16.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "quant/quant_internal.h"
#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

namespace {

constexpr int QK_K = 256;
// Below this magnitude a group counts as all zeros (ggml's GROUP_MAX_EPS).
constexpr float kGroupMaxEps = 1e-15f;

// ggml's nearest_int: round half to even through the F32 mantissa.
inline int nearest_int(float fval) {
  float val = fval + 12582912.f;
  std::int32_t i;
  std::memcpy(&i, &val, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

// ggml's MIN / MAX macros (the same comparison, the same operand on ties).
inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }

// The start both signed searches share: the value of largest magnitude
// (the first of equal ones), then levels l in [-nmax, nmax) for the scale
// -nmax / max, stored as l + offset, with their weighted sums (weights qw,
// or x^2 when qw is null). False (levels all 0) for a group below ggml's
// all-zero threshold.
bool first_signed_levels(int n, int nmax, const float* x, const float* qw, int offset, std::int8_t* L, float* max_out,
                         float* sumlx_out, float* suml2_out) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return false;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = imax(-nmax, imin(nmax - 1, l));
    L[i] = static_cast<std::int8_t>(l + offset);
    float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  *max_out = max;
  *sumlx_out = sumlx;
  *suml2_out = suml2;
  return true;
}

// Signed levels in [-nmax, nmax) for a group scaled by its largest
// magnitude, refined over 18 nearby scales by weighted least squares
// (weights qw, or x^2 when qw is null): ggml's make_qx_quants, rmse_type 1.
float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* qw = nullptr) {
  float max, sumlx, suml2;
  if (!first_signed_levels(n, nmax, x, qw, nmax, L, &max, &sumlx, &suml2)) return 0.f;
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = imax(-nmax, imin(nmax - 1, l));
      float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<std::int8_t>(nmax + imax(-nmax, imin(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q3_K's scale search: levels in [-nmax, nmax), then up to five passes that
// move single levels while the weighted fit improves (ggml's make_q3_quants
// with do_rmse). L ends offset by nmax.
float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) {
  float max, sumlx, suml2;
  if (!first_signed_levels(n, nmax, x, nullptr, 0, L, &max, &sumlx, &suml2)) return 0.f;
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = imax(-nmax, imin(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * static_cast<float>(new_l);
          sl2 += w * static_cast<float>(new_l) * static_cast<float>(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Unsigned levels [0, nmax] with a scale and a (non-positive) min, searched
// over nstep + 1 candidate scales by weighted least squares, judged by the
// weighted squared (or absolute, use_mad) error: ggml's make_qkx2_quants.
// Returns the scale; *the_min is minus the offset.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* the_min,
                       std::uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<std::uint8_t>(imax(0, imin(nmax, l)));
    float diff = scale * static_cast<float>(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = imax(0, imin(nmax, l));
      Laux[i] = static_cast<std::uint8_t>(l);
      float w = weights[i];
      sum_l += w * static_cast<float>(l);
      sum_l2 += w * static_cast<float>(l) * static_cast<float>(l);
      sum_xl += w * static_cast<float>(l) * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Levels [0, nmax] (at most; ggml keeps each int in a byte, so a negative
// one wraps) for the non-negative sub-block scales or mins x under one
// super-scale: the best of 9 candidate scales by weighted squared error, then
// up to five passes moving single levels while the weighted fit improves.
// ggml's make_qp_quants, the weighted K-quants' scale quantizer.
float make_qp_quants(int n, int nmax, const float* x, std::uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int(iscale * x[i]));
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    float diff = x[i] - scale * static_cast<float>(L[i]);
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    float iscale_is = (0.1f * static_cast<float>(is) + static_cast<float>(nmax)) / max;
    float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = imin(nmax, nearest_int(iscale_is * x[i]));
      float diff = x[i] - scale_is * static_cast<float>(l);
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = imin(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    float w = qw[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float w = qw[i];
      float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
      float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
      if (slx > 0 && sl2 > 0) {
        int new_l = imin(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * static_cast<float>(new_l);
          sl2 += w * static_cast<float>(new_l) * static_cast<float>(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The weights of an importance-matrix search: qw[l] * sqrt(sigma2 + x[l]^2)
// for n values, and their sum (summed in order, as ggml does).
inline float imatrix_weights(int n, const float* x, const float* qw, float sigma2, float* weights) {
  float sumw = 0;
  for (int l = 0; l < n; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + x[l] * x[l]);
  for (int l = 0; l < n; ++l) sumw += weights[l];
  return sumw;
}

// Sum of squares of a super-block, in order.
inline float sum_squares(const float* x) {
  float s = 0;
  for (int j = 0; j < QK_K; ++j) s += x[j] * x[j];
  return s;
}

// The 6-bit scale and min of sub-block j of Q4_K / Q5_K's 12 packed bytes.
inline void get_scale_min_k4(int j, const std::uint8_t* q, std::uint8_t* d, std::uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// Four 2-bit levels per byte: byte l of each 32-byte run holds values
// l, l + 32, l + 64, l + 96 of its 128.
inline void pack_2bit(const std::uint8_t* L, std::uint8_t* qs) {
  for (int j = 0; j < QK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                                (L[j + l + 96] << 6));
    }
  }
}

// ---- Q2_K ------------------------------------------------------------------

// Q2_K's levels again under the stored scales (d, dmin and the 16 scale
// bytes already written), then packed.
void q2_k_levels(const float* x, std::uint8_t* L, std::uint8_t* y) {
  const std::uint8_t* scales_out = y;
  const float dall = get_f16(y + 80), mall = get_f16(y + 82);
  for (int j = 0; j < QK_K / 16; ++j) {
    const float d = dall * static_cast<float>(scales_out[j] & 0xF);
    if (d == 0.0f) continue;
    const float dm = mall * static_cast<float>(scales_out[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int((x[16 * j + ii] + dm) / d);
      L[16 * j + ii] = static_cast<std::uint8_t>(imax(0, imin(3, l)));
    }
  }
  pack_2bit(L, y + 16);
}

}  // namespace

void q2_k_search(const float* x, float* scales, float* mins, std::uint8_t* L) {
  std::uint8_t Laux[16];
  float weights[16];
  for (int j = 0; j < QK_K / 16; ++j) {
    for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
  }
}

void q2_k_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y) {
  std::uint8_t* scales_out = y;
  const float q4scale = 15.f;
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < QK_K / 16; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  if (max_scale > 0) {
    float iscale = q4scale / max_scale;
    for (int j = 0; j < QK_K / 16; ++j) scales_out[j] = static_cast<std::uint8_t>(nearest_int(iscale * scales[j]));
    put_f16(y + 80, max_scale / q4scale);
  } else {
    for (int j = 0; j < QK_K / 16; ++j) scales_out[j] = 0;
    put_f16(y + 80, 0.f);
  }
  if (max_min > 0) {
    float iscale = q4scale / max_min;
    for (int j = 0; j < QK_K / 16; ++j) {
      int l = nearest_int(iscale * mins[j]);
      scales_out[j] = static_cast<std::uint8_t>(scales_out[j] | (l << 4));
    }
    put_f16(y + 82, max_min / q4scale);
  } else {
    put_f16(y + 82, 0.f);
  }
  q2_k_levels(x, L, y);
}

namespace {

void q2_k_block(const float* x, std::uint8_t* y) {
  std::uint8_t L[QK_K];
  float mins[QK_K / 16], scales[QK_K / 16];
  q2_k_search(x, scales, mins, L);
  q2_k_finish(x, scales, mins, L, y);
}

void q2_k_dequant(const std::uint8_t* b, float* y) {
  const std::uint8_t* sc = b;
  const std::uint8_t* q = b + 16;
  const float d = get_f16(b + 80), min = get_f16(b + 82);
  int is = 0;
  for (int n = 0; n < QK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        std::uint8_t s = sc[is++];
        float dl = d * static_cast<float>(s & 0xF), ml = min * static_cast<float>(s >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
      shift += 2;
    }
    q += 32;
  }
}

// ---- Q3_K ------------------------------------------------------------------

// Writes the 16 6-bit codes (l + 32) into Q3_K's 12 scale bytes.
inline void pack_q3_scales(const int* l6, std::uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < QK_K / 16; ++j) {
    int l = l6[j];
    if (j < 8) {
      s[j] = static_cast<std::uint8_t>(l & 0xF);
    } else {
      s[j - 8] = static_cast<std::uint8_t>(s[j - 8] | ((l & 0xF) << 4));
    }
    l >>= 4;
    s[j % 4 + 8] = static_cast<std::uint8_t>(s[j % 4 + 8] | (l << (2 * (j / 4))));
  }
}

// The signed 6-bit scale of sub-block j, as the quantizer re-reads it.
inline int q3_scale(const std::uint8_t* s, int j) {
  int sc = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  // ggml keeps this in an int8_t: the value (0..63) - 32 always fits.
  return (sc | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

// The 3-bit levels (0..7) into hmask (bit 2; bit m of byte k for value
// 32 m + k) and qs (bits 0-1).
inline void pack_q3(std::uint8_t* L, std::uint8_t* hmask, std::uint8_t* qs) {
  std::memset(hmask, 0, QK_K / 8);
  int m = 0;
  std::uint8_t hm = 1;
  for (int j = 0; j < QK_K; ++j) {
    if (L[j] > 3) {
      hmask[m] = static_cast<std::uint8_t>(hmask[m] | hm);
      L[j] = static_cast<std::uint8_t>(L[j] - 4);
    }
    if (++m == QK_K / 8) {
      m = 0;
      hm = static_cast<std::uint8_t>(hm << 1);
    }
  }
  pack_2bit(L, qs);
}

// Q3_K's levels again under the stored scales (d and the 12 scale bytes
// already written), then packed into hmask and qs.
void q3_k_levels(const float* x, std::int8_t* L, std::uint8_t* y) {
  const std::uint8_t* s = y + 96;
  const float dall = get_f16(y + 108);
  for (int j = 0; j < QK_K / 16; ++j) {
    float d = dall * static_cast<float>(q3_scale(s, j));
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<std::int8_t>(imax(-4, imin(3, l)) + 4);
    }
  }
  pack_q3(reinterpret_cast<std::uint8_t*>(L), y, y + 32);
}

}  // namespace

void q3_k_search(const float* x, float* scales, std::int8_t* L) {
  for (int j = 0; j < QK_K / 16; ++j) scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
}

void q3_k_finish(const float* x, const float* scales, std::int8_t* L, std::uint8_t* y) {
  std::uint8_t* s = y + 96;
  float max_scale = 0, amax = 0;
  for (int j = 0; j < QK_K / 16; ++j) {
    float scale = std::fabs(scales[j]);
    if (scale > amax) {
      amax = scale;
      max_scale = scales[j];
    }
  }
  if (max_scale != 0.0f) {
    float iscale = -32.f / max_scale;
    int l6[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j) {
      // ggml narrows the rounded value to int8 before clamping.
      int l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
      l6[j] = imax(-32, imin(31, l)) + 32;
    }
    pack_q3_scales(l6, s);
    put_f16(y + 108, 1 / iscale);
  } else {
    std::memset(s, 0, 12);
    put_f16(y + 108, 0.f);
  }
  q3_k_levels(x, L, y);
}

namespace {

void q3_k_block(const float* x, std::uint8_t* y) {
  std::int8_t L[QK_K];
  float scales[QK_K / 16];
  q3_k_search(x, scales, L);
  q3_k_finish(x, scales, L, y);
}

void q3_k_dequant(const std::uint8_t* b, float* y) {
  const std::uint8_t* hm = b;
  const std::uint8_t* q = b + 32;
  const std::uint8_t* s = b + 96;
  const float d_all = get_f16(b + 108);
  int sc[16];
  for (int j = 0; j < 16; ++j) sc[j] = q3_scale(s, j);
  int is = 0;
  std::uint8_t m = 1;
  for (int n = 0; n < QK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        float dl = d_all * static_cast<float>(sc[is++]);
        for (int l = 0; l < 16; ++l) {
          const int k = l + 16 * half;
          int v = ((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      shift += 2;
      m = static_cast<std::uint8_t>(m << 1);
    }
    q += 32;
  }
}

// ---- Q4_K / Q5_K -----------------------------------------------------------

// Packs 8 6-bit scales and mins into 12 bytes (get_scale_min_k4's layout).
inline void pack_k4_scales(const std::uint8_t* ls, const std::uint8_t* lm, std::uint8_t* s) {
  for (int j = 0; j < QK_K / 32; ++j) {
    if (j < 4) {
      s[j] = ls[j];
      s[j + 4] = lm[j];
    } else {
      s[j + 4] = static_cast<std::uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      s[j - 4] = static_cast<std::uint8_t>(s[j - 4] | ((ls[j] >> 4) << 6));
      s[j - 0] = static_cast<std::uint8_t>(s[j - 0] | ((lm[j] >> 4) << 6));
    }
  }
}

// Q4_K's and Q5_K's weights of sub-block j: its RMS plus each magnitude.
inline void k4_weights(const float* x, float* weights) {
  float sum_x2 = 0;
  for (int l = 0; l < 32; ++l) sum_x2 += x[l] * x[l];
  float av_x = std::sqrt(sum_x2 / 32);
  for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[l]);
}

}  // namespace

void q4_k_search(const float* x, float* scales, float* mins, std::uint8_t* L) {
  std::uint8_t Laux[32];
  float weights[32];
  for (int j = 0; j < QK_K / 32; ++j) {
    k4_weights(x + 32 * j, weights);
    scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
  }
}

void q5_k_search(const float* x, float* scales, float* mins, std::uint8_t* L) {
  std::uint8_t Laux[32];
  float weights[32];
  for (int j = 0; j < QK_K / 32; ++j) {
    k4_weights(x + 32 * j, weights);
    scales[j] = make_qkx2_quants(32, 31, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
  }
}

namespace {

// Q4_K's (nmax 15) and Q5_K's (nmax 31) levels again under the stored
// scales and mins (d, dmin and the 12 scale bytes already written).
template <int kNmax>
void k4_levels(const float* x, std::uint8_t* L, const std::uint8_t* y) {
  const std::uint8_t* s = y + 4;
  const float dall = get_f16(y), mall = get_f16(y + 2);
  for (int j = 0; j < QK_K / 32; ++j) {
    std::uint8_t sc, m;
    get_scale_min_k4(j, s, &sc, &m);
    const float d = dall * static_cast<float>(sc);
    if (d == 0.0f) continue;
    const float dmin = mall * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dmin) / d);
      L[32 * j + ii] = static_cast<std::uint8_t>(imax(0, imin(kNmax, l)));
    }
  }
}

// Q4_K's 4-bit levels: byte l of each 32-byte run holds values l (low
// nibble) and l + 32 (high) of its 64.
void q4_k_pack(const std::uint8_t* L, std::uint8_t* y) {
  std::uint8_t* q = y + 16;
  for (int j = 0; j < QK_K; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

// Q5_K's 5-bit levels: low nibbles as Q4_K's, bit 4 in qh.
void q5_k_pack(const std::uint8_t* L, std::uint8_t* y) {
  std::uint8_t* qh = y + 16;
  std::uint8_t* ql = y + 48;
  std::memset(qh, 0, QK_K / 8);
  std::uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < QK_K; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] = static_cast<std::uint8_t>(qh[j] | m1);
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] = static_cast<std::uint8_t>(qh[j] | m2);
      }
      ql[j] = static_cast<std::uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<std::uint8_t>(m1 << 2);
    m2 = static_cast<std::uint8_t>(m2 << 2);
    ql += 32;
  }
}

// The common end of Q4_K (nmax 15) and Q5_K (nmax 31): the eight
// sub-blocks' scales and mins to 6 bits under F16 super-scales, then the
// levels again with the stored scales. Writes d, dmin and the 12 scale bytes.
template <int kNmax>
void k4_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y) {
  std::uint8_t* s = y + 4;
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < QK_K / 32; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::uint8_t ls[QK_K / 32], lm[QK_K / 32];
  for (int j = 0; j < QK_K / 32; ++j) {
    // Narrowed to a byte first, then clamped, as ggml does.
    std::uint8_t a = static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]));
    std::uint8_t b = static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]));
    ls[j] = a < 63 ? a : 63;
    lm[j] = b < 63 ? b : 63;
  }
  pack_k4_scales(ls, lm, s);
  put_f16(y, max_scale / 63.f);
  put_f16(y + 2, max_min / 63.f);
  k4_levels<kNmax>(x, L, y);
}

}  // namespace

void q4_k_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y) {
  k4_finish<15>(x, scales, mins, L, y);
  q4_k_pack(L, y);
}

void q5_k_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y) {
  k4_finish<31>(x, scales, mins, L, y);
  q5_k_pack(L, y);
}

namespace {

void q4_k_block(const float* x, std::uint8_t* y) {
  std::uint8_t L[QK_K];
  float scales[QK_K / 32], mins[QK_K / 32];
  q4_k_search(x, scales, mins, L);
  q4_k_finish(x, scales, mins, L, y);
}

void q5_k_block(const float* x, std::uint8_t* y) {
  std::uint8_t L[QK_K];
  float scales[QK_K / 32], mins[QK_K / 32];
  q5_k_search(x, scales, mins, L);
  q5_k_finish(x, scales, mins, L, y);
}

// Q4_K (kHigh false) and Q5_K (kHigh true): d * sc * q - dmin * m.
template <bool kHigh>
void k4_dequant(const std::uint8_t* b, float* y) {
  const float d = get_f16(b), min = get_f16(b + 2);
  const std::uint8_t* s = b + 4;
  const std::uint8_t* qh = b + 16;
  const std::uint8_t* q = b + (kHigh ? 48 : 16);
  int is = 0;
  std::uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < QK_K; j += 64) {
    std::uint8_t sc, m;
    get_scale_min_k4(is + 0, s, &sc, &m);
    const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
    get_scale_min_k4(is + 1, s, &sc, &m);
    const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] & 0xF) + (kHigh && (qh[l] & u1) ? 16 : 0);
      *y++ = d1 * static_cast<float>(v) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      int v = (q[l] >> 4) + (kHigh && (qh[l] & u2) ? 16 : 0);
      *y++ = d2 * static_cast<float>(v) - m2;
    }
    q += 32;
    is += 2;
    u1 = static_cast<std::uint8_t>(u1 << 2);
    u2 = static_cast<std::uint8_t>(u2 << 2);
  }
}

// ---- Q6_K ------------------------------------------------------------------

}  // namespace

void q6_k_search(const float* x, float* scales, std::int8_t* L) {
  for (int ib = 0; ib < QK_K / 16; ++ib) scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
}

void q6_k_finish(const float* x, const float* scales, std::int8_t* L, std::uint8_t* y) {
  std::uint8_t* ql = y;
  std::uint8_t* qh = y + 128;
  std::int8_t* sc = reinterpret_cast<std::int8_t*>(y + 192);
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < QK_K / 16; ++ib) {
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) {
      max_abs_scale = abs_scale;
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, 210);
    return;
  }
  float iscale = -128.f / max_scale;
  put_f16(y + 208, 1 / iscale);
  for (int ib = 0; ib < QK_K / 16; ++ib) sc[ib] = static_cast<std::int8_t>(imin(127, nearest_int(iscale * scales[ib])));
  const float dall = get_f16(y + 208);
  for (int j = 0; j < QK_K / 16; ++j) {
    float d = dall * static_cast<float>(sc[j]);
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      L[16 * j + ii] = static_cast<std::int8_t>(imax(-32, imin(31, l)) + 32);
    }
  }
  for (int j = 0; j < QK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
      const int q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l + 0] = static_cast<std::uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<std::uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<std::uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                        ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

namespace {

void q6_k_block(const float* x, std::uint8_t* y) {
  std::int8_t L[QK_K];
  float scales[QK_K / 16];
  q6_k_search(x, scales, L);
  q6_k_finish(x, scales, L, y);
}

void q6_k_dequant(const std::uint8_t* b, float* y) {
  const std::uint8_t* ql = b;
  const std::uint8_t* qh = b + 128;
  const std::int8_t* sc = reinterpret_cast<const std::int8_t*>(b + 192);
  const float d = get_f16(b + 208);
  for (int n = 0; n < QK_K; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

template <void (*Block)(const float*, std::uint8_t*), std::size_t kBytes>
bool quantize_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  // Non-finite input has no meaning in these searches: refused, as for the
  // 32-value formats.
  if (first_nonfinite(x, nblocks * QK_K) != nblocks * QK_K) return false;
  for (std::size_t b = 0; b < nblocks; ++b) Block(x + b * QK_K, out + b * kBytes);
  return true;
}

template <void (*Block)(const std::uint8_t*, float*), std::size_t kBytes>
void dequantize_blocks(const std::uint8_t* in, std::size_t nblocks, float* y) {
  for (std::size_t b = 0; b < nblocks; ++b) Block(in + b * kBytes, y + b * QK_K);
}

const GgmlKernels kScalar = {
    {quantize_blocks<q2_k_block, 84>, quantize_blocks<q3_k_block, 110>, quantize_blocks<q4_k_block, 144>,
     quantize_blocks<q5_k_block, 176>, quantize_blocks<q6_k_block, 210>},
    {dequantize_blocks<q2_k_dequant, 84>, dequantize_blocks<q3_k_dequant, 110>, dequantize_blocks<k4_dequant<false>, 144>,
     dequantize_blocks<k4_dequant<true>, 176>, dequantize_blocks<q6_k_dequant, 210>},
};

}  // namespace

const GgmlKernels& kquant_kernels_scalar() noexcept { return kScalar; }

bool all_finite(const float* x, std::size_t n) noexcept { return first_nonfinite(x, n) == n; }

// ---- importance-matrix (weighted) quantizers --------------------------------
// ggml's quantize_row_*_impl with quant_weights, one block at a time: qw
// holds the block's weights (the importance matrix's entries for its
// columns). The K-quants weigh each value by qw * sqrt(sigma2 + x^2) with
// sigma2 the super-block's mean square (doubled for Q3_K..Q5_K); Q6_K takes
// qw as it is; the 32-value formats use the mean square of the whole row,
// which the driver computes (sigma2 argument). The weighted searches are
// make_qkx3_quants (equal to make_qkx2_quants whenever weights are given:
// its max <= min test only differs from max == min for NaN, which is refused),
// make_qx_quants with weights, and make_qp_quants for the K-quants' scales.

namespace {

void q2_k_weighted(const float* x, const float* qw, float /*row_sigma2*/, std::uint8_t* y) {
  std::uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
  float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
  const float sigma2 = sum_squares(x) / static_cast<float>(QK_K);
  for (int j = 0; j < QK_K / 16; ++j) {
    sw[j] = imatrix_weights(16, x + 16 * j, qw + 16 * j, sigma2, weight);
    scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
  const float dm = make_qp_quants(QK_K / 16, 15, scales, Ls, sw);
  const float mm = make_qp_quants(QK_K / 16, 15, mins, Lm, sw);
  put_f16(y + 80, dm);
  put_f16(y + 82, mm);
  for (int j = 0; j < QK_K / 16; ++j) y[j] = static_cast<std::uint8_t>(Ls[j] | (Lm[j] << 4));
  q2_k_levels(x, L, y);
}

void q3_k_weighted(const float* x, const float* qw, float /*row_sigma2*/, std::uint8_t* y) {
  std::int8_t L[QK_K], Ls[QK_K / 16];
  float scales[QK_K / 16], sw[QK_K / 16], weight[16];
  const float sigma2 = 2 * sum_squares(x) / static_cast<float>(QK_K);
  for (int j = 0; j < QK_K / 16; ++j) {
    sw[j] = imatrix_weights(16, x + 16 * j, qw + 16 * j, sigma2, weight);
    scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
  }
  const float d_block = make_qx_quants(QK_K / 16, 32, scales, Ls, sw);
  int l6[QK_K / 16];
  for (int j = 0; j < QK_K / 16; ++j) l6[j] = Ls[j];
  pack_q3_scales(l6, y + 96);
  put_f16(y + 108, d_block);
  q3_k_levels(x, L, y);
}

// Q4_K (kNmax 15) and Q5_K (kNmax 31); ggml clamps the 6-bit scale codes to
// 63 for Q5_K only.
template <int kNmax>
void k4_weighted(const float* x, const float* qw, std::uint8_t* y) {
  std::uint8_t L[QK_K], Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
  float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
  const float sigma2 = 2 * sum_squares(x) / static_cast<float>(QK_K);
  for (int j = 0; j < QK_K / 32; ++j) {
    sw[j] = imatrix_weights(32, x + 32 * j, qw + 32 * j, sigma2, weights);
    scales[j] = make_qkx2_quants(32, kNmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
  }
  const float d_block = make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
  if (kNmax == 31) {
    for (int j = 0; j < QK_K / 32; ++j) {
      Ls[j] = Ls[j] < 63 ? Ls[j] : 63;
      Lm[j] = Lm[j] < 63 ? Lm[j] : 63;
    }
  }
  pack_k4_scales(Ls, Lm, y + 4);
  put_f16(y, d_block);
  put_f16(y + 2, m_block);
  k4_levels<kNmax>(x, L, y);
  if (kNmax == 31) {
    q5_k_pack(L, y);
  } else {
    q4_k_pack(L, y);
  }
}

void q4_k_weighted(const float* x, const float* qw, float /*row_sigma2*/, std::uint8_t* y) { k4_weighted<15>(x, qw, y); }
void q5_k_weighted(const float* x, const float* qw, float /*row_sigma2*/, std::uint8_t* y) { k4_weighted<31>(x, qw, y); }

void q6_k_weighted(const float* x, const float* qw, float /*row_sigma2*/, std::uint8_t* y) {
  std::int8_t L[QK_K];
  float scales[QK_K / 16];
  for (int ib = 0; ib < QK_K / 16; ++ib) scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw + 16 * ib);
  q6_k_finish(x, scales, L, y);
}

// The 32-value formats' nibbles: byte j holds values j (low) and j + 16.
inline void pack_legacy_nibbles(const std::uint8_t* L, std::uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<std::uint8_t>((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
}

// Bit 4 of each of the 32 levels, bit j of a little-endian uint32 for value j.
inline void pack_legacy_high_bits(const std::uint8_t* L, std::uint8_t* qh) {
  std::uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<std::uint32_t>((L[j] & 0x10u) >> 4) << j;
  for (int b = 0; b < 4; ++b) qh[b] = static_cast<std::uint8_t>(h >> (8 * b));
}

// Q4_0 (kNmax 8, 18 bytes) and Q5_0 (kNmax 16, 22 bytes): signed levels.
template <int kNmax>
void signed_weighted(const float* x, const float* qw, float row_sigma2, std::uint8_t* y) {
  float weight[32];
  std::int8_t L[32];
  imatrix_weights(32, x, qw, row_sigma2, weight);
  put_f16(y, make_qx_quants(32, kNmax, x, L, weight));
  const std::uint8_t* u = reinterpret_cast<const std::uint8_t*>(L);
  if (kNmax == 16) pack_legacy_high_bits(u, y + 2);
  pack_legacy_nibbles(u, y + (kNmax == 16 ? 6 : 2));
}

// Q4_1 (kNmax 15, 20 bytes) and Q5_1 (kNmax 31, 24 bytes): scale and min.
template <int kNmax>
void affine_weighted(const float* x, const float* qw, float row_sigma2, std::uint8_t* y) {
  float weight[32];
  std::uint8_t L[32], Laux[32];
  imatrix_weights(32, x, qw, row_sigma2, weight);
  float min = 0;
  const float d = make_qkx2_quants(32, kNmax, x, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
  put_f16(y, d);
  put_f16(y + 2, -min);
  if (kNmax == 31) pack_legacy_high_bits(L, y + 4);
  pack_legacy_nibbles(L, y + (kNmax == 31 ? 8 : 4));
}

}  // namespace

GgmlWeightedBlockFn ggml_weighted_block(int type) noexcept {
  // GgmlType order: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
  static const GgmlWeightedBlockFn table[10] = {
      nullptr,  // ggml quantizes Q8_0 without the weights
      signed_weighted<8>,
      affine_weighted<15>,
      signed_weighted<16>,
      affine_weighted<31>,
      q2_k_weighted,
      q3_k_weighted,
      q4_k_weighted,
      q5_k_weighted,
      q6_k_weighted,
  };
  return type >= 0 && type < 10 ? table[type] : nullptr;
}

}  // namespace fastensors::quant_detail
