// Private to the library: what the CPU and the operating system support.
#pragma once

namespace fastensors::detail {

struct CpuFeatures {
  bool avx2 = false;        // AVX2 + AVX, with OS support for YMM state
  bool f16c = false;
  bool fma = false;
  bool avx512 = false;      // AVX-512 F, BW, DQ, VL, with OS support for ZMM and mask state
  bool avx512_bf16 = false;
  bool avx512_fp16 = false;
};

// Probed once (cpuid, and xgetbv for the register state the OS saves).
const CpuFeatures& cpu_features() noexcept;

}  // namespace fastensors::detail
