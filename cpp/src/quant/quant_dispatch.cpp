// Chooses the quantization kernels' instruction set once per process. The
// level is the one the dtype converters run at (fastensors::active_isa():
// the best the CPU and OS support, or what FASTENSORS_ISA forces), so one
// variable and one CPU probe govern every kernel in the library.
#include <string>

#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "quant/quant_isa_internal.h"

namespace fastensors::quant_detail {

const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

bool isa_available(Isa isa) noexcept {
  switch (isa) {
    case Isa::Scalar: return true;
#if defined(FASTENSORS_HAVE_X86_KERNELS)
    case Isa::Avx2: return fastensors::isa_supported(fastensors::Isa::Avx2);
    case Isa::Avx512: return fastensors::isa_supported(fastensors::Isa::Avx512);
#else
    default: return false;
#endif
  }
  return false;
}

Isa active_isa() {
  // Throws UnsupportedIsa for an unknown or unusable FASTENSORS_ISA.
  static const Isa chosen = [] {
    switch (fastensors::active_isa()) {
      case fastensors::Isa::Scalar: return Isa::Scalar;
      case fastensors::Isa::Avx2: return Isa::Avx2;
      default: return Isa::Avx512;  // avx512 and avx512bf16 run the AVX-512 kernels
    }
  }();
  return isa_available(chosen) ? chosen : Isa::Scalar;
}

namespace {

// The table of the requested level when this build has it and the CPU can
// run it, else the scalar reference.
template <class Table>
const Table& by_level(Isa isa, const Table& scalar, const Table* avx2, const Table* avx512) noexcept {
  if (isa == Isa::Avx512 && avx512 != nullptr && isa_available(Isa::Avx512)) return *avx512;
  if (isa == Isa::Avx2 && avx2 != nullptr && isa_available(Isa::Avx2)) return *avx2;
  return scalar;
}

}  // namespace

#if defined(FASTENSORS_HAVE_X86_KERNELS)
#define FASTENSORS_QUANT_LEVELS(kind) kind##_scalar(), &kind##_avx2(), &kind##_avx512()
#else
#define FASTENSORS_QUANT_LEVELS(kind) kind##_scalar(), nullptr, nullptr
#endif

const GgmlKernels& ggml_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(ggml_kernels)); }
const IntKernels& int_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(int_kernels)); }
const Nf4Kernels& nf4_kernels(Isa isa) noexcept { return by_level(isa, FASTENSORS_QUANT_LEVELS(nf4_kernels)); }

#undef FASTENSORS_QUANT_LEVELS

}  // namespace fastensors::quant_detail

namespace fastensors::quant {

const char* kernel_isa() { return quant_detail::isa_name(quant_detail::active_isa()); }

}  // namespace fastensors::quant
