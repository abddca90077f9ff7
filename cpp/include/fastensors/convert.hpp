// Dtype conversion: every float format <-> F32, F64 <-> F32, F16 <-> BF16,
// and the integer formats -> F32, bit-exact with ml_dtypes / numpy `astype`.
//
// The semantics of every pair (rounding, NaN, infinities, subnormals, signed
// zero, overflow, and where PyTorch's `.to()` differs) are written once, in
// docs/dtypes.md; the scalar kernels in
// cpp/src/convert/convert_scalar_internal.h state them in plain code and
// every SIMD kernel is tested against them bit for bit.
//
// Kernels are chosen at run time from a table ordered best to worst (Isa,
// fastensors/isa.hpp); the build compiles for the baseline and only the
// per-ISA source files (cpp/src/convert/x86/<isa>.cpp) get the matching
// compiler flags. Headers named `*_internal.h` under cpp/src are private to
// the library and not installed.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "fastensors/dtype.hpp"
#include "fastensors/isa.hpp"  // Isa, active_isa(): the kernel level

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// Whether convert() handles `from` -> `to`: the pairs listed at the top of
// this header, plus any byte-sized dtype to itself (a copy).
bool can_convert(Dtype from, Dtype to) noexcept;

struct ConvertOptions {
  // The kernel level; empty means active_isa(). A level the CPU cannot run
  // throws UnsupportedIsa.
  std::optional<Isa> isa;
  // Threads for large buffers: 0 = OpenMP's default, 1 = the calling thread
  // only. Buffers under kParallelThresholdBytes always use one thread.
  int threads = 0;
  // Non-temporal stores for the output: empty = when the output is over
  // kStreamThresholdBytes (large outputs bypass the caches they would only
  // evict). Results are the same either way. Pass false when `dst` was just
  // allocated (its pages not yet touched) or will be read back at once:
  // plain stores then hit the lines the page-fault handler has just zeroed.
  std::optional<bool> stream;
};

inline constexpr std::size_t kStreamThresholdBytes = std::size_t{16} << 20;

// Below this many bytes (read + written) a conversion runs on the calling
// thread. One core already streams a few GB/s, so a smaller buffer gains well
// under a millisecond from a second thread, while waking a thread whose core
// another process is using can cost a scheduler time slice (milliseconds).
inline constexpr std::size_t kParallelThresholdBytes = std::size_t{16} << 20;

// Converts `count` contiguous elements of `from` at `src` into `to` at `dst`.
// The buffers must not overlap unless src == dst and both dtypes have the
// same width. Throws UnsupportedConversion for a pair can_convert() rejects.
void convert(Dtype from, const void* src, Dtype to, void* dst, std::size_t count,
             const ConvertOptions& options = {});

// As convert(), with sizes in bytes: both must describe the same number of
// elements, else SizeMismatch.
void convert_bytes(Dtype from, const void* src, std::size_t src_bytes, Dtype to, void* dst,
                   std::size_t dst_bytes, const ConvertOptions& options = {});

// Converts an N-d array with arbitrary byte strides (negative ones too) into
// a contiguous, row-major `dst` of `dst_bytes` bytes and the same shape
// (SizeMismatch otherwise). `src` points at element [0, ..., 0]. A source
// that is contiguous after all takes convert()'s path; rows whose last axis
// is contiguous go straight through the kernels; other rows are gathered in
// small blocks first. No copy of the whole source is made.
void convert_strided(Dtype from, const void* src, const std::vector<std::int64_t>& shape,
                     const std::vector<std::int64_t>& src_strides, Dtype to, void* dst, std::size_t dst_bytes,
                     const ConvertOptions& options = {});

}  // namespace fastensors
FASTENSORS_EXPORT_END
