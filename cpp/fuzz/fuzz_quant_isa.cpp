// Differential target: the same bytes through every quantization kernel at
// every level this CPU runs (the GGML block quantizers and dequantizers, the
// K-quant quantizers (super-blocks of 256, 8 or 16 at once in SIMD), the
// integer schemes' range and code kernels, FP8 codes and values, NF4 blocks);
// any difference from the scalar table aborts. Quantizers reject NaN/Inf input: every level must agree on
// that too. Dequantized floats are compared bit for bit, except that when
// the scalar result is a NaN any NaN matches: a block whose F16 scale and min
// are both NaN gives one of their payloads, and which one is up to the
// compiler (it may commute the addition; docs/quantization.md).
//
// Input: byte 0 picks the kernel, bytes 1-12 parameters where needed, the
// rest is the kernel's input.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fastensors/isa.hpp"
#include "fastensors/quant.hpp"
#include "quant/quant_isa_internal.h"

namespace fst = fastensors;
namespace qd = fastensors::quant_detail;
using fastensors::Isa;

namespace {

const std::size_t kBlockBytes[5] = {34, 18, 20, 22, 24};

// Each distinct table above Scalar once (Avx512Bf16 runs the Avx512 ones).
std::vector<Isa> simd_levels() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
    if (fst::isa_supported(isa) && qd::kernel_level(isa) == isa) out.push_back(isa);
  }
  return out;
}

const std::vector<Isa>& levels() {
  static const std::vector<Isa> all = simd_levels();
  return all;
}

std::vector<float> floats(const std::uint8_t* data, std::size_t size) {
  std::vector<float> x(size / 4);
  if (!x.empty()) std::memcpy(x.data(), data, x.size() * 4);
  return x;
}

void ggml_quantize(int t, const std::uint8_t* data, std::size_t size) {
  std::vector<float> x = floats(data, size);
  const std::size_t nb = x.size() / 32;
  if (nb == 0) return;
  std::vector<std::uint8_t> want(nb * kBlockBytes[t]), got(want.size());
  const bool ok = qd::ggml_kernels_scalar().quantize[t](x.data(), nb, want.data());
  for (Isa isa : levels()) {
    std::fill(got.begin(), got.end(), 0x5A);
    const bool ok_isa = qd::ggml_kernels(isa).quantize[t](x.data(), nb, got.data());
    if (ok_isa != ok) __builtin_trap();        // disagree on finiteness
    if (ok && got != want) __builtin_trap();   // different bytes
  }
}

const std::size_t kKBlockBytes[5] = {84, 110, 144, 176, 210};

// K-quants: several super-blocks, so the SIMD levels fill lanes and leave a
// scalar tail.
void kquant_quantize(int t, const std::uint8_t* data, std::size_t size) {
  std::vector<float> x = floats(data, size);
  const std::size_t nb = x.size() / 256;
  if (nb == 0) return;
  std::vector<std::uint8_t> want(nb * kKBlockBytes[t]), got(want.size());
  const bool ok = qd::kquant_kernels_scalar().quantize[t](x.data(), nb, want.data());
  for (Isa isa : levels()) {
    std::fill(got.begin(), got.end(), 0x5A);
    const bool ok_isa = qd::kquant_kernels(isa).quantize[t](x.data(), nb, got.data());
    if (ok_isa != ok) __builtin_trap();
    if (ok && got != want) __builtin_trap();
  }
}

// Bits equal, or both NaN.
void same_floats(const std::vector<float>& want, const std::vector<float>& got) {
  for (std::size_t i = 0; i < want.size(); ++i) {
    std::uint32_t a, b;
    std::memcpy(&a, &want[i], 4);
    std::memcpy(&b, &got[i], 4);
    if (a != b && !(std::isnan(want[i]) && std::isnan(got[i]))) __builtin_trap();
  }
}

void ggml_dequantize(int t, const std::uint8_t* data, std::size_t size) {
  const std::size_t nb = size / kBlockBytes[t];
  if (nb == 0) return;
  std::vector<float> want(nb * 32), got(nb * 32);
  qd::ggml_kernels_scalar().dequantize[t](data, nb, want.data());
  for (Isa isa : levels()) {
    std::fill(got.begin(), got.end(), 0.0f);
    qd::ggml_kernels(isa).dequantize[t](data, nb, got.data());
    same_floats(want, got);
  }
}

fastensors::Dtype rounding(std::uint8_t b) {
  static const fastensors::Dtype kRound[3] = {fastensors::Dtype::F32, fastensors::Dtype::F16,
                                              fastensors::Dtype::BF16};
  return kRound[b % 3];
}

// A positive finite scale from 4 bytes, or 0 when they are not one.
float positive_scale(const std::uint8_t* p) {
  float scale;
  std::memcpy(&scale, p, 4);
  scale = std::fabs(scale);
  return std::isfinite(scale) ? scale : 0.0f;
}

// FP8 codes: finite input, positive finite scale, any rounding dtype.
void fp8_codes(const std::uint8_t* data, std::size_t size) {
  if (size < 6) return;
  const fastensors::Dtype round = rounding(data[0]);
  const float scale = positive_scale(data + 1);
  if (scale == 0.0f) return;
  std::vector<float> x = floats(data + 5, size - 5);
  float lo, hi;
  if (x.empty() || !qd::int_kernels_scalar().range(x.data(), x.size(), &lo, &hi)) return;
  std::vector<std::uint8_t> want(x.size()), got(x.size());
  qd::int_kernels_scalar().fp8_codes(x.data(), x.size(), scale, round, want.data());
  for (Isa isa : levels()) {
    std::fill(got.begin(), got.end(), std::uint8_t{0x5A});
    qd::int_kernels(isa).fp8_codes(x.data(), x.size(), scale, round, got.data());
    if (got != want) __builtin_trap();
  }
}

