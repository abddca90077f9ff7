// Private to the library: the kernel table each ISA level fills, and the
// entry points of the per-ISA source files.
#pragma once

#include <cstddef>

#include "fastensors/convert.hpp"
#include "fastensors/dtype.hpp"

namespace fastensors::detail {

// Converts `count` contiguous elements. Pointers need no alignment. `stream`
// hints that the output is large and will not be read back soon, so a kernel
// may use non-temporal stores (it then fences before returning).
using ConvertKernel = void (*)(const void* src, void* dst, std::size_t count, bool stream);

struct KernelTable {
  ConvertKernel fn[kDtypeCount][kDtypeCount] = {};

  ConvertKernel& at(Dtype from, Dtype to) noexcept {
    return fn[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
  }
  ConvertKernel at(Dtype from, Dtype to) const noexcept {
    return fn[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
  }
};

// Sets every dtype-to-itself entry of a whole-byte dtype to the copy kernel
// of its element width: copies[0..3] for 1, 2, 4 and 8 bytes. Sub-byte types
// are packed and get no element-wise entry.
void set_copy_kernels(KernelTable& table, const ConvertKernel (&copies)[4]) noexcept;

// The single-threaded kernel of one level for a pair (the scalar one when the
// CPU cannot run `isa`; nullptr for a pair convert() does not handle). For
// other kernels of the library that convert small runs inside their own loops.
ConvertKernel level_kernel(Isa isa, Dtype from, Dtype to) noexcept;

// Each level overwrites the entries it speeds up in a table that already
// holds the level below it, so a pair a level does not cover falls through
// to the next best kernel and, at the bottom, to the scalar reference.
void add_scalar_kernels(KernelTable& table);
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
void add_avx2_kernels(KernelTable& table);
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
void add_avx512_kernels(KernelTable& table);
#endif
#if defined(FASTENSORS_HAVE_AVX512BF16_KERNELS)
void add_avx512bf16_kernels(KernelTable& table);
#endif

}  // namespace fastensors::detail
