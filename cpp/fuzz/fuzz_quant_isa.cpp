// Differential target: the same bytes through every quantization kernel at
// every level this CPU runs (the GGML block quantizers and dequantizers, the
// integer schemes' range and code kernels); any difference from the scalar
// table aborts. Quantizers reject NaN/Inf input: every level must agree on
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

#include "quant_isa_internal.h"

namespace qd = fastensors::quant_detail;

namespace {

const std::size_t kBlockBytes[5] = {34, 18, 20, 22, 24};

std::vector<qd::Isa> simd_levels() {
  std::vector<qd::Isa> out;
  for (qd::Isa isa : {qd::Isa::Avx2, qd::Isa::Avx512}) {
    if (qd::isa_available(isa)) out.push_back(isa);
  }
  return out;
}

const std::vector<qd::Isa>& levels() {
  static const std::vector<qd::Isa> all = simd_levels();
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
  for (qd::Isa isa : levels()) {
    std::fill(got.begin(), got.end(), 0x5A);
    const bool ok_isa = qd::ggml_kernels(isa).quantize[t](x.data(), nb, got.data());
    if (ok_isa != ok) __builtin_trap();        // disagree on finiteness
    if (ok && got != want) __builtin_trap();   // different bytes
  }
}

void ggml_dequantize(int t, const std::uint8_t* data, std::size_t size) {
  const std::size_t nb = size / kBlockBytes[t];
  if (nb == 0) return;
  std::vector<float> want(nb * 32), got(nb * 32);
  qd::ggml_kernels_scalar().dequantize[t](data, nb, want.data());
  for (qd::Isa isa : levels()) {
    std::fill(got.begin(), got.end(), 0.0f);
    qd::ggml_kernels(isa).dequantize[t](data, nb, got.data());
    for (std::size_t i = 0; i < want.size(); ++i) {
      std::uint32_t a, b;
      std::memcpy(&a, &want[i], 4);
      std::memcpy(&b, &got[i], 4);
      if (a != b && !(std::isnan(want[i]) && std::isnan(got[i]))) __builtin_trap();
    }
  }
}

void int_range(const std::uint8_t* data, std::size_t size) {
  std::vector<float> x = floats(data, size);
  if (x.empty()) return;
  float lo0 = 0, hi0 = 0;
  const bool ok = qd::int_kernels_scalar().range(x.data(), x.size(), &lo0, &hi0);
  for (qd::Isa isa : levels()) {
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
  qd::int_kernels_scalar().codes(x.data(), x.size(), scale, zp, r[0], r[1], want.data());
  for (qd::Isa isa : levels()) {
    std::fill(got.begin(), got.end(), std::int8_t{99});
    qd::int_kernels(isa).codes(x.data(), x.size(), scale, zp, r[0], r[1], got.data());
    if (got != want) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned pick = data[0] % 12u;
  const std::uint8_t* rest = data + 1;
  const std::size_t n = size - 1;
  if (pick < 5) {
    ggml_quantize(static_cast<int>(pick), rest, n);
  } else if (pick < 10) {
    ggml_dequantize(static_cast<int>(pick - 5), rest, n);
  } else if (pick == 10) {
    int_range(rest, n);
  } else {
    int_codes(rest, n);
  }
  return 0;
}
