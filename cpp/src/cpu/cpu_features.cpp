// The CPU probe behind isa_supported(): cpuid for the instructions, xgetbv for
// the register state the operating system saves.
#include "cpu/cpu_features_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <cstdint>

namespace fastensors::detail {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register state the OS saves on a context switch. A CPU can
// report AVX-512 while the OS does not enable it; using it then faults.
std::uint64_t read_xcr0() noexcept {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

CpuFeatures probe() noexcept {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = (ecx >> 27) & 1;
  const bool avx = (ecx >> 28) & 1;
  const bool fma = (ecx >> 12) & 1;
  const bool f16c = (ecx >> 29) & 1;
  if (!osxsave || !avx) return f;
  const std::uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;     // SSE and AVX state
  const bool os_zmm = (xcr0 & 0xE6) == 0xE6;   // plus opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_ymm) return f;

  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  unsigned b7 = 0, c7 = 0, d7 = 0, a7 = 0;
  __cpuid_count(7, 0, a7, b7, c7, d7);
  const bool avx2 = (b7 >> 5) & 1;
  const bool avx512f = (b7 >> 16) & 1;
  const bool avx512dq = (b7 >> 17) & 1;
  const bool avx512bw = (b7 >> 30) & 1;
  const bool avx512vl = (b7 >> 31) & 1;
  const bool avx512fp16 = (d7 >> 23) & 1;
  bool avx512bf16 = false;
  if (a7 >= 1) {
    unsigned a71 = 0, b71 = 0, c71 = 0, d71 = 0;
    __cpuid_count(7, 1, a71, b71, c71, d71);
    avx512bf16 = (a71 >> 5) & 1;
  }
  (void)c7;

  f.avx2 = avx2;
  f.f16c = f16c;
  f.fma = fma;
  f.avx512 = os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_bf16 = f.avx512 && avx512bf16;
  f.avx512_fp16 = f.avx512 && avx512fp16;
  return f;
}
#else
CpuFeatures probe() noexcept { return {}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = probe();
  return features;
}

}  // namespace fastensors::detail
