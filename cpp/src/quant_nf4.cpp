// NF4 (4-bit NormalFloat) as bitsandbytes stores it: blocks of 64 over the
// flattened tensor, one F32 absmax per block, values multiplied by 1/absmax
// and mapped to the nearest of 16 code values (a value exactly between two
// codes takes the lower one, as bitsandbytes' comparison tree does), two
// codes per byte with the first in the high nibble.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "mapping_guard_internal.h"
#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "quant_internal.h"

namespace fastensors::quant {

using namespace quant_detail;

namespace {

// The NF4 data type of the QLoRA paper (Dettmers et al., 2023, appendix E),
// as listed in bitsandbytes' functional.get_4bit_type("nf4").
constexpr float kNf4[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// Decision thresholds: midpoints of neighbouring codes (in double, then F32).
struct Thresholds {
  float t[15];
  Thresholds() {
    for (int i = 0; i < 15; ++i) {
      t[i] = static_cast<float>((static_cast<double>(kNf4[i]) + static_cast<double>(kNf4[i + 1])) / 2.0);
    }
  }
};

const Thresholds& thresholds() {
  static const Thresholds th;
  return th;
}

inline std::uint8_t nf4_index(float v, const float* t) {
  unsigned idx = 0;
  for (int i = 0; i < 15; ++i) idx += static_cast<unsigned>(v > t[i]);
  return static_cast<std::uint8_t>(idx);
}

}  // namespace

const float* nf4_code_values() noexcept { return kNf4; }

void nf4_quantize(const Matrix& in, std::uint8_t* out, float* absmax) {
  const detail::GuardedInputs guard{in.data};
  check_float_input(in, "nf4");
  const std::size_t n = in.rows * in.cols;
  const std::size_t nblocks = (n + kNf4Block - 1) / kNf4Block;
  const float* t = thresholds().t;
  NonFinite bad;
#pragma omp parallel for schedule(static) if (nblocks > 256)
  for (std::int64_t b = 0; b < to_i64(nblocks); ++b) {
    const std::size_t off = static_cast<std::size_t>(b) * kNf4Block;
    const std::size_t len = std::min(kNf4Block, n - off);
    float x[kNf4Block] = {};
    load_f32(in, off, len, x);
    std::size_t nf = first_nonfinite(x, len);
    if (nf != len) {
      bad.report(off + nf);
      continue;
    }
    float amax = 0.0f;
    for (std::size_t j = 0; j < len; ++j) amax = std::max(amax, std::fabs(x[j]));
    absmax[b] = amax;
    // An all-zero block keeps absmax 0 and maps every value to the 0.0 code.
    const float inv = amax == 0.0f ? 0.0f : 1.0f / amax;
    std::uint8_t q[kNf4Block];
    for (std::size_t j = 0; j < kNf4Block; ++j) q[j] = nf4_index(x[j] * inv, t);
    std::uint8_t* o = out + off / 2;
    const std::size_t nbytes = (len + 1) / 2;
    for (std::size_t j = 0; j < nbytes; ++j) {
      std::uint8_t lo = (2 * j + 1 < len) ? q[2 * j + 1] : 0;  // an odd tail's last low nibble is 0
      o[j] = static_cast<std::uint8_t>((q[2 * j] << 4) | lo);
    }
  }
  bad.throw_if_any(in, "nf4");
}

void nf4_dequantize(const std::uint8_t* in, const float* absmax, std::size_t n, float* out) {
  const detail::GuardedInputs guard{in, absmax};
#pragma omp parallel for schedule(static) if (n > (1u << 16))
  for (std::int64_t i = 0; i < to_i64(n); ++i) {
    const std::size_t k = static_cast<std::size_t>(i);
    std::uint8_t byte = in[k / 2];
    std::uint8_t code = (k % 2 == 0) ? (byte >> 4) : (byte & 0x0f);
    out[k] = kNf4[code] * absmax[k / kNf4Block];
  }
}

}  // namespace fastensors::quant
