// Quantization kernels: GGML block formats, compressed-tensors style integer
// schemes, NF4 and FP8 E4M3, with their dequantization and quality metrics.
// Formulas, layouts and reference implementations: docs/quantization.md.
//
// Inputs are row-major matrices (rows = output channels; the last axis is
// quantized) of F32, F16 or BF16. Outputs are caller-allocated buffers whose
// sizes the *_size functions give. Every kernel is multithreaded with OpenMP
// and rejects NaN/Inf input with an InvalidArgument error naming the
// position of the first one found.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>

#include "fastensors/dtype.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors::quant {

// A read-only row-major matrix of F32, F16 or BF16 values.
struct Matrix {
  const void* data = nullptr;
  Dtype dtype = Dtype::F32;
  std::size_t rows = 0;
  std::size_t cols = 0;
};

// The instruction set the kernels run with: "avx512", "avx2" or "scalar".
// It follows fastensors::active_isa() (isa.hpp): chosen once per process
// from the CPU and OS, or forced with FASTENSORS_ISA; avx512bf16 runs the
// AVX-512 kernels. Every level gives bit-identical results. Throws
// UnsupportedIsa when FASTENSORS_ISA is unknown or cannot run here.
const char* kernel_isa();

// ---- GGML block formats ---------------------------------------------------
// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32, bit-exact with the gguf Python
// package. Q2_K..Q6_K: super-blocks of 256, byte-identical with ggml's
// reference quantizers (quantize_row_q*_K_ref) and bit-identical with its
// dequantizers.

enum class GgmlType { Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K };

inline constexpr std::size_t kGgmlBlock = 32;
inline constexpr std::size_t kGgmlSuperBlock = 256;

// Values per block: 32, or 256 for the K-quants.
std::size_t ggml_block_size(GgmlType type) noexcept;

// Bytes per block: 34, 18, 20, 22, 24; K-quants 84, 110, 144, 176, 210.
std::size_t ggml_block_bytes(GgmlType type) noexcept;

// Bytes of one quantized row; InvalidArgument when cols is not a multiple of
// the block size.
std::size_t ggml_row_bytes(GgmlType type, std::size_t cols);

// out: rows * ggml_row_bytes(type, cols) bytes.
void ggml_quantize(GgmlType type, const Matrix& in, std::uint8_t* out);

// Whether ggml quantizes `type` differently with an importance matrix: every
// type but Q8_0, whose weights ggml ignores.
bool ggml_has_weighted(GgmlType type) noexcept;

// Quantization weighted by an importance matrix (what llama-quantize
// --imatrix runs): imatrix holds in.cols weights, one per column, applied to
// every row; the bytes equal ggml_quantize_chunk's with that imatrix (ggml's
// quantize_row_*_impl with quant_weights). A null imatrix is the unweighted
// ggml_quantize above. Throws InvalidArgument for a type without a weighted
// form (Q8_0), a negative or non-finite weight, non-finite input, or a row
// length that is not a whole number of blocks. The weighted searches run
// scalar at every kernel level.
void ggml_quantize(GgmlType type, const Matrix& in, std::uint8_t* out, const float* imatrix);

// in: rows * ggml_row_bytes(type, cols) bytes; out: rows * cols floats.
void ggml_dequantize(GgmlType type, const std::uint8_t* in, std::size_t rows, std::size_t cols, float* out);

// ---- integer schemes (compressed-tensors formulas) ------------------------

struct IntParams {
  unsigned bits = 8;           // 8, 4 or 2
  std::size_t group_size = 0;  // a divisor of cols; cols itself for per-channel
  bool symmetric = true;
};

// Codes are signed, in [-2^(bits-1), 2^(bits-1) - 1]. `scales` has
// rows * (cols / group_size) elements of in.dtype (raw 32- or 16-bit
// patterns); `zero_points` the same count of int8, written only when the
// scheme is asymmetric (may be null otherwise).
void int_quantize(const Matrix& in, const IntParams& params, std::int8_t* codes, void* scales,
                  std::int8_t* zero_points);

// (code - zero_point) * scale, computed in F32.
void int_dequantize(const std::int8_t* codes, const void* scales, Dtype scale_dtype,
                    const std::int8_t* zero_points, std::size_t rows, std::size_t cols, std::size_t group_size,
                    float* out);

// int32 words per row when packing `cols` codes of `bits` bits (1, 2, 4 or 8;
// other widths throw InvalidArgument).
std::size_t packed_words(std::size_t cols, unsigned bits) noexcept;

// compressed-tensors pack_to_int32 along rows: code + 2^(bits-1), element i of
// a row at bit (i * bits) % 32 of word (i * bits) / 32; unused bits are zero.
void pack_int32(const std::int8_t* codes, std::size_t rows, std::size_t cols, unsigned bits, std::int32_t* out);
void unpack_int32(const std::int32_t* packed, std::size_t rows, std::size_t cols, unsigned bits, std::int8_t* codes);

// int_dequantize of codes packed as by pack_int32 (rows of packed_words
// int32 each), unpacked row by row without an int8 copy of the matrix.
void int_dequantize_packed(const std::int32_t* packed, unsigned bits, const void* scales, Dtype scale_dtype,
                           const std::int8_t* zero_points, std::size_t rows, std::size_t cols,
                           std::size_t group_size, float* out);

// ---- FP8 E4M3FN ------------------------------------------------------------

enum class Fp8Granularity { Tensor, Channel, Block };

inline constexpr std::size_t kFp8Tile = 128;

// 1, rows, or ceil(rows/128) * ceil(cols/128).
std::size_t fp8_scale_count(Fp8Granularity g, std::size_t rows, std::size_t cols) noexcept;

// out: rows * cols E4M3FN bytes; scales: fp8_scale_count elements of in.dtype.
void fp8_quantize(const Matrix& in, Fp8Granularity g, std::uint8_t* out, void* scales);
void fp8_dequantize(const std::uint8_t* in, const void* scales, Dtype scale_dtype, Fp8Granularity g,
                    std::size_t rows, std::size_t cols, float* out);

// ---- NF4 (bitsandbytes) ----------------------------------------------------

inline constexpr std::size_t kNf4Block = 64;

// The 16 NF4 code values, ascending.
const float* nf4_code_values() noexcept;

// The matrix is taken flat (n = rows * cols). out: ceil(n/2) bytes, first
// code in the high nibble; absmax: ceil(n/64) floats.
void nf4_quantize(const Matrix& in, std::uint8_t* out, float* absmax);
void nf4_dequantize(const std::uint8_t* in, const float* absmax, std::size_t n, float* out);

// ---- quality metrics -------------------------------------------------------

struct Quality {
  double cosine = 0;
  double sqnr_db = 0;
  double rmse = 0;
  double max_abs_err = 0;
};

// One pass over two equally long arrays of F32, F16, BF16 or F64, in double.
Quality quality(const void* reference, Dtype ref_dtype, const void* candidate, Dtype cand_dtype, std::size_t n);

}  // namespace fastensors::quant
FASTENSORS_EXPORT_END
