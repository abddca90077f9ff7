// Integer schemes (int8 / int4 / int2, symmetric or asymmetric, per group
// along the row) with the compressed-tensors formulas, and FP8 E4M3 with
// per-tensor, per-channel or 128x128 block scales. Every arithmetic step is
// rounded to the input dtype, as PyTorch does for F16/BF16 tensors:
//   lo = min(min(x), 0), hi = max(max(x), 0)
//   symmetric:  scale = max(|lo|, |hi|) / ((qmax - qmin) / 2), zp = 0
//   asymmetric: scale = (hi - lo) / (qmax - qmin),
//               zp = round_half_even(clamp(qmin - lo / scale, qmin, qmax))
//               (computed before zero scales are replaced; NaN -> 0)
//   scale == 0 -> eps of the dtype
//   q = round_half_even(clamp(x / scale + zp, qmin, qmax))    (int)
//   q = e4m3(clamp(x / scale, -448, 448))                      (fp8)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "io/mapping_guard_internal.h"
#include "quant/quant_internal.h"
#include "quant/quant_isa_internal.h"

namespace fastensors::quant {

using namespace quant_detail;

namespace {

constexpr float kE4m3Max = 448.0f;

// Round half to even for |v| < 2^22 (the codes are clamped far below that):
// adding and subtracting 1.5 * 2^23 rounds in the default FP mode.
inline float rint_small(float v) {
  const float magic = 12582912.0f;
  return (v + magic) - magic;
}

float dtype_eps(Dtype d) {
  if (d == Dtype::BF16) return 0.0078125f;
  if (d == Dtype::F16) return 0.0009765625f;
  return 1.1920928955078125e-07f;
}

struct Range {
  float qmin, qmax;
};

Range int_range(unsigned bits) {
  float half = static_cast<float>(1u << (bits - 1));
  return {-half, half - 1.0f};
}

// min and max of n finite values (checked by the caller). Eight partial
// results so that the loop vectorizes; the values do not depend on the order
// (only the sign of a zero result could, and no caller looks at it: the
// range is widened to include 0 and taken by magnitude or difference).
inline void min_max(const float* x, std::size_t n, float* lo, float* hi) {
  float a[8], b[8];
  for (std::size_t k = 0; k < 8; ++k) a[k] = b[k] = x[0];
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (std::size_t k = 0; k < 8; ++k) {
      float v = x[i + k];
      a[k] = v < a[k] ? v : a[k];
      b[k] = v > b[k] ? v : b[k];
    }
  }
  for (; i < n; ++i) {
    a[0] = x[i] < a[0] ? x[i] : a[0];
    b[0] = x[i] > b[0] ? x[i] : b[0];
  }
  for (std::size_t k = 1; k < 8; ++k) {
    a[0] = a[k] < a[0] ? a[k] : a[0];
    b[0] = b[k] > b[0] ? b[k] : b[0];
  }
  *lo = a[0];
  *hi = b[0];
}

bool range_scalar(const float* x, std::size_t n, float* lo, float* hi) {
  if (first_nonfinite(x, n) != n) return false;
  min_max(x, n, lo, hi);
  return true;
}

void codes_scalar(const float* x, std::size_t n, float scale, float zp, Dtype round, float qmin, float qmax,
                  std::int8_t* q) {
  for (std::size_t j = 0; j < n; ++j) {
    float v = round_to(round, round_to(round, x[j] / scale) + zp);
    v = std::min(std::max(v, qmin), qmax);
    q[j] = static_cast<std::int8_t>(rint_small(v));
  }
}

void fp8_codes_scalar(const float* x, std::size_t n, float scale, Dtype round, std::uint8_t* out) {
  for (std::size_t j = 0; j < n; ++j) {
    float v = round_to(round, x[j] / scale);
    v = std::min(std::max(v, -kE4m3Max), kE4m3Max);
    out[j] = f32_to_e4m3_bits(v);
  }
}

void fp8_values_scalar(const std::uint8_t* in, std::size_t n, float scale, float* out) {
  for (std::size_t j = 0; j < n; ++j) out[j] = e4m3_bits_to_f32(in[j]) * scale;
}

const IntKernels kIntScalar = {range_scalar, codes_scalar, fp8_codes_scalar, fp8_values_scalar};

// Symmetric scale from the observed range, before the eps replacement.
inline float symmetric_scale(Dtype dt, float lo, float hi, float range) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  float amax = std::max(std::fabs(lo), std::fabs(hi));
  return round_to(dt, amax / round_to(dt, range / 2.0f));
}

