// GGML block formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, and the driver of every
// GGML format (the K-quants' kernels: quant_kquant.cpp). The arithmetic follows the
// gguf Python package operation by operation in F32 (this file is compiled
// without FMA contraction): multiply by the inverse scale, round half away
// from zero (Q8_0) or add 8.5 / 16.5 / 0.5 and truncate, then numpy's
// float -> uint8 cast and clip. Scales are rounded to F16 only when stored.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "io/mapping_guard_internal.h"
#include "quant/quant_internal.h"
#include "quant/quant_isa_internal.h"

namespace fastensors::quant {

using namespace quant_detail;

namespace {

constexpr std::size_t QK = kGgmlBlock;

// Largest magnitude of a block; eight partial maxima so that the loop
// vectorizes (max of non-negative, non-NaN values does not depend on order).
inline float amax_block(const float* x) {
  float m[8] = {};
  for (std::size_t j = 0; j < QK; j += 8) {
    for (std::size_t k = 0; k < 8; ++k) {
      float a = std::fabs(x[j + k]);
      m[k] = a > m[k] ? a : m[k];
    }
  }
  for (std::size_t k = 0; k < 4; ++k) m[k] = m[k + 4] > m[k] ? m[k + 4] : m[k];
  m[0] = m[2] > m[0] ? m[2] : m[0];
  m[1] = m[3] > m[1] ? m[3] : m[1];
  return m[1] > m[0] ? m[1] : m[0];
}

// x[first index whose magnitude is amax]: numpy's argmax of abs, which keeps
// the first of equal magnitudes (and so the sign of that element).
inline float first_with_magnitude(const float* x, float amax) {
  unsigned best = QK;
  for (unsigned j = 0; j < QK; ++j) {
    unsigned c = std::fabs(x[j]) == amax ? j : static_cast<unsigned>(QK);
    best = c < best ? c : best;
  }
  return x[best];
}

// numpy's min / max of a block as gguf's Q4_1 / Q5_1 take them. The value
// does not depend on the order of comparisons; only the sign of a zero result
// does, and it is that of the first zero in the block.
inline void min_max_block(const float* x, float* lo, float* hi) {
  float a[8], b[8];
  for (std::size_t k = 0; k < 8; ++k) a[k] = b[k] = x[k];
  for (std::size_t j = 8; j < QK; j += 8) {
    for (std::size_t k = 0; k < 8; ++k) {
      float v = x[j + k];
      a[k] = v < a[k] ? v : a[k];
      b[k] = v > b[k] ? v : b[k];
    }
  }
  float mn = a[0], mx = b[0];
  for (std::size_t k = 1; k < 8; ++k) {
    mn = a[k] < mn ? a[k] : mn;
    mx = b[k] > mx ? b[k] : mx;
  }
  if (mn == 0.0f || mx == 0.0f) {  // rare: take the sign of the first zero
    for (std::size_t j = 0; j < QK; ++j) {
      if (x[j] == 0.0f) {
        if (mn == 0.0f) mn = x[j];
        if (mx == 0.0f) mx = x[j];
        break;
      }
    }
  }
  *lo = mn;
  *hi = mx;
}

inline float inverse(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

// np_roundf in gguf, cast to int8 the numpy way:
//   a = |n|; b = floor(a) + floor(2 * (a - floor(a))); sign(n) * b
// Both floors take non-negative arguments, where floor is trunc. For
// a < 2^31 the byte is that of sign(n) * (trunc(a) + (a - trunc(a) >= 0.5)),
// computed in int32 (exact: a - trunc(a) is exact and b fits); for larger a,
// inf and NaN numpy's cast yields INT32_MIN, whose low byte is 0.
inline std::uint8_t q8_code(float n) {
  float a = std::fabs(n);
  std::int32_t ia = a < 2147483648.0f ? static_cast<std::int32_t>(a) : 0;
  std::int32_t b = ia + static_cast<std::int32_t>(a - static_cast<float>(ia) >= 0.5f);
  b = a < 2147483648.0f ? b : 0;
  std::int32_t neg = -static_cast<std::int32_t>(std::signbit(n));
  return static_cast<std::uint8_t>(static_cast<std::uint32_t>((b ^ neg) - neg) & 0xffu);
}

// numpy's float -> uint8 cast of x (trunc(x) in gguf's formula truncates
// again, which changes nothing), clipped to qmax as an unsigned byte.
inline std::uint8_t clipped_code(float v, std::uint8_t qmax) {
  std::uint8_t c = np_cast_byte(v);
  return c > qmax ? qmax : c;
}

bool q8_0_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  if (first_nonfinite(x, nblocks * QK) != nblocks * QK) return false;
  for (std::size_t b = 0; b < nblocks; ++b, x += QK, out += 34) {
    float d = amax_block(x) / 127.0f;
    float id = inverse(d);
    put_f16(out, d);
    std::uint8_t q[QK];
    for (std::size_t j = 0; j < QK; ++j) q[j] = q8_code(x[j] * id);
    std::memcpy(out + 2, q, QK);
  }
  return true;
}

inline void pack_nibbles(const std::uint8_t* q, std::uint8_t* out) {
  for (std::size_t j = 0; j < QK / 2; ++j) {
    out[j] = static_cast<std::uint8_t>((q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4));
  }
}

inline void pack_high_bits(const std::uint8_t* q, std::uint8_t* out) {
  std::uint32_t qh = 0;
  for (std::size_t j = 0; j < QK; ++j) qh |= static_cast<std::uint32_t>((q[j] >> 4) & 1u) << j;
  for (int b = 0; b < 4; ++b) out[b] = static_cast<std::uint8_t>(qh >> (8 * b));
}

// The "max / -k" formats: Q4_0 (K = 8, 16 levels) and Q5_0 (K = 16, 32 levels).
template <int K, bool kHighBit>
bool signed_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  if (first_nonfinite(x, nblocks * QK) != nblocks * QK) return false;
  constexpr std::size_t bb = kHighBit ? 22 : 18;
  constexpr float bias = static_cast<float>(K) + 0.5f;
  constexpr std::uint8_t qmax = 2 * K - 1;
  for (std::size_t b = 0; b < nblocks; ++b, x += QK, out += bb) {
    float d = first_with_magnitude(x, amax_block(x)) / -static_cast<float>(K);
    float id = inverse(d);
    std::uint8_t q[QK];
    for (std::size_t j = 0; j < QK; ++j) q[j] = clipped_code(x[j] * id + bias, qmax);
    put_f16(out, d);
    if (kHighBit) pack_high_bits(q, out + 2);
    pack_nibbles(q, out + bb - QK / 2);
  }
  return true;
}

// The min/max formats: Q4_1 (15 steps) and Q5_1 (31 steps).
template <int kSteps, bool kHighBit>
bool affine_blocks(const float* x, std::size_t nblocks, std::uint8_t* out) {
  if (first_nonfinite(x, nblocks * QK) != nblocks * QK) return false;
  constexpr std::size_t bb = kHighBit ? 24 : 20;
  constexpr std::uint8_t qmax = kSteps;
  for (std::size_t b = 0; b < nblocks; ++b, x += QK, out += bb) {
    float mn, mx;
    min_max_block(x, &mn, &mx);
    float d = (mx - mn) / static_cast<float>(kSteps);
    float id = inverse(d);
    std::uint8_t q[QK];
    for (std::size_t j = 0; j < QK; ++j) q[j] = clipped_code((x[j] - mn) * id + 0.5f, qmax);
    put_f16(out, d);
    put_f16(out + 2, mn);
    if (kHighBit) pack_high_bits(q, out + 4);
    pack_nibbles(q, out + bb - QK / 2);
  }
  return true;
}

void q8_0_dequant(const std::uint8_t* in, std::size_t nblocks, float* y) {
  for (std::size_t b = 0; b < nblocks; ++b, in += 34, y += QK) {
    float d = get_f16(in);
    for (std::size_t j = 0; j < QK; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(in[2 + j])) * d;
  }
}

// Q4_0 / Q5_0: d * (q - K); Q4_1 / Q5_1: d * q + m. Element j < 16 is the low
// nibble of byte j, element j + 16 its high nibble; bit j of qh is bit 4.
template <bool kAffine, bool kHighBit>
void nibble_dequant(const std::uint8_t* in, std::size_t nblocks, float* y) {
  constexpr std::size_t bb = 18 + (kAffine ? 2 : 0) + (kHighBit ? 4 : 0);
  constexpr std::int32_t offset = kAffine ? 0 : (kHighBit ? 16 : 8);
  for (std::size_t b = 0; b < nblocks; ++b, in += bb, y += QK) {
    float d = get_f16(in);
    float m = kAffine ? get_f16(in + 2) : 0.0f;
    std::uint32_t qh = 0;
    if (kHighBit) std::memcpy(&qh, in + (kAffine ? 4 : 2), 4);  // little-endian, as stored
    const std::uint8_t* qs = in + bb - QK / 2;
    std::int32_t q[QK];
    for (std::size_t j = 0; j < QK / 2; ++j) {
      q[j] = qs[j] & 0x0f;
      q[j + QK / 2] = qs[j] >> 4;
    }
    if (kHighBit) {
      for (std::size_t j = 0; j < QK; ++j) q[j] |= static_cast<std::int32_t>(((qh >> j) & 1u) << 4);
    }
    for (std::size_t j = 0; j < QK; ++j) {
      float v = d * static_cast<float>(q[j] - offset);
      y[j] = kAffine ? v + m : v;
    }
  }
}

const GgmlKernels kScalar = {
    {q8_0_blocks, signed_blocks<8, false>, affine_blocks<15, false>, signed_blocks<16, true>,
     affine_blocks<31, true>},
    {q8_0_dequant, nibble_dequant<false, false>, nibble_dequant<true, false>, nibble_dequant<false, true>,
     nibble_dequant<true, true>},
};

const char* type_name(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return "q8_0";
    case GgmlType::Q4_0: return "q4_0";
    case GgmlType::Q4_1: return "q4_1";
    case GgmlType::Q5_0: return "q5_0";
    case GgmlType::Q5_1: return "q5_1";
    case GgmlType::Q2_K: return "q2_k";
    case GgmlType::Q3_K: return "q3_k";
    case GgmlType::Q4_K: return "q4_k";
    case GgmlType::Q5_K: return "q5_k";
    case GgmlType::Q6_K: return "q6_k";
  }
  return "?";
}

