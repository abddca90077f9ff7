// The K-quant searches (quant_kquant.cpp) on several super-blocks at once:
// one super-block per SIMD lane, so that each lane performs exactly the
// scalar operations in the scalar order (sums stay sequential within a
// lane), and data-dependent branches become per-lane selects. The result is
// the scalar search's, bit for bit; the shared finishers then write the
// blocks. Included only by the x86/ files, each with its own lane type V;
// everything is in an anonymous namespace, so no ISA-specific code can leave
// its file.
//
// V provides F (floats), I (int32) and M (masks) of V::N lanes and the
// operations used below with IEEE semantics: min(a, b) = a < b ? a : b,
// max(a, b) = a > b ? a : b (the SSE/AVX rules), ne unordered-true.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {
namespace {

template <class V>
struct KLanes {
  using F = typename V::F;
  using I = typename V::I;
  using M = typename V::M;
  static constexpr int N = V::N;
  static constexpr int QK_K = 256;

  static I clamp(I v, int lo, int hi) { return V::imax(V::seti(lo), V::imin(V::seti(hi), v)); }

  // make_qkx2_quants: levels [0, nmax], scale and min by weighted least
  // squares over nstep + 1 candidate scales.
  static F qkx2(int n, int nmax, const F* x, const F* w, I* L, F* the_min, float rmin, float rdelta, int nstep,
                bool use_mad) {
    const F zero = V::set(0.0f);
    F min = x[0], max = x[0];
    F sum_w = w[0];
    F sum_x = V::mul(sum_w, x[0]);
    for (int i = 1; i < n; ++i) {
      min = V::min(x[i], min);
      max = V::max(x[i], max);
      sum_w = V::add(sum_w, w[i]);
      sum_x = V::add(sum_x, V::mul(w[i], x[i]));
    }
    min = V::sel(V::gt(min, zero), zero, min);
    const F min0 = min;
    const M flat = V::eq(max, min);
    F iscale = V::div(V::set(static_cast<float>(nmax)), V::sub(max, min));
    F scale = V::div(V::set(1.0f), iscale);
    F best_error = zero;
    for (int i = 0; i < n; ++i) {
      I l = clamp(V::nearest(V::mul(iscale, V::sub(x[i], min))), 0, nmax);
      L[i] = l;
      F diff = V::sub(V::add(V::mul(scale, V::cvt(l)), min), x[i]);
      diff = use_mad ? V::abs(diff) : V::mul(diff, diff);
      best_error = V::add(best_error, V::mul(w[i], diff));
    }
    I Laux[32];
    for (int is = 0; is <= nstep; ++is) {
      // ggml moves min to each better candidate's, and the next candidate
      // scales divide by the range to that min.
      const float num = rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax);
      iscale = V::div(V::set(num), V::sub(max, min));
      F sum_l = zero, sum_l2 = zero, sum_xl = zero;
      for (int i = 0; i < n; ++i) {
        I l = clamp(V::nearest(V::mul(iscale, V::sub(x[i], min))), 0, nmax);
        Laux[i] = l;
        const F fl = V::cvt(l);
        const F wl = V::mul(w[i], fl);
        sum_l = V::add(sum_l, wl);
        sum_l2 = V::add(sum_l2, V::mul(wl, fl));
        sum_xl = V::add(sum_xl, V::mul(wl, x[i]));
      }
      const F D = V::sub(V::mul(sum_w, sum_l2), V::mul(sum_l, sum_l));
      const M ok = V::gt(D, zero);
      if (!V::any(ok)) continue;
      F this_scale = V::div(V::sub(V::mul(sum_w, sum_xl), V::mul(sum_x, sum_l)), D);
      F this_min = V::div(V::sub(V::mul(sum_l2, sum_x), V::mul(sum_l, sum_xl)), D);
      const M pos = V::gt(this_min, zero);
      this_min = V::sel(pos, zero, this_min);
      this_scale = V::sel(pos, V::div(sum_xl, sum_l2), this_scale);
      F cur_error = zero;
      for (int i = 0; i < n; ++i) {
        F diff = V::sub(V::add(V::mul(this_scale, V::cvt(Laux[i])), this_min), x[i]);
        diff = use_mad ? V::abs(diff) : V::mul(diff, diff);
        cur_error = V::add(cur_error, V::mul(w[i], diff));
      }
      const M better = V::and_(ok, V::lt(cur_error, best_error));
      if (!V::any(better)) continue;
      for (int i = 0; i < n; ++i) L[i] = V::seli(better, Laux[i], L[i]);
      best_error = V::sel(better, cur_error, best_error);
      scale = V::sel(better, this_scale, scale);
      min = V::sel(better, this_min, min);
    }
    // A flat group: all levels 0, scale 0, its min (whatever the masked-off
    // search computed from a zero range).
    for (int i = 0; i < n; ++i) L[i] = V::seli(flat, V::seti(0), L[i]);
    *the_min = V::neg(V::sel(flat, min0, min));
    return V::sel(flat, zero, scale);
  }

