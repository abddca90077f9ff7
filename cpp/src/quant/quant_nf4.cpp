// NF4 (4-bit NormalFloat) as bitsandbytes stores it: blocks of 64 over the
// flattened tensor, one F32 absmax per block, values multiplied by 1/absmax
// and mapped to the nearest of 16 code values (a value exactly between two
// codes takes the lower one, as bitsandbytes' comparison tree does), two
// codes per byte with the first in the high nibble.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "io/mapping_guard_internal.h"
#include "quant/quant_internal.h"
#include "quant/quant_isa_internal.h"

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

bool quantize_block_scalar(const float* x, const float* t, float* absmax, std::uint8_t* out) {
  if (first_nonfinite(x, kNf4Block) != kNf4Block) return false;
  float amax = 0.0f;
  for (std::size_t j = 0; j < kNf4Block; ++j) amax = std::max(amax, std::fabs(x[j]));
  *absmax = amax;
  // An all-zero block keeps absmax 0 and maps every value to the 0.0 code.
  const float inv = amax == 0.0f ? 0.0f : 1.0f / amax;
  for (std::size_t j = 0; j < kNf4Block / 2; ++j) {
    out[j] = static_cast<std::uint8_t>((nf4_index(x[2 * j] * inv, t) << 4) | nf4_index(x[2 * j + 1] * inv, t));
  }
  return true;
}

void dequantize_blocks_scalar(const std::uint8_t* in, const float* absmax, std::size_t nblocks, const float* codes,
                              float* out) {
  for (std::size_t b = 0; b < nblocks; ++b, in += kNf4Block / 2, out += kNf4Block) {
    for (std::size_t j = 0; j < kNf4Block / 2; ++j) {
      out[2 * j] = codes[in[j] >> 4] * absmax[b];
      out[2 * j + 1] = codes[in[j] & 0x0f] * absmax[b];
    }
  }
}

const Nf4Kernels kNf4Scalar = {quantize_block_scalar, dequantize_blocks_scalar};

// Blocks per scheduling grab: 64 KiB of F32.
constexpr std::size_t kGrabBlocks = 256;

}  // namespace

const float* nf4_code_values() noexcept { return kNf4; }

void nf4_quantize(const Matrix& in, std::uint8_t* out, float* absmax) {
  const detail::GuardedInputs guard{in.data};
  check_float_input(in, "nf4");
  const std::size_t n = in.rows * in.cols;
  const std::size_t nblocks = (n + kNf4Block - 1) / kNf4Block;
  const float* t = thresholds().t;
  const Nf4Kernels& k = nf4_kernels(fastensors::active_isa());
  NonFinite bad;
#pragma omp parallel for schedule(dynamic, kGrabBlocks) if (nblocks > 4 * kGrabBlocks)
  for (std::int64_t b = 0; b < to_i64(nblocks); ++b) {
    const std::size_t off = static_cast<std::size_t>(b) * kNf4Block;
    const std::size_t len = std::min(kNf4Block, n - off);
    // A short last block is padded with zeros (they map to the 0.0 code and
    // leave absmax alone); an odd tail's last low nibble stays 0.
    float x[kNf4Block] = {};
    const float* src = x;
    if (in.dtype == Dtype::F32 && len == kNf4Block) {
      src = static_cast<const float*>(in.data) + off;
    } else {
      load_f32(in, off, len, x);
    }
    std::uint8_t packed[kNf4Block / 2];
    const bool full = len == kNf4Block;
    if (!k.quantize_block(src, t, &absmax[b], full ? out + off / 2 : packed)) {
      bad.report(off + first_nonfinite(src, len));
      continue;
    }
    if (!full) {
      const std::size_t nbytes = (len + 1) / 2;
      std::memcpy(out + off / 2, packed, nbytes);
      if (len % 2) out[off / 2 + nbytes - 1] &= 0xf0;
    }
  }
  bad.throw_if_any(in, "nf4");
}

void nf4_dequantize(const std::uint8_t* in, const float* absmax, std::size_t n, float* out) {
  const detail::GuardedInputs guard{in, absmax};
  const std::size_t whole = n / kNf4Block;
  const Nf4Kernels& k = nf4_kernels(fastensors::active_isa());
  const std::size_t grabs = (whole + kGrabBlocks - 1) / kGrabBlocks;
#pragma omp parallel for schedule(dynamic, 1) if (grabs > 4)
  for (std::int64_t g = 0; g < to_i64(grabs); ++g) {
    const std::size_t b0 = static_cast<std::size_t>(g) * kGrabBlocks;
    k.dequantize_blocks(in + b0 * kNf4Block / 2, absmax + b0, std::min(kGrabBlocks, whole - b0), kNf4,
                        out + b0 * kNf4Block);
  }
  for (std::size_t i = whole * kNf4Block; i < n; ++i) {
    const std::uint8_t byte = in[i / 2];
    out[i] = kNf4[(i % 2 == 0) ? (byte >> 4) : (byte & 0x0f)] * absmax[whole];
  }
}

}  // namespace fastensors::quant

namespace fastensors::quant_detail {

const Nf4Kernels& nf4_kernels_scalar() noexcept { return quant::kNf4Scalar; }

}  // namespace fastensors::quant_detail
