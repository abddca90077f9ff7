// Chooses the quantization kernels' instruction set once per process: the
// best level the CPU and OS support, unless FASTENSORS_ISA forces a level.
#include <cstdlib>
#include <cstring>
#include <string>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "quant_isa_internal.h"

#if defined(FASTENSORS_HAVE_X86_KERNELS)
#include <cpuid.h>
#endif

namespace fastensors::quant_detail {

namespace {

#if defined(FASTENSORS_HAVE_X86_KERNELS)
struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
};

// XGETBV with ECX = 0: which register states the OS saves on context switch.
std::uint64_t xcr0() {
  std::uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u, f16c = (c >> 29) & 1u;
  if (!osxsave) return f;
  const std::uint64_t xcr = xcr0();
  const bool ymm_os = (xcr & 0x6u) == 0x6u;     // SSE and AVX state
  const bool zmm_os = (xcr & 0xe6u) == 0xe6u;   // plus opmask and both ZMM halves
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = (b >> 5) & 1u, avx512f = (b >> 16) & 1u, avx512bw = (b >> 30) & 1u;
  f.avx2 = ymm_os && avx2 && f16c;
  f.avx512 = f.avx2 && zmm_os && avx512f && avx512bw;
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}
#endif

Isa choose() {
  Isa cap = Isa::Avx512;
  if (const char* env = std::getenv("FASTENSORS_ISA"); env != nullptr && *env != '\0') {
    if (std::strcmp(env, "scalar") == 0) {
      cap = Isa::Scalar;
    } else if (std::strcmp(env, "avx2") == 0) {
      cap = Isa::Avx2;
    } else if (std::strcmp(env, "avx512") == 0) {
      cap = Isa::Avx512;
    } else {
      throw Error(ErrorCode::InvalidArgument,
                  "FASTENSORS_ISA is '" + std::string(env) + "'; expected scalar, avx2 or avx512");
    }
  }
  for (int level = static_cast<int>(cap); level > 0; --level) {
    if (isa_available(static_cast<Isa>(level))) return static_cast<Isa>(level);
  }
  return Isa::Scalar;
}

}  // namespace

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
    case Isa::Avx2: return features().avx2;
    case Isa::Avx512: return features().avx512;
#else
    default: return false;
#endif
  }
  return false;
}

Isa active_isa() {
  static const Isa chosen = choose();
  return chosen;
}

const GgmlKernels& ggml_kernels(Isa isa) noexcept {
#if defined(FASTENSORS_HAVE_X86_KERNELS)
  if (isa == Isa::Avx512 && isa_available(Isa::Avx512)) return ggml_kernels_avx512();
  if (isa == Isa::Avx2 && isa_available(Isa::Avx2)) return ggml_kernels_avx2();
#else
  (void)isa;
#endif
  return ggml_kernels_scalar();
}

const IntKernels& int_kernels(Isa isa) noexcept {
#if defined(FASTENSORS_HAVE_X86_KERNELS)
  if (isa == Isa::Avx512 && isa_available(Isa::Avx512)) return int_kernels_avx512();
  if (isa == Isa::Avx2 && isa_available(Isa::Avx2)) return int_kernels_avx2();
#else
  (void)isa;
#endif
  return int_kernels_scalar();
}

}  // namespace fastensors::quant_detail

namespace fastensors::quant {

const char* kernel_isa() { return quant_detail::isa_name(quant_detail::active_isa()); }

}  // namespace fastensors::quant