bool is_kquant(GgmlType t) { return static_cast<int>(t) >= static_cast<int>(GgmlType::Q2_K); }

// The kernels of `type` at the active level.
GgmlQuantizeFn quantize_kernel(GgmlType type) {
  if (is_kquant(type)) {
    return kquant_kernels(fastensors::active_isa()).quantize[static_cast<int>(type) - static_cast<int>(GgmlType::Q2_K)];
  }
  return ggml_kernels(fastensors::active_isa()).quantize[static_cast<int>(type)];
}

GgmlDequantizeFn dequantize_kernel(GgmlType type) {
  if (is_kquant(type)) {
    return kquant_kernels(fastensors::active_isa()).dequantize[static_cast<int>(type) - static_cast<int>(GgmlType::Q2_K)];
  }
  return ggml_kernels(fastensors::active_isa()).dequantize[static_cast<int>(type)];
}

void check_type(GgmlType type) {
  if (static_cast<unsigned>(type) > static_cast<unsigned>(GgmlType::Q6_K)) {
    throw Error(ErrorCode::InvalidArgument, "unknown GGML type " + std::to_string(static_cast<int>(type)));
  }
}

}  // namespace

std::size_t ggml_block_size(GgmlType type) noexcept { return is_kquant(type) ? kGgmlSuperBlock : QK; }