inline float replace_zero(Dtype dt, float scale) { return scale == 0.0f ? dtype_eps(dt) : scale; }

void check_shape_nonempty_cols(const Matrix& in, const char* what) {
  if (in.rows != 0 && in.cols == 0) {
    throw Error(ErrorCode::InvalidArgument, std::string(what) + ": rows of length 0 cannot be quantized");
  }
}

}  // namespace

void int_quantize(const Matrix& in, const IntParams& p, std::int8_t* codes, void* scales, std::int8_t* zero_points) {
  const detail::GuardedInputs guard{in.data};
  const std::string name = "int" + std::to_string(p.bits);
  check_float_input(in, name.c_str());
  if (p.bits != 8 && p.bits != 4 && p.bits != 2) {
    throw Error(ErrorCode::InvalidArgument, "integer quantization takes 8, 4 or 2 bits, not " + std::to_string(p.bits));
  }
  if (in.rows * in.cols == 0) return;
  check_shape_nonempty_cols(in, name.c_str());
  const std::size_t g = p.group_size;
  if (g == 0 || in.cols % g != 0) {
    throw Error(ErrorCode::InvalidArgument, name + ": row length " + std::to_string(in.cols) +
                                                " is not a multiple of the group size " + std::to_string(g));
  }
  if (!p.symmetric && zero_points == nullptr) throw Error(ErrorCode::InvalidArgument, name + ": no zero-point buffer");
  const Range r = int_range(p.bits);
  const float range = r.qmax - r.qmin;
  const Dtype dt = in.dtype;
  const std::size_t groups_per_row = in.cols / g;
  const std::size_t ngroups = in.rows * groups_per_row;
  const IntKernels& kernels = int_kernels(fastensors::active_isa());
  NonFinite bad;
  // Dynamic scheduling in grabs of about 64 KiB of F32 (see quant_ggml.cpp).
  const int grab = static_cast<int>(std::max<std::size_t>(1, 16384 / g));
#pragma omp parallel if (ngroups * g >= 65536)
  {
    std::vector<float> buf(g);
#pragma omp for schedule(dynamic, grab)
    for (std::int64_t gi = 0; gi < to_i64(ngroups); ++gi) {
      const std::size_t off = static_cast<std::size_t>(gi) * g;
      const float* x = buf.data();
      if (dt == Dtype::F32) {
        x = static_cast<const float*>(in.data) + off;  // no copy needed
      } else {
        load_f32(in, off, g, buf.data());
      }
      float lo, hi;
      if (!kernels.range(x, g, &lo, &hi)) {
        bad.report(off + first_nonfinite(x, g));
        continue;
      }
      float scale, zp = 0.0f;
      if (p.symmetric) {
        scale = symmetric_scale(dt, lo, hi, range);
      } else {
        lo = std::min(lo, 0.0f);
        hi = std::max(hi, 0.0f);
        scale = round_to(dt, round_to(dt, hi - lo) / range);
        float z = round_to(dt, r.qmin - round_to(dt, lo / scale));
        if (z != z) {
          z = 0.0f;  // all-zero group: 0/0; PyTorch's NaN -> int8 cast gives 0
        } else {
          z = rint_small(std::min(std::max(z, r.qmin), r.qmax));
        }
        zp = z;
        zero_points[gi] = static_cast<std::int8_t>(z);
      }
      scale = replace_zero(dt, scale);
      store_scale(dt, scales, static_cast<std::size_t>(gi), scale);
      // Symmetric: zp is 0 and adding it changes nothing but the sign of a zero.
      kernels.codes(x, g, scale, zp, dt, r.qmin, r.qmax, codes + off);
    }
  }
  bad.throw_if_any(in, name.c_str());
}

namespace {

void check_group(std::size_t group_size, std::size_t cols) {
  if (group_size == 0 || cols % group_size != 0) {
    throw Error(ErrorCode::InvalidArgument, "dequantize: bad group size " + std::to_string(group_size));
  }
}

// out[j] = (code[j] - zero point) * scale of group `gi`, in F32.
inline void dequantize_group(const std::int8_t* codes, std::size_t n, const void* scales, Dtype scale_dtype,
                             const std::int8_t* zero_points, std::size_t gi, float* out) {
  const float s = load_scale(scale_dtype, scales, gi);
  const float z = zero_points ? static_cast<float>(zero_points[gi]) : 0.0f;
  for (std::size_t j = 0; j < n; ++j) out[j] = (static_cast<float>(codes[j]) - z) * s;
}

}  // namespace

