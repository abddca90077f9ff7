// The one instruction-set dispatcher: which levels this build has kernels
// for, which of them the CPU and OS can run, and the level chosen once per
// process (FASTENSORS_ISA or the best). Conversion (convert/) and
// quantization (quant/) both index their kernel tables with its answer, so
// one variable and one CPU probe govern every kernel in the library.
#include "fastensors/isa.hpp"

#include <array>
#include <cctype>
#include <cstdlib>
#include <string>

#include "cpu/cpu_features_internal.h"
#include "cpu/isa_internal.h"
#include "fastensors/error.hpp"

namespace fastensors {
namespace {

constexpr std::array<std::string_view, kIsaCount> kIsaNames{"scalar", "avx2", "avx512", "avx512bf16"};

// A level is compiled in when the build has all its kernels, conversion and
// quantization alike (IsaKernels.cmake builds or drops a level whole).
bool compiled_in(Isa isa) noexcept {
  switch (isa) {
    case Isa::Scalar: return true;
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
    case Isa::Avx2: return true;
#endif
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
    case Isa::Avx512: return true;
#endif
#if defined(FASTENSORS_HAVE_AVX512BF16_KERNELS)
    case Isa::Avx512Bf16: return true;
#endif
    default: return false;
  }
}

std::string supported_list() {
  std::string out;
  for (Isa isa : supported_isas()) {
    if (!out.empty()) out += ", ";
    out += isa_name(isa);
  }
  return out;
}

struct Choice {
  Isa isa = Isa::Scalar;
  std::string error;  // non-empty: FASTENSORS_ISA was unusable
};

Choice choose_isa() {
  Choice c;
  const char* forced = std::getenv("FASTENSORS_ISA");
  if (forced == nullptr || *forced == '\0') {
    c.isa = supported_isas().front();
    return c;
  }
  std::string all;
  for (auto n : kIsaNames) {
    if (!all.empty()) all += ", ";
    all += n;
  }
  auto parsed = parse_isa(forced);
  if (!parsed) {
    c.error = "FASTENSORS_ISA='" + std::string(forced) + "' is not an instruction-set level (one of: " + all + ")";
  } else if (!isa_supported(*parsed)) {
    c.error = "FASTENSORS_ISA='" + std::string(forced) + "' cannot run here: this " +
              (compiled_in(*parsed) ? "CPU or operating system does not support it"
                                    : "build has no kernels for it") +
              " (usable levels: " + supported_list() + ")";
  } else {
    c.isa = *parsed;
  }
  return c;
}

}  // namespace

std::string_view isa_name(Isa isa) noexcept {
  const auto i = static_cast<std::size_t>(isa);
  return i < kIsaCount ? kIsaNames[i] : std::string_view("?");
}

std::optional<Isa> parse_isa(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kIsaCount; ++i) {
    const auto want = kIsaNames[i];
    if (want.size() != name.size()) continue;
    bool same = true;
    for (std::size_t j = 0; j < want.size() && same; ++j) {
      same = std::tolower(static_cast<unsigned char>(name[j])) == want[j];
    }
    if (same) return static_cast<Isa>(i);
  }
  return std::nullopt;
}

bool isa_supported(Isa isa) noexcept {
  if (!compiled_in(isa)) return false;
  const auto& f = detail::cpu_features();
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return f.avx2 && f.f16c && f.fma;
    case Isa::Avx512: return f.avx512 && f.f16c && f.fma;
    case Isa::Avx512Bf16: return f.avx512 && f.avx512_bf16 && f.f16c && f.fma;
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (std::size_t i = kIsaCount; i-- > 0;) {
    if (isa_supported(static_cast<Isa>(i))) out.push_back(static_cast<Isa>(i));
  }
  return out;
}

Isa active_isa() {
  static const Choice choice = choose_isa();
  if (!choice.error.empty()) throw Error(ErrorCode::UnsupportedIsa, choice.error);
  return choice.isa;
}

namespace detail {

void require_isa(Isa isa) {
  if (isa_supported(isa)) return;
  throw Error(ErrorCode::UnsupportedIsa,
              "the " + std::string(isa_name(isa)) + " kernels cannot run here (usable levels: " + supported_list() + ")");
}

}  // namespace detail
}  // namespace fastensors