std::size_t ggml_block_bytes(GgmlType type) noexcept {
  switch (type) {
    case GgmlType::Q8_0: return 34;
    case GgmlType::Q4_0: return 18;
    case GgmlType::Q4_1: return 20;
    case GgmlType::Q5_0: return 22;
    case GgmlType::Q5_1: return 24;
    case GgmlType::Q2_K: return 84;
    case GgmlType::Q3_K: return 110;
    case GgmlType::Q4_K: return 144;
    case GgmlType::Q5_K: return 176;
    case GgmlType::Q6_K: return 210;
  }
  return 0;
}

std::size_t ggml_row_bytes(GgmlType type, std::size_t cols) {
  check_type(type);
  const std::size_t block = ggml_block_size(type);
  if (cols % block != 0) {
    throw Error(ErrorCode::InvalidArgument, std::string(type_name(type)) + ": row length " + std::to_string(cols) +
                                                " is not a multiple of the block size " + std::to_string(block));
  }
  return cols / block * ggml_block_bytes(type);
}

// Work is split into chunks of whole blocks, 2048 values: small enough to
// stay in L1 between the finiteness check and the kernel, large enough per
// call.
constexpr std::size_t kChunkValues = 2048;
// The K-quants take 32 super-blocks per call, so that the SIMD levels fill
// their lanes (16 super-blocks at once with AVX-512).
constexpr std::size_t kChunkValuesK = 8192;
// Below this many values (256 KiB of F32) one thread does it all; the
// K-quants' searches cost about 40x more per value, so they split sooner.
constexpr std::size_t kParallelValues = 65536;
constexpr std::size_t kParallelValuesK = 4096;
// Threads take this many chunks (64 KiB of F32) at a time: dynamic
// scheduling, because on a loaded machine a static split leaves every thread
// waiting at the barrier for the one that was preempted.
constexpr int kChunksPerGrab = 8;