void int_dequantize(const std::int8_t* codes, const void* scales, Dtype scale_dtype, const std::int8_t* zero_points,
                    std::size_t rows, std::size_t cols, std::size_t group_size, float* out) {
  const detail::GuardedInputs guard{codes, scales, zero_points};
  if (rows * cols == 0) return;
  check_group(group_size, cols);
  const std::size_t ngroups = rows * (cols / group_size);
#pragma omp parallel for schedule(static) if (ngroups > 64)
  for (std::int64_t gi = 0; gi < to_i64(ngroups); ++gi) {
    const std::size_t off = static_cast<std::size_t>(gi) * group_size;
    dequantize_group(codes + off, group_size, scales, scale_dtype, zero_points, static_cast<std::size_t>(gi), out + off);
  }
}

std::size_t packed_words(std::size_t cols, unsigned bits) noexcept { return (cols * bits + 31) / 32; }

namespace {

// Bits as a template parameter: the shifts and the codes per word become
// constants, and the inner loops unroll and vectorize.
template <unsigned kBits>
void pack_rows(const std::int8_t* codes, std::size_t rows, std::size_t cols, std::int32_t* out) {
  constexpr std::size_t per_word = 32 / kBits;
  constexpr std::uint32_t offset = 1u << (kBits - 1), mask = (1u << kBits) - 1u;
  const std::size_t words = packed_words(cols, kBits);
#pragma omp parallel for schedule(static) if (rows * cols > (1u << 16))
  for (std::int64_t r = 0; r < to_i64(rows); ++r) {
    const std::int8_t* c = codes + static_cast<std::size_t>(r) * cols;
    std::int32_t* o = out + static_cast<std::size_t>(r) * words;
    const std::size_t full = cols / per_word;
    for (std::size_t w = 0; w < full; ++w, c += per_word) {
      std::uint32_t word = 0;
      for (std::size_t i = 0; i < per_word; ++i) {
        word |= ((static_cast<std::uint32_t>(c[i] + static_cast<int>(offset))) & mask) << (i * kBits);
      }
      o[w] = static_cast<std::int32_t>(word);
    }
    if (full < words) {  // a last, partly filled word
      std::uint32_t word = 0;
      for (std::size_t i = 0; i < cols - full * per_word; ++i) {
        word |= ((static_cast<std::uint32_t>(c[i] + static_cast<int>(offset))) & mask) << (i * kBits);
      }
      o[full] = static_cast<std::int32_t>(word);
    }
  }
}

template <unsigned kBits>
void unpack_row(const std::int32_t* p, std::size_t cols, std::int8_t* c) {
  constexpr std::size_t per_word = 32 / kBits;
  constexpr int offset = 1 << (kBits - 1);
  constexpr std::uint32_t mask = (1u << kBits) - 1u;
  const std::size_t words = packed_words(cols, kBits);
  for (std::size_t w = 0; w < words; ++w) {
    const std::uint32_t word = static_cast<std::uint32_t>(p[w]);
    const std::size_t n = std::min(per_word, cols - w * per_word);
    for (std::size_t i = 0; i < n; ++i) {
      c[w * per_word + i] = static_cast<std::int8_t>(static_cast<int>((word >> (i * kBits)) & mask) - offset);
    }
  }
}

using UnpackRow = void (*)(const std::int32_t*, std::size_t, std::int8_t*);

UnpackRow unpack_row_for(unsigned bits, const char* what) {
  switch (bits) {
    case 1: return unpack_row<1>;
    case 2: return unpack_row<2>;
    case 4: return unpack_row<4>;
    case 8: return unpack_row<8>;
    default: throw Error(ErrorCode::InvalidArgument, std::string(what) + ": bits must be 1, 2, 4 or 8 (the codes are int8)");
  }
}

}  // namespace

