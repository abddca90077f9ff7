// The quantization kernels' tables by level. The level is the library's one
// choice (fastensors::active_isa(), cpu/isa.cpp): the best the CPU and OS
// support, or what FASTENSORS_ISA forces, shared with the converters.
#include "fastensors/isa.hpp"
#include "fastensors/quant.hpp"
#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

Isa kernel_level(Isa isa) noexcept {
  if (!isa_supported(isa)) return Isa::Scalar;
  switch (isa) {
    case Isa::Scalar: return Isa::Scalar;
    case Isa::Avx2: return Isa::Avx2;
    case Isa::Avx512:
    case Isa::Avx512Bf16: return Isa::Avx512;
  }
  return Isa::Scalar;
}

namespace {

template <class Table>
const Table& by_level(Isa isa, const Table& scalar, const Table* avx2, const Table* avx512) noexcept {
  switch (kernel_level(isa)) {
    case Isa::Avx512: return avx512 != nullptr ? *avx512 : scalar;
    case Isa::Avx2: return avx2 != nullptr ? *avx2 : scalar;
    default: return scalar;
  }
}

}  // namespace

#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
#define FASTENSORS_QUANT_AVX2(kind) &kind##_avx2()
#else
#define FASTENSORS_QUANT_AVX2(kind) nullptr
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
#define FASTENSORS_QUANT_AVX512(kind) &kind##_avx512()
#else
#define FASTENSORS_QUANT_AVX512(kind) nullptr
#endif
#define FASTENSORS_QUANT_LEVELS(kind) kind##_scalar(), FASTENSORS_QUANT_AVX2(kind), FASTENSORS_QUANT_AVX512(kind)

const GgmlKernels& ggml_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(ggml_kernels)); }
const IntKernels& int_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(int_kernels)); }
const Nf4Kernels& nf4_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(nf4_kernels)); }
const GgmlKernels& kquant_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(kquant_kernels)); }

#undef FASTENSORS_QUANT_LEVELS
#undef FASTENSORS_QUANT_AVX512
#undef FASTENSORS_QUANT_AVX2

}  // namespace fastensors::quant_detail

namespace fastensors::quant {

// isa_name's views are null-terminated literals.
const char* kernel_isa() { return isa_name(quant_detail::kernel_level(active_isa())).data(); }

}  // namespace fastensors::quant