  // The value of largest magnitude (the first of equal ones) and that magnitude.
  static void signed_max(int n, const F* x, F* max, F* amax) {
    F m = V::set(0.0f), a = V::set(0.0f);
    for (int i = 0; i < n; ++i) {
      const F ax = V::abs(x[i]);
      const M g = V::gt(ax, a);
      a = V::sel(g, ax, a);
      m = V::sel(g, x[i], m);
    }
    *max = m;
    *amax = a;
  }

  // make_qx_quants with rmse_type 1 (weights x^2): levels [-nmax, nmax)
  // offset by nmax, refined over 18 nearby scales.
  static F qx(int n, int nmax, const F* x, I* L) {
    const F zero = V::set(0.0f);
    F max, amax;
    signed_max(n, x, &max, &amax);
    const M empty = V::lt(amax, V::set(1e-15f));
    F iscale = V::div(V::set(static_cast<float>(-nmax)), max);
    F sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
      I l = clamp(V::nearest(V::mul(iscale, x[i])), -nmax, nmax - 1);
      L[i] = V::iadd(l, V::seti(nmax));
      const F w = V::mul(x[i], x[i]);
      const F fl = V::cvt(l);
      sumlx = V::add(sumlx, V::mul(V::mul(w, x[i]), fl));
      suml2 = V::add(suml2, V::mul(V::mul(w, fl), fl));
    }
    F scale = V::sel(V::ne(suml2, zero), V::div(sumlx, suml2), zero);
    F best = V::mul(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
      if (is == 0) continue;
      iscale = V::div(V::set(-(static_cast<float>(nmax) + 0.1f * static_cast<float>(is))), max);
      sumlx = suml2 = zero;
      for (int i = 0; i < n; ++i) {
        const F w = V::mul(x[i], x[i]);
        const F fl = V::cvt(clamp(V::nearest(V::mul(iscale, x[i])), -nmax, nmax - 1));
        sumlx = V::add(sumlx, V::mul(V::mul(w, x[i]), fl));
        suml2 = V::add(suml2, V::mul(V::mul(w, fl), fl));
      }
      const M upd = V::and_(V::gt(suml2, zero), V::gt(V::mul(sumlx, sumlx), V::mul(best, suml2)));
      if (!V::any(upd)) continue;
      for (int i = 0; i < n; ++i) {
        const I l = V::iadd(clamp(V::nearest(V::mul(iscale, x[i])), -nmax, nmax - 1), V::seti(nmax));
        L[i] = V::seli(upd, l, L[i]);
      }
      scale = V::sel(upd, V::div(sumlx, suml2), scale);
      best = V::sel(upd, V::mul(scale, sumlx), best);
    }
    for (int i = 0; i < n; ++i) L[i] = V::seli(empty, V::seti(0), L[i]);
    return V::sel(empty, zero, scale);
  }

  // make_q3_quants with do_rmse: levels [-nmax, nmax), then passes that
  // move single levels while the weighted fit improves. A lane whose pass
  // changes nothing would change nothing in the next one either, so the
  // passes run until no lane changes (at most five, as in ggml).
  static F q3(int n, int nmax, const F* x, I* L) {
    const F zero = V::set(0.0f);
    F max, amax;
    signed_max(n, x, &max, &amax);
    const M empty = V::lt(amax, V::set(1e-15f));
    const F iscale = V::div(V::set(static_cast<float>(-nmax)), max);
    F sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
      const I l = clamp(V::nearest(V::mul(iscale, x[i])), -nmax, nmax - 1);
      L[i] = l;
      const F w = V::mul(x[i], x[i]);
      const F fl = V::cvt(l);
      sumlx = V::add(sumlx, V::mul(V::mul(w, x[i]), fl));
      suml2 = V::add(suml2, V::mul(V::mul(w, fl), fl));
    }
    for (int itry = 0; itry < 5; ++itry) {
      M changed = V::none();
      for (int i = 0; i < n; ++i) {
        const F w = V::mul(x[i], x[i]);
        const F fl = V::cvt(L[i]);
        F slx = V::sub(sumlx, V::mul(V::mul(w, x[i]), fl));
        const M c1 = V::gt(slx, zero);
        F sl2 = V::sub(suml2, V::mul(V::mul(w, fl), fl));
        const I new_l = clamp(V::nearest(V::div(V::mul(x[i], sl2), slx)), -nmax, nmax - 1);
        const M c2 = V::and_(c1, V::ine(new_l, L[i]));
        const F fn = V::cvt(new_l);
        slx = V::add(slx, V::mul(V::mul(w, x[i]), fn));
        sl2 = V::add(sl2, V::mul(V::mul(w, fn), fn));
        const M c3 = V::and_(V::and_(c2, V::gt(sl2, zero)),
                             V::gt(V::mul(V::mul(slx, slx), suml2), V::mul(V::mul(sumlx, sumlx), sl2)));
        L[i] = V::seli(c3, new_l, L[i]);
        sumlx = V::sel(c3, slx, sumlx);
        suml2 = V::sel(c3, sl2, suml2);
        changed = V::or_(changed, c3);
      }
      if (!V::any(changed)) break;
    }
    for (int i = 0; i < n; ++i) L[i] = V::seli(empty, V::seti(0), V::iadd(L[i], V::seti(nmax)));
    return V::sel(empty, zero, V::sel(V::gt(suml2, zero), V::div(sumlx, suml2), zero));
  }

  // The search of one format over N super-blocks in lane-major order
  // (X[i] holds value i of each lane's super-block).
  template <int kType>
  static void search(const F* X, F* scales, F* mins, I* L) {
    F w[32];
    if (kType == 0) {  // Q2_K: 16 groups of 16, weights |x|, mean absolute error
      for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l) w[l] = V::abs(X[16 * j + l]);
        scales[j] = qkx2(16, 3, X + 16 * j, w, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
      }
    } else if (kType == 1) {  // Q3_K
      for (int j = 0; j < QK_K / 16; ++j) scales[j] = q3(16, 4, X + 16 * j, L + 16 * j);
    } else if (kType == 2 || kType == 3) {  // Q4_K, Q5_K: 8 groups of 32
      for (int j = 0; j < QK_K / 32; ++j) {
        const F* xj = X + 32 * j;
        F sum_x2 = V::set(0.0f);
        for (int l = 0; l < 32; ++l) sum_x2 = V::add(sum_x2, V::mul(xj[l], xj[l]));
        const F av_x = V::sqrt(V::div(sum_x2, V::set(32.0f)));
        for (int l = 0; l < 32; ++l) w[l] = V::add(av_x, V::abs(xj[l]));
        scales[j] = kType == 2 ? qkx2(32, 15, xj, w, L + 32 * j, &mins[j], -1.f, 0.1f, 20, false)
                               : qkx2(32, 31, xj, w, L + 32 * j, &mins[j], -0.5f, 0.1f, 15, false);
      }
    } else {  // Q6_K
      for (int j = 0; j < QK_K / 16; ++j) scales[j] = qx(16, 32, X + 16 * j, L + 16 * j);
    }
  }

  // quantize over nblocks super-blocks: N at a time through the lanes, the
  // rest through the scalar search; every block written by the finisher.
  template <int kType>
  static bool quantize(const float* x, std::size_t nblocks, std::uint8_t* out) {
    if (!all_finite(x, nblocks * QK_K)) return false;
    static constexpr std::size_t kBytes[] = {84, 110, 144, 176, 210};
    constexpr int groups = (kType == 2 || kType == 3) ? QK_K / 32 : QK_K / 16;
    alignas(64) float xt[QK_K * N];
    alignas(64) float sc_t[16 * N], mn_t[16 * N];
    alignas(64) std::int32_t l_t[QK_K * N];
    F X[QK_K], scales[16], mins[16];
    I L[QK_K];
    std::size_t b = 0;
    for (; b + N <= nblocks; b += N) {
      const float* xb = x + b * QK_K;
      for (int lane = 0; lane < N; ++lane) {
        for (int i = 0; i < QK_K; ++i) xt[i * N + lane] = xb[lane * QK_K + i];
      }
      for (int i = 0; i < QK_K; ++i) X[i] = V::load(xt + i * N);
      search<kType>(X, scales, mins, L);
      for (int j = 0; j < groups; ++j) {
        V::store(sc_t + j * N, scales[j]);
        if (kType != 1 && kType != 4) V::store(mn_t + j * N, mins[j]);
      }
      for (int i = 0; i < QK_K; ++i) V::storei(l_t + i * N, L[i]);
      for (int lane = 0; lane < N; ++lane) {
        float s[16], m[16];
        std::uint8_t lv[QK_K];
        for (int j = 0; j < groups; ++j) {
          s[j] = sc_t[j * N + lane];
          m[j] = (kType != 1 && kType != 4) ? mn_t[j * N + lane] : 0.0f;
        }
        for (int i = 0; i < QK_K; ++i) lv[i] = static_cast<std::uint8_t>(l_t[i * N + lane]);
        const float* xl = xb + lane * QK_K;
        std::uint8_t* y = out + (b + static_cast<std::size_t>(lane)) * kBytes[kType];
        finish<kType>(xl, s, m, lv, y);
      }
    }
    for (; b < nblocks; ++b) {
      float s[16], m[16];
      std::uint8_t lv[QK_K];
      const float* xl = x + b * QK_K;
      if (kType == 0) q2_k_search(xl, s, m, lv);
      if (kType == 1) q3_k_search(xl, s, reinterpret_cast<std::int8_t*>(lv));
      if (kType == 2) q4_k_search(xl, s, m, lv);
      if (kType == 3) q5_k_search(xl, s, m, lv);
      if (kType == 4) q6_k_search(xl, s, reinterpret_cast<std::int8_t*>(lv));
      finish<kType>(xl, s, m, lv, out + b * kBytes[kType]);
    }
    return true;
  }

  template <int kType>
  static void finish(const float* x, const float* s, const float* m, std::uint8_t* lv, std::uint8_t* y) {
    if (kType == 0) q2_k_finish(x, s, m, lv, y);
    if (kType == 1) q3_k_finish(x, s, reinterpret_cast<std::int8_t*>(lv), y);
    if (kType == 2) q4_k_finish(x, s, m, lv, y);
    if (kType == 3) q5_k_finish(x, s, m, lv, y);
    if (kType == 4) q6_k_finish(x, s, reinterpret_cast<std::int8_t*>(lv), y);
  }

  // The level's table: SIMD searches, the scalar dequantizers (already
  // memory-bound).
  static GgmlKernels table() {
    const GgmlKernels& scalar = kquant_kernels_scalar();
    GgmlKernels t = scalar;
    t.quantize[0] = quantize<0>;
    t.quantize[1] = quantize<1>;
    t.quantize[2] = quantize<2>;
    t.quantize[3] = quantize<3>;
    t.quantize[4] = quantize<4>;
    return t;
  }
};

}  // namespace
}  // namespace fastensors::quant_detail