// FP8 values: any codes (NaN codes included), any scale.
void fp8_values(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return;
  float scale;
  std::memcpy(&scale, data, 4);
  const std::size_t n = size - 4;
  std::vector<float> want(n), got(n);
  qd::int_kernels_scalar().fp8_values(data + 4, n, scale, want.data());
  for (Isa isa : levels()) {
    qd::int_kernels(isa).fp8_values(data + 4, n, scale, got.data());
    same_floats(want, got);
  }
}

const float* nf4_thresholds() {
  static float t[15];
  static const bool ready = [] {
    const float* c = fastensors::quant::nf4_code_values();
    for (int i = 0; i < 15; ++i) {
      t[i] = static_cast<float>((static_cast<double>(c[i]) + static_cast<double>(c[i + 1])) / 2.0);
    }
    return true;
  }();
  (void)ready;
  return t;
}

// NF4: each whole block of 64 floats quantized, and the bytes dequantized
// as blocks with absmax values taken from the input.
void nf4(const std::uint8_t* data, std::size_t size) {
  std::vector<float> x = floats(data, size);
  const std::size_t nb = x.size() / 64;
  for (std::size_t b = 0; b < nb; ++b) {
    float a0 = 0, a1 = 0;
    std::uint8_t want[32], got[32];
    const bool ok = qd::nf4_kernels_scalar().quantize_block(x.data() + 64 * b, nf4_thresholds(), &a0, want);
    for (Isa isa : levels()) {
      const bool ok_isa = qd::nf4_kernels(isa).quantize_block(x.data() + 64 * b, nf4_thresholds(), &a1, got);
      if (ok_isa != ok) __builtin_trap();
      if (ok && (std::memcmp(want, got, 32) != 0 || std::memcmp(&a0, &a1, 4) != 0)) __builtin_trap();
    }
  }
  const std::size_t dnb = size / 36;  // 32 code bytes + a 4-byte absmax per block
  if (dnb == 0) return;
  std::vector<float> absmax(dnb);
  std::memcpy(absmax.data(), data + dnb * 32, dnb * 4);
  std::vector<float> want(dnb * 64), got(dnb * 64);
  qd::nf4_kernels_scalar().dequantize_blocks(data, absmax.data(), dnb, fastensors::quant::nf4_code_values(),
                                             want.data());
  for (Isa isa : levels()) {
    qd::nf4_kernels(isa).dequantize_blocks(data, absmax.data(), dnb, fastensors::quant::nf4_code_values(),
                                           got.data());
    same_floats(want, got);
  }
}

void int_range(const std::uint8_t* data, std::size_t size) {
  std::vector<float> x = floats(data, size);
  if (x.empty()) return;
  float lo0 = 0, hi0 = 0;
  const bool ok = qd::int_kernels_scalar().range(x.data(), x.size(), &lo0, &hi0);
  for (Isa isa : levels()) {
    float lo = 0, hi = 0;
    const bool ok_isa = qd::int_kernels(isa).range(x.data(), x.size(), &lo, &hi);
    if (ok_isa != ok) __builtin_trap();
    // Values, not bits: the sign of a zero bound is unspecified (quant_isa_internal.h).
    if (ok && (lo != lo0 || hi != hi0)) __builtin_trap();
  }
}

// The codes kernel's contract: finite input (the caller checked the range), a
// positive finite scale, an integral zero point inside [qmin, qmax], and the
// range of 8, 4 or 2 bits.
void int_codes(const std::uint8_t* data, std::size_t size) {
  if (size < 9) return;
  static const float kRanges[3][2] = {{-128.0f, 127.0f}, {-8.0f, 7.0f}, {-2.0f, 1.0f}};
  const float* r = kRanges[data[0] % 3];
  float scale;
  std::memcpy(&scale, data + 1, 4);
  scale = std::fabs(scale);
  if (!std::isfinite(scale) || scale == 0.0f) return;
  const float span = r[1] - r[0] + 1.0f;
  const float zp = (data[0] & 0x80) ? r[0] + static_cast<float>(data[5] % static_cast<unsigned>(span)) : 0.0f;
  std::vector<float> x = floats(data + 9, size - 9);
  if (x.empty()) return;
  float lo, hi;
  if (!qd::int_kernels_scalar().range(x.data(), x.size(), &lo, &hi)) return;
  std::vector<std::int8_t> want(x.size()), got(x.size());
  const fastensors::Dtype round = rounding(data[6]);
  qd::int_kernels_scalar().codes(x.data(), x.size(), scale, zp, round, r[0], r[1], want.data());
  for (Isa isa : levels()) {
    std::fill(got.begin(), got.end(), std::int8_t{99});
    qd::int_kernels(isa).codes(x.data(), x.size(), scale, zp, round, r[0], r[1], got.data());
    if (got != want) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned pick = data[0] % 20u;
  const std::uint8_t* rest = data + 1;
  const std::size_t n = size - 1;
  if (pick < 5) {
    ggml_quantize(static_cast<int>(pick), rest, n);
  } else if (pick < 10) {
    ggml_dequantize(static_cast<int>(pick - 5), rest, n);
  } else if (pick == 10) {
    int_range(rest, n);
  } else if (pick == 11) {
    int_codes(rest, n);
  } else if (pick == 12) {
    fp8_codes(rest, n);
  } else if (pick == 13) {
    fp8_values(rest, n);
  } else if (pick == 14) {
    nf4(rest, n);
  } else {
    kquant_quantize(static_cast<int>(pick - 15), rest, n);
  }
  return 0;
}