bool ggml_has_weighted(GgmlType type) noexcept { return ggml_weighted_block(static_cast<int>(type)) != nullptr; }

namespace {

// The importance matrix must hold cols finite weights >= 0: ggml's searches
// divide by weighted sums, and llama-quantize refuses non-finite ones.
void check_imatrix(const float* imatrix, std::size_t cols, const char* scheme) {
  if (imatrix == nullptr && cols != 0) throw Error(ErrorCode::InvalidArgument, std::string(scheme) + ": null imatrix");
  for (std::size_t c = 0; c < cols; ++c) {
    const float w = imatrix[c];
    if (!(w >= 0.0f) || is_nonfinite(w)) {
      throw Error(ErrorCode::InvalidArgument, std::string(scheme) + ": imatrix[" + std::to_string(c) + "] is " +
                                                  (w != w ? std::string("nan") : std::to_string(w)) +
                                                  "; weights must be finite and >= 0");
    }
  }
}

// Each row's mean square as ggml's 32-value weighted quantizers take it: the
// squares summed in order over the whole row, divided by the row length.
std::vector<float> row_mean_squares(const Matrix& in) {
  std::vector<float> out(in.rows);
#pragma omp parallel if (in.rows * in.cols >= kParallelValues)
  {
    float buf[kChunkValues];
#pragma omp for schedule(dynamic, kChunksPerGrab)
    for (std::int64_t r = 0; r < to_i64(in.rows); ++r) {
      float sum = 0;
      const std::size_t row0 = static_cast<std::size_t>(r) * in.cols;
      for (std::size_t c = 0; c < in.cols; c += kChunkValues) {
        const std::size_t n = std::min(kChunkValues, in.cols - c);
        const float* x = as_f32(in, row0 + c, n, buf);
        for (std::size_t j = 0; j < n; ++j) sum += x[j] * x[j];
      }
      out[static_cast<std::size_t>(r)] = sum / static_cast<float>(in.cols);
    }
  }
  return out;
}

}  // namespace