void pack_int32(const std::int8_t* codes, std::size_t rows, std::size_t cols, unsigned bits, std::int32_t* out) {
  const detail::GuardedInputs guard{codes};
  switch (bits) {
    case 1: return pack_rows<1>(codes, rows, cols, out);
    case 2: return pack_rows<2>(codes, rows, cols, out);
    case 4: return pack_rows<4>(codes, rows, cols, out);
    case 8: return pack_rows<8>(codes, rows, cols, out);
    default: throw Error(ErrorCode::InvalidArgument, "pack_int32: bits must be 1, 2, 4 or 8 (the codes are int8)");
  }
}

void unpack_int32(const std::int32_t* packed, std::size_t rows, std::size_t cols, unsigned bits, std::int8_t* codes) {
  const detail::GuardedInputs guard{packed};
  const UnpackRow unpack = unpack_row_for(bits, "unpack_int32");
  const std::size_t words = packed_words(cols, bits);
#pragma omp parallel for schedule(static) if (rows * cols > (1u << 16))
  for (std::int64_t r = 0; r < to_i64(rows); ++r) {
    unpack(packed + static_cast<std::size_t>(r) * words, cols, codes + static_cast<std::size_t>(r) * cols);
  }
}

void int_dequantize_packed(const std::int32_t* packed, unsigned bits, const void* scales, Dtype scale_dtype,
                           const std::int8_t* zero_points, std::size_t rows, std::size_t cols,
                           std::size_t group_size, float* out) {
  const detail::GuardedInputs guard{packed, scales, zero_points};
  const UnpackRow unpack = unpack_row_for(bits, "dequantize");
  if (rows * cols == 0) return;
  check_group(group_size, cols);
  const std::size_t words = packed_words(cols, bits), groups = cols / group_size;
  // Row by row: the codes of one row live in a per-thread buffer, never as a
  // whole int8 matrix.
#pragma omp parallel if (rows * cols > (1u << 16))
  {
    std::vector<std::int8_t> codes(cols);
#pragma omp for schedule(static)
    for (std::int64_t ri = 0; ri < to_i64(rows); ++ri) {
      const std::size_t r = static_cast<std::size_t>(ri);
      unpack(packed + r * words, cols, codes.data());
      for (std::size_t g = 0; g < groups; ++g) {
        dequantize_group(codes.data() + g * group_size, group_size, scales, scale_dtype, zero_points, r * groups + g,
                         out + r * cols + g * group_size);
      }
    }
  }
}

// ---- FP8 -------------------------------------------------------------------

std::size_t fp8_scale_count(Fp8Granularity g, std::size_t rows, std::size_t cols) noexcept {
  switch (g) {
    case Fp8Granularity::Tensor: return 1;
    case Fp8Granularity::Channel: return rows;
    case Fp8Granularity::Block: return ((rows + kFp8Tile - 1) / kFp8Tile) * ((cols + kFp8Tile - 1) / kFp8Tile);
  }
  return 0;
}

namespace {


inline float fp8_scale(Dtype dt, float lo, float hi) {
  return replace_zero(dt, symmetric_scale(dt, lo, hi, 2.0f * kE4m3Max));
}

}  // namespace

