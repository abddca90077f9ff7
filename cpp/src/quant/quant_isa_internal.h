// The quantization kernels' per-ISA tables (GGML blocks, integer schemes,
// NF4). The level itself is fastensors::Isa, chosen once per process by
// cpu/isa.cpp for every kernel of the library; quantization has tables for
// Scalar, Avx2 and Avx512 and maps each level onto one of them
// (kernel_level). The scalar table is the reference; every other table must
// produce bit-identical output.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastensors/dtype.hpp"
#include "fastensors/isa.hpp"

namespace fastensors::quant_detail {

// The level whose quantization tables run at `isa`: Scalar, Avx2 or Avx512
// (Avx512Bf16 adds only conversions and runs the Avx512 tables). Levels the
// CPU cannot run, or this build has no kernels for, map to Scalar.
Isa kernel_level(Isa isa) noexcept;

// Kernels over `nblocks` consecutive blocks (32 values; 256 for the
// K-quants), indexed by GgmlType (K-quants: GgmlType - Q2_K).
// Quantizing returns false, with the output unspecified, when the input holds
// a NaN or an infinity (the SIMD kernels check that in the same pass).
using GgmlQuantizeFn = bool (*)(const float* x, std::size_t nblocks, std::uint8_t* out);
using GgmlDequantizeFn = void (*)(const std::uint8_t* in, std::size_t nblocks, float* out);

struct GgmlKernels {
  GgmlQuantizeFn quantize[5];
  GgmlDequantizeFn dequantize[5];
};

// The tables of kernel_level(isa).
const GgmlKernels& ggml_kernels(Isa isa) noexcept;

const GgmlKernels& ggml_kernels_scalar() noexcept;
// The K-quants (quant_kquant.cpp): Q2_K..Q6_K, byte-identical with ggml's
// reference quantizers.
const GgmlKernels& kquant_kernels_scalar() noexcept;
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
const GgmlKernels& kquant_kernels_avx2() noexcept;
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
const GgmlKernels& kquant_kernels_avx512() noexcept;
#endif
const GgmlKernels& kquant_kernels(Isa isa) noexcept;

// A K-quant super-block of 256 values in two steps. The search (the costly
// part, which the SIMD levels run on several super-blocks at once) gives
// each sub-block's scale, min (Q2_K, Q4_K, Q5_K) and levels; the finisher,
// shared by every level, quantizes the scales, recomputes the levels with
// them and writes the block.
void q2_k_search(const float* x, float* scales, float* mins, std::uint8_t* L);
void q3_k_search(const float* x, float* scales, std::int8_t* L);
void q4_k_search(const float* x, float* scales, float* mins, std::uint8_t* L);
void q5_k_search(const float* x, float* scales, float* mins, std::uint8_t* L);
void q6_k_search(const float* x, float* scales, std::int8_t* L);
void q2_k_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y);
void q3_k_finish(const float* x, const float* scales, std::int8_t* L, std::uint8_t* y);
void q4_k_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y);
void q5_k_finish(const float* x, const float* scales, const float* mins, std::uint8_t* L, std::uint8_t* y);
void q6_k_finish(const float* x, const float* scales, std::int8_t* L, std::uint8_t* y);
// One block quantized with an importance matrix: ggml's weighted quantizers
// (quantize_row_*_impl with quant_weights), byte for byte. x: the block's 32
// or 256 finite values; qw: its weights, one per value (the importance
// matrix's entries for the block's columns); row_sigma2: the mean square of
// the block's whole row in ggml's order (sum of x^2 element by element, over
// the row length), which only the 32-value formats use. Scalar at every
// level: the weighted searches have no SIMD lanes.
using GgmlWeightedBlockFn = void (*)(const float* x, const float* qw, float row_sigma2, std::uint8_t* y);
// The weighted quantizer of GgmlType `type` (as an int), or null for Q8_0
// (ggml ignores the weights for it) and unknown types.
GgmlWeightedBlockFn ggml_weighted_block(int type) noexcept;
// True when none of the n values is NaN or infinite.
bool all_finite(const float* x, std::size_t n) noexcept;
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
const GgmlKernels& ggml_kernels_avx2() noexcept;
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
const GgmlKernels& ggml_kernels_avx512() noexcept;
#endif

// Per-group kernels of the integer schemes (compressed-tensors formulas).
struct IntKernels {
  // min and max of n > 0 values; false when one is NaN or infinite. Only the
  // values are specified: the sign of a zero result may differ by level (no
  // caller observes it).
  bool (*range)(const float* x, std::size_t n, float* lo, float* hi);
  // q[j] = round_half_even(clamp(r(r(x[j] / scale) + zp), qmin, qmax)) where
  // r rounds to `round` (F32: no rounding; F16/BF16: the input's precision,
  // as a framework rounds after every operation on such tensors).
  void (*codes)(const float* x, std::size_t n, float scale, float zp, Dtype round, float qmin, float qmax,
                std::int8_t* q);
  // FP8 E4M3: out[j] = e4m3(clamp(r(x[j] / scale), -448, 448)) for finite
  // x, where r rounds to `round` (F32: no rounding, F16 or BF16: the input
  // dtype's precision), and e4m3 rounds to nearest even.
  void (*fp8_codes)(const float* x, std::size_t n, float scale, Dtype round, std::uint8_t* out);
  // out[j] = f32(in[j]) * scale for E4M3 codes.
  void (*fp8_values)(const std::uint8_t* in, std::size_t n, float scale, float* out);
};

const IntKernels& int_kernels(Isa isa) noexcept;

const IntKernels& int_kernels_scalar() noexcept;
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
const IntKernels& int_kernels_avx2() noexcept;
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
const IntKernels& int_kernels_avx512() noexcept;
#endif

// NF4 block kernels (blocks of 64 values, quant_nf4.cpp). `thresholds` are
// the 15 midpoints between neighbouring code values, `codes` the 16 values.
struct Nf4Kernels {
  // One block of 64 values -> its absmax and 32 bytes, two codes per byte,
  // the first in the high nibble; a code is the number of thresholds the
  // value times 1/absmax exceeds. False when a value is NaN or infinite.
  bool (*quantize_block)(const float* x, const float* thresholds, float* absmax, std::uint8_t* out);
  // `nblocks` whole blocks -> 64 * nblocks values codes[code] * absmax.
  void (*dequantize_blocks)(const std::uint8_t* in, const float* absmax, std::size_t nblocks, const float* codes,
                            float* out);
};

const Nf4Kernels& nf4_kernels(Isa isa) noexcept;

const Nf4Kernels& nf4_kernels_scalar() noexcept;
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
const Nf4Kernels& nf4_kernels_avx2() noexcept;
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
const Nf4Kernels& nf4_kernels_avx512() noexcept;
#endif

}  // namespace fastensors::quant_detail