void ggml_quantize(GgmlType type, const Matrix& in, std::uint8_t* out, const float* imatrix) {
  if (imatrix == nullptr) {
    ggml_quantize(type, in, out);
    return;
  }
  const detail::GuardedInputs guard{in.data};
  check_float_input(in, type_name(type));
  ggml_row_bytes(type, in.cols);  // validates type and cols
  const GgmlWeightedBlockFn kernel = ggml_weighted_block(static_cast<int>(type));
  if (kernel == nullptr) {
    throw Error(ErrorCode::InvalidArgument, std::string(type_name(type)) +
                                                " has no importance-matrix form (ggml quantizes it without weights)");
  }
  check_imatrix(imatrix, in.cols, type_name(type));
  const std::size_t block = ggml_block_size(type);
  const std::size_t blocks_per_row = in.cols / block;
  const std::size_t nblocks = in.rows * blocks_per_row;
  const std::size_t bb = ggml_block_bytes(type);
  // The 32-value formats weigh by the whole row's mean square: a first pass.
  const std::vector<float> sigma2 = is_kquant(type) ? std::vector<float>() : row_mean_squares(in);
  const std::size_t chunk_blocks = (is_kquant(type) ? kChunkValuesK : kChunkValues) / block;
  const std::size_t nchunks = (nblocks + chunk_blocks - 1) / chunk_blocks;
  NonFinite bad;
  // The weighted searches cost about as much as the unweighted scalar ones:
  // split as early as the K-quants.
#pragma omp parallel if (nblocks * block >= kParallelValuesK)
  {
    float buf[kChunkValuesK];
#pragma omp for schedule(dynamic, kChunksPerGrab)
    for (std::int64_t c = 0; c < to_i64(nchunks); ++c) {
      const std::size_t b0 = static_cast<std::size_t>(c) * chunk_blocks;
      const std::size_t nb = std::min(chunk_blocks, nblocks - b0);
      const std::size_t off = b0 * block, n = nb * block;
      const float* x = as_f32(in, off, n, buf);
      const std::size_t first_bad = first_nonfinite(x, n);
      if (first_bad != n) {
        bad.report(off + first_bad);
        continue;
      }
      for (std::size_t b = 0; b < nb; ++b) {
        // A chunk starts at a whole block, not a whole row: each block finds
        // its row (for sigma2) and its columns (for the weights).
        const std::size_t g = b0 + b, row = g / blocks_per_row, col = g % blocks_per_row * block;
        kernel(x + b * block, imatrix + col, sigma2.empty() ? 0.0f : sigma2[row], out + g * bb);
      }
    }
  }
  bad.throw_if_any(in, type_name(type));
}

void ggml_quantize(GgmlType type, const Matrix& in, std::uint8_t* out) {
  const detail::GuardedInputs guard{in.data};
  check_float_input(in, type_name(type));
  ggml_row_bytes(type, in.cols);  // validates type and cols
  const std::size_t block = ggml_block_size(type);
  const std::size_t nblocks = in.rows * (in.cols / block);
  const std::size_t bb = ggml_block_bytes(type);
  const std::size_t chunk_blocks = (is_kquant(type) ? kChunkValuesK : kChunkValues) / block;
  const GgmlQuantizeFn kernel = quantize_kernel(type);
  const std::size_t nchunks = (nblocks + chunk_blocks - 1) / chunk_blocks;
  const std::size_t parallel_values = is_kquant(type) ? kParallelValuesK : kParallelValues;
  NonFinite bad;
#pragma omp parallel if (nblocks * block >= parallel_values)
  {
    float buf[kChunkValuesK];
#pragma omp for schedule(dynamic, kChunksPerGrab)
    for (std::int64_t c = 0; c < to_i64(nchunks); ++c) {
      const std::size_t b0 = static_cast<std::size_t>(c) * chunk_blocks;
      const std::size_t nb = std::min(chunk_blocks, nblocks - b0);
      const std::size_t off = b0 * block, n = nb * block;
      const float* x = as_f32(in, off, n, buf);
      if (!kernel(x, nb, out + b0 * bb)) bad.report(off + first_nonfinite(x, n));
    }
  }
  bad.throw_if_any(in, type_name(type));
}

void ggml_dequantize(GgmlType type, const std::uint8_t* in, std::size_t rows, std::size_t cols, float* out) {
  const detail::GuardedInputs guard{in};
  ggml_row_bytes(type, cols);
  const std::size_t block = ggml_block_size(type);
  const std::size_t nblocks = rows * (cols / block);
  const std::size_t bb = ggml_block_bytes(type);
  const std::size_t chunk_blocks = kChunkValues / block;
  const GgmlDequantizeFn kernel = dequantize_kernel(type);
  const std::size_t nchunks = (nblocks + chunk_blocks - 1) / chunk_blocks;
#pragma omp parallel for schedule(dynamic, kChunksPerGrab) if (nblocks * block >= kParallelValues)
  for (std::int64_t c = 0; c < to_i64(nchunks); ++c) {
    const std::size_t b0 = static_cast<std::size_t>(c) * chunk_blocks;
    kernel(in + b0 * bb, std::min(chunk_blocks, nblocks - b0), out + b0 * block);
  }
}

}  // namespace fastensors::quant

namespace fastensors::quant_detail {

const GgmlKernels& ggml_kernels_scalar() noexcept { return quant::kScalar; }

}  // namespace fastensors::quant_detail
