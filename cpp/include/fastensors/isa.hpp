// Instruction-set levels: the one choice of SIMD level every kernel of the
// library runs at (dtype conversion, convert.hpp; quantization, quant.hpp).
//
// The build compiles for the baseline; only the per-ISA source files
// (cpp/src/convert/x86/, cpp/src/quant/x86/) get the matching compiler
// flags, and the level is chosen at run time from what the CPU and the
// operating system support, or forced with the FASTENSORS_ISA environment
// variable. Every level gives results bit-identical to Scalar.
#pragma once

#include "fastensors/export.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// Instruction-set levels, worst to best. A level is usable when the CPU has
// its instructions and the operating system saves their register state.
enum class Isa : std::uint8_t {
  Scalar,      // portable C++; the reference every other level must match
  Avx2,        // AVX2 + F16C + FMA
  Avx512,      // AVX-512 F, BW, DQ, VL
  Avx512Bf16,  // Avx512 plus AVX512-BF16 (VCVTNE2PS2BF16); quantization runs its Avx512 kernels
};

inline constexpr std::size_t kIsaCount = 4;

// "scalar", "avx2", "avx512", "avx512bf16" (null-terminated).
std::string_view isa_name(Isa isa) noexcept;

// Parses a name as isa_name writes it (ASCII case-insensitive).
std::optional<Isa> parse_isa(std::string_view name) noexcept;

// Whether this CPU and OS can run the level (Scalar always can, and levels
// this build has no kernels for never can).
bool isa_supported(Isa isa) noexcept;

// Every usable level, best first; the last is always Scalar.
std::vector<Isa> supported_isas();

// The level the kernels use: the environment's FASTENSORS_ISA when set, else
// the best supported level. Decided once per process. Throws UnsupportedIsa
// (on every call) when FASTENSORS_ISA names an unknown level or one this CPU
// cannot run: a forced level is never silently replaced by another.
Isa active_isa();

}  // namespace fastensors
FASTENSORS_EXPORT_END