void fp8_quantize(const Matrix& in, Fp8Granularity gran, std::uint8_t* out, void* scales) {
  const detail::GuardedInputs guard{in.data};
  check_float_input(in, "fp8_e4m3");
  const Dtype dt = in.dtype;
  const std::size_t rows = in.rows, cols = in.cols;
  const std::size_t n = rows * cols;
  if (n == 0) {
    // An empty tensor still has its scales: those of an all-zero tensor.
    for (std::size_t i = 0; i < fp8_scale_count(gran, rows, cols); ++i) store_scale(dt, scales, i, dtype_eps(dt));
    return;
  }
  const IntKernels& k = int_kernels(fastensors::active_isa());
  NonFinite bad;
  // Pass 1: per-row min/max (all granularities reduce from rows or tiles of rows).
  if (gran == Fp8Granularity::Block) {
    const std::size_t tr = (rows + kFp8Tile - 1) / kFp8Tile, tc = (cols + kFp8Tile - 1) / kFp8Tile;
#pragma omp parallel
    {
      std::vector<float> buf(kFp8Tile);
#pragma omp for schedule(static)
      for (std::int64_t t = 0; t < to_i64(tr * tc); ++t) {
        const std::size_t bi = static_cast<std::size_t>(t) / tc, bj = static_cast<std::size_t>(t) % tc;
        const std::size_t r0 = bi * kFp8Tile, r1 = std::min(rows, r0 + kFp8Tile);
        const std::size_t c0 = bj * kFp8Tile, w = std::min(cols, c0 + kFp8Tile) - c0;
        float lo = 0.0f, hi = 0.0f;  // padding of edge tiles is zeros, and 0 is included anyway
        bool ok = true;
        for (std::size_t r = r0; r < r1; ++r) {
          const float* x = as_f32(in, r * cols + c0, w, buf.data());
          float a, b;
          if (!k.range(x, w, &a, &b)) {
            bad.report(r * cols + c0 + first_nonfinite(x, w));
            ok = false;
            break;
          }
          lo = std::min(lo, a);
          hi = std::max(hi, b);
        }
        if (!ok) continue;
        const float scale = fp8_scale(dt, lo, hi);
        store_scale(dt, scales, static_cast<std::size_t>(t), scale);
        const float s = load_scale(dt, scales, static_cast<std::size_t>(t));
        for (std::size_t r = r0; r < r1; ++r) {
          k.fp8_codes(as_f32(in, r * cols + c0, w, buf.data()), w, s, dt, out + r * cols + c0);
        }
      }
    }
    bad.throw_if_any(in, "fp8_e4m3");
    return;
  }
  std::vector<float> row_lo(rows), row_hi(rows);
#pragma omp parallel
  {
    std::vector<float> buf(dt == Dtype::F32 ? 0 : cols);
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < to_i64(rows); ++r) {
      const std::size_t off = static_cast<std::size_t>(r) * cols;
      const float* x = as_f32(in, off, cols, buf.data());
      if (!k.range(x, cols, &row_lo[static_cast<std::size_t>(r)], &row_hi[static_cast<std::size_t>(r)])) {
        bad.report(off + first_nonfinite(x, cols));
      }
    }
  }
  bad.throw_if_any(in, "fp8_e4m3");
  if (gran == Fp8Granularity::Tensor) {
    float lo = *std::min_element(row_lo.begin(), row_lo.end());
    float hi = *std::max_element(row_hi.begin(), row_hi.end());
    store_scale(dt, scales, 0, fp8_scale(dt, lo, hi));
  } else {
    for (std::size_t r = 0; r < rows; ++r) store_scale(dt, scales, r, fp8_scale(dt, row_lo[r], row_hi[r]));
  }
#pragma omp parallel
  {
    std::vector<float> buf(dt == Dtype::F32 ? 0 : cols);
#pragma omp for schedule(static)
    for (std::int64_t r = 0; r < to_i64(rows); ++r) {
      const std::size_t off = static_cast<std::size_t>(r) * cols;
      const float s = load_scale(dt, scales, gran == Fp8Granularity::Tensor ? 0 : static_cast<std::size_t>(r));
      k.fp8_codes(as_f32(in, off, cols, buf.data()), cols, s, dt, out + off);
    }
  }
}

void fp8_dequantize(const std::uint8_t* in, const void* scales, Dtype scale_dtype, Fp8Granularity gran,
                    std::size_t rows, std::size_t cols, float* out) {
  const detail::GuardedInputs guard{in, scales};
  const std::size_t tc = (cols + kFp8Tile - 1) / kFp8Tile;
  const IntKernels& k = int_kernels(fastensors::active_isa());
#pragma omp parallel for schedule(static) if (rows * cols > (1u << 16))
  for (std::int64_t ri = 0; ri < to_i64(rows); ++ri) {
    const std::size_t r = static_cast<std::size_t>(ri);
    // One scale per row, or per 128-column tile of the row.
    const std::size_t step = gran == Fp8Granularity::Block ? kFp8Tile : cols;
    for (std::size_t c = 0; c < cols; c += step) {
      const std::size_t si = gran == Fp8Granularity::Tensor ? 0
                             : gran == Fp8Granularity::Channel ? r
                                                               : (r / kFp8Tile) * tc + c / kFp8Tile;
      k.fp8_values(in + r * cols + c, std::min(step, cols - c), load_scale(scale_dtype, scales, si), out + r * cols + c);
    }
  }
}

}  // namespace fastensors::quant

namespace fastensors::quant_detail {

const IntKernels& int_kernels_scalar() noexcept { return quant::kIntScalar; }

}  // namespace fastensors::quant_detail
