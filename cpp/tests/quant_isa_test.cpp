// Differential tests: every kernel level this CPU supports must give exactly
// the bytes (quantize) and float bits (dequantize) of the scalar reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fastensors/isa.hpp"
#include "fastensors/quant.hpp"
#include "quant/quant_isa_internal.h"

namespace fst = fastensors;
namespace qd = fastensors::quant_detail;
using fastensors::Isa;
namespace q = fastensors::quant;

namespace {

const std::size_t kBlockBytes[5] = {34, 18, 20, 22, 24};
const char* kNames[5] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"};

// Every level above Scalar this CPU runs, each through the tables it maps
// to (Avx512Bf16 reruns the Avx512 ones: the mapping is tested too).
std::vector<Isa> simd_levels() {
  std::vector<Isa> out;
  for (Isa isa : fst::supported_isas()) {
    if (isa != Isa::Scalar) out.push_back(isa);
  }
  return out;
}

// Named inputs, each a whole number of 32-value blocks.
std::vector<std::pair<std::string, std::vector<float>>> inputs() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random = [&](std::size_t n, float scale) {
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng) * scale;
    return v;
  };
  std::vector<std::pair<std::string, std::vector<float>>> cases;
  cases.emplace_back("random", random(32 * 257, 1.0f));
  cases.emplace_back("zeros", std::vector<float>(32 * 3, 0.0f));
  cases.emplace_back("negzeros", std::vector<float>(32 * 2, -0.0f));
  cases.emplace_back("constant", std::vector<float>(32 * 3, 0.37f));
  cases.emplace_back("negconstant", std::vector<float>(32 * 2, -5.5f));
  cases.emplace_back("tiny", random(32 * 16, 1e-30f));
  cases.emplace_back("subnormal", random(32 * 16, 1e-39f));
  cases.emplace_back("huge", random(32 * 16, 1e30f));
  cases.emplace_back("max", std::vector<float>(32, 3.4028235e38f));
  // Ties: integers and half-integers land exactly on .5 after scaling.
  std::vector<float> ties(32 * 64);
  for (std::size_t i = 0; i < ties.size(); ++i) {
    ties[i] = static_cast<float>(static_cast<int>(i % 255) - 127) * 0.5f;
    if (i % 32 == 5) ties[i] = 63.5f;  // fixes the block's scale so that codes hit halves
  }
  cases.emplace_back("ties", ties);
  // Signed zeros mixed with positives / negatives: the min/max sign rules.
  std::vector<float> signed_zeros(32 * 64);
  std::uniform_int_distribution<int> pick(0, 3);
  for (auto& x : signed_zeros) {
    int k = pick(rng);
    x = k == 0 ? 0.0f : (k == 1 ? -0.0f : (k == 2 ? 1.5f : -2.25f));
  }
  for (std::size_t b = 0; b < 64; b += 2) {  // every other block: one sign only plus zeros
    for (std::size_t j = 0; j < 32; ++j) {
      float& x = signed_zeros[b * 32 + j];
      x = std::fabs(x) * (b % 4 == 0 ? 1.0f : -1.0f);
    }
  }
  cases.emplace_back("signed_zeros", signed_zeros);
  // Equal magnitudes of both signs: the first one's sign picks Q4_0/Q5_0's scale.
  std::vector<float> pm(32 * 8);
  for (std::size_t i = 0; i < pm.size(); ++i) pm[i] = (i * 7919 % 3 == 0 ? -1.0f : 1.0f) * 2.0f;
  cases.emplace_back("plus_minus", pm);
  // Large values whose scaled codes land beyond 2^23 and 2^31 when the scale
  // underflows (inverse scale infinite or huge).
  std::vector<float> mixed = random(32 * 32, 1.0f);
  for (std::size_t i = 0; i < mixed.size(); i += 3) mixed[i] *= 1e-38f;
  for (std::size_t b = 0; b < 32; b += 4) {
    for (std::size_t j = 0; j < 32; ++j) mixed[b * 32 + j] = 1e-41f * static_cast<float>(j);
  }
  cases.emplace_back("mixed_magnitudes", mixed);
  return cases;
}

TEST(QuantIsa, ActiveLevelIsNamedAndAvailable) {
  std::string name = q::kernel_isa();
  EXPECT_TRUE(name == "scalar" || name == "avx2" || name == "avx512") << name;
  const Isa level = qd::kernel_level(fst::active_isa());
  EXPECT_TRUE(fst::isa_supported(level));
  EXPECT_EQ(name, fst::isa_name(level));
}

TEST(QuantIsa, EveryLevelMapsToTablesItCanRun) {
  for (std::size_t i = 0; i < fst::kIsaCount; ++i) {
    const auto isa = static_cast<Isa>(i);
    const Isa k = qd::kernel_level(isa);
    if (!fst::isa_supported(isa)) {
      EXPECT_EQ(k, Isa::Scalar) << fst::isa_name(isa);
      continue;
    }
    EXPECT_TRUE(k == Isa::Scalar || k == Isa::Avx2 || k == Isa::Avx512) << fst::isa_name(isa);
    EXPECT_TRUE(k <= isa) << fst::isa_name(isa);
    EXPECT_EQ(&qd::ggml_kernels(isa), &qd::ggml_kernels(k)) << fst::isa_name(isa);
  }
  EXPECT_EQ(&qd::ggml_kernels(Isa::Scalar), &qd::ggml_kernels_scalar());
  EXPECT_EQ(&qd::int_kernels(Isa::Scalar), &qd::int_kernels_scalar());
  EXPECT_EQ(&qd::nf4_kernels(Isa::Scalar), &qd::nf4_kernels_scalar());
  if (fst::isa_supported(Isa::Avx512Bf16)) EXPECT_EQ(qd::kernel_level(Isa::Avx512Bf16), Isa::Avx512);
}

TEST(QuantIsa, QuantizeMatchesScalarBitForBit) {
  const auto& ref = qd::ggml_kernels_scalar();
  for (Isa isa : simd_levels()) {
    const auto& k = qd::ggml_kernels(isa);
    for (int t = 0; t < 5; ++t) {
      for (const auto& [name, x] : inputs()) {
        const std::size_t nb = x.size() / 32;
        std::vector<std::uint8_t> want(nb * kBlockBytes[t], 0xAA), got(nb * kBlockBytes[t], 0x55);
        ASSERT_TRUE(ref.quantize[t](x.data(), nb, want.data()));
        ASSERT_TRUE(k.quantize[t](x.data(), nb, got.data()));
        for (std::size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got[i], want[i]) << fst::isa_name(isa) << " " << kNames[t] << " " << name << " byte " << i
                                     << " (block " << i / kBlockBytes[t] << ")";
        }
      }
    }
  }
}

TEST(QuantIsa, EveryLevelRejectsNonFiniteInput) {
  const float bad_values[3] = {__builtin_nanf(""), __builtin_inff(), -__builtin_inff()};
  std::vector<Isa> levels = simd_levels();
  levels.push_back(Isa::Scalar);
  for (Isa isa : levels) {
    const auto& k = qd::ggml_kernels(isa);
    for (int t = 0; t < 5; ++t) {
      for (float v : bad_values) {
        // 6 blocks: the one-block path; 37: groups of 16 blocks and a tail.
        for (std::size_t nb : {6u, 37u}) {
          for (std::size_t pos : {std::size_t{0}, std::size_t{31}, std::size_t{49}, std::size_t{191}, std::size_t{496}, nb * 32 - 1}) {
            if (pos >= nb * 32) continue;
            std::vector<float> x(nb * 32, 0.25f);
            x[pos] = v;
            std::vector<std::uint8_t> out(nb * kBlockBytes[t]);
            EXPECT_FALSE(k.quantize[t](x.data(), nb, out.data()))
                << fst::isa_name(isa) << " " << kNames[t] << " " << pos;
            x[pos] = 1.0f;
            EXPECT_TRUE(k.quantize[t](x.data(), nb, out.data())) << fst::isa_name(isa) << " " << kNames[t];
          }
        }
      }
    }
  }
}

TEST(QuantIsa, DequantizeMatchesScalarBitForBit) {
  const auto& ref = qd::ggml_kernels_scalar();
  std::mt19937 rng(11);
  for (Isa isa : simd_levels()) {
    const auto& k = qd::ggml_kernels(isa);
    for (int t = 0; t < 5; ++t) {
      for (std::size_t nb : {1u, 2u, 7u, 64u, 129u}) {
        std::vector<std::uint8_t> in(nb * kBlockBytes[t]);
        for (auto& b : in) b = static_cast<std::uint8_t>(rng());
        // Finite F16 scales (exponent below all-ones); codes stay random.
        const std::size_t halves = (t == 2 || t == 4) ? 2 : 1;
        for (std::size_t b = 0; b < nb; ++b) {
          for (std::size_t h = 0; h < halves; ++h) in[b * kBlockBytes[t] + 2 * h + 1] &= 0xbb;
        }
        std::vector<float> want(nb * 32), buf(nb * 32 + 32);
        ref.dequantize[t](in.data(), nb, want.data());
        // A 64-byte aligned output takes the streaming-store path, a
        // misaligned one the ordinary stores: both must match.
        float* aligned = buf.data() + (-reinterpret_cast<std::uintptr_t>(buf.data()) % 64) / 4;
        for (float* got : {aligned, aligned + 1}) {
          k.dequantize[t](in.data(), nb, got);
          ASSERT_EQ(std::memcmp(got, want.data(), want.size() * 4), 0)
              << fst::isa_name(isa) << " " << kNames[t] << " blocks " << nb << " misaligned " << (got != aligned);
        }
      }
    }
  }
}

TEST(QuantIsa, WholeMatrixUsesActiveLevelAndMatchesScalar) {
  // The public entry point (chunking, threads) against the scalar table.
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t rows = 97, cols = 32 * 45;  // not a multiple of the chunk size
  std::vector<float> x(rows * cols);
  for (auto& v : x) v = normal(rng);
  for (int t = 0; t < 5; ++t) {
    const auto type = static_cast<q::GgmlType>(t);
    std::vector<std::uint8_t> got(rows * q::ggml_row_bytes(type, cols)), want(got.size());
    q::ggml_quantize(type, {x.data(), fastensors::Dtype::F32, rows, cols}, got.data());
    ASSERT_TRUE(qd::ggml_kernels_scalar().quantize[t](x.data(), rows * cols / 32, want.data()));
    EXPECT_EQ(got, want) << kNames[t];
  }
}

TEST(QuantIsa, KQuantSearchesMatchScalar) {
  // 37 super-blocks: full groups of 8 and 16 lanes and a scalar tail; values
  // that reach the searches' special cases (zero and constant sub-blocks,
  // ties, one sign, tiny, huge).
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t nb = 37;
  std::vector<float> x(nb * 256);
  for (std::size_t b = 0; b < nb; ++b) {
    for (std::size_t i = 0; i < 256; ++i) {
      float v = normal(rng);
      switch (b % 7) {
        case 1: v = std::round(v * 4); break;
        case 2: v = std::fabs(v); break;
        case 3: v = i < 128 ? 0.0f : v; break;
        case 4: v = 1.5f; break;
        case 5: v *= 1e-30f; break;
        case 6: v *= 1e20f; break;
        default: break;
      }
      x[b * 256 + i] = v;
    }
  }
  const std::size_t bytes[5] = {84, 110, 144, 176, 210};
  for (Isa isa : simd_levels()) {
    for (int t = 0; t < 5; ++t) {
      std::vector<std::uint8_t> want(nb * bytes[t]), got(want.size(), 0x5A);
      ASSERT_TRUE(qd::kquant_kernels_scalar().quantize[t](x.data(), nb, want.data()));
      ASSERT_TRUE(qd::kquant_kernels(isa).quantize[t](x.data(), nb, got.data()));
      EXPECT_EQ(got, want) << "K-quant " << t << " at level " << static_cast<int>(isa);
    }
  }
}

TEST(QuantIsa, IntRangeMatchesScalar) {
  const auto& ref = qd::int_kernels_scalar();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (Isa isa : simd_levels()) {
    const auto& k = qd::int_kernels(isa);
    for (std::size_t n : {1u, 2u, 7u, 8u, 15u, 16u, 17u, 31u, 33u, 64u, 100u, 4096u, 4099u}) {
      std::vector<float> x(n);
      for (auto& v : x) v = normal(rng);
      float lo0, hi0, lo1, hi1;
      ASSERT_TRUE(ref.range(x.data(), n, &lo0, &hi0));
      ASSERT_TRUE(k.range(x.data(), n, &lo1, &hi1));
      EXPECT_EQ(lo0, lo1) << fst::isa_name(isa) << " n=" << n;
      EXPECT_EQ(hi0, hi1) << fst::isa_name(isa) << " n=" << n;
      for (float bad : {__builtin_nanf(""), __builtin_inff(), -__builtin_inff()}) {
        for (std::size_t pos : {std::size_t{0}, n / 2, n - 1}) {
          float keep = x[pos];
          x[pos] = bad;
          EXPECT_FALSE(k.range(x.data(), n, &lo1, &hi1)) << fst::isa_name(isa) << " n=" << n << " at " << pos;
          x[pos] = keep;
        }
      }
    }
  }
}

TEST(QuantIsa, IntCodesMatchScalarBitForBit) {
  const auto& ref = qd::int_kernels_scalar();
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    float scale, zp, qmin, qmax;
  };
  const Case cases[] = {
      {1.0f / 127.5f, 0.0f, -128.0f, 127.0f}, {0.37f, 0.0f, -8.0f, 7.0f},  {0.21f, -3.0f, -8.0f, 7.0f},
      {0.5f, 1.0f, -2.0f, 1.0f},              {1.0f, 0.0f, -128.0f, 127.0f},  // x + 0.5 ties below
      {1.1920929e-07f, 0.0f, -128.0f, 127.0f},  // eps scale: quotients overflow the range
      {1e-38f, 5.0f, -128.0f, 127.0f},          // quotients reach infinity before the clamp
  };
  for (Isa isa : simd_levels()) {
    const auto& k = qd::int_kernels(isa);
    for (const Case& c : cases) {
      for (std::size_t n : {1u, 5u, 16u, 31u, 32u, 33u, 47u, 128u, 4096u, 4097u}) {
        std::vector<float> x(n);
        for (std::size_t i = 0; i < n; ++i) {
          // Alternate random values with exact half-integers (ties at .5 after scaling by 1).
          x[i] = i % 3 == 0 ? static_cast<float>(static_cast<int>(i % 301) - 150) + 0.5f : normal(rng) * 40.0f;
        }
        for (fastensors::Dtype round : {fastensors::Dtype::F32, fastensors::Dtype::F16, fastensors::Dtype::BF16}) {
          std::vector<std::int8_t> want(n, 99), got(n, -99);
          ref.codes(x.data(), n, c.scale, c.zp, round, c.qmin, c.qmax, want.data());
          k.codes(x.data(), n, c.scale, c.zp, round, c.qmin, c.qmax, got.data());
          EXPECT_EQ(got, want) << fst::isa_name(isa) << " " << fastensors::dtype_name(round) << " scale " << c.scale
                               << " zp " << c.zp << " n=" << n;
        }
      }
    }
  }
}

TEST(QuantIsa, Fp8CodesMatchScalarBitForBit) {
  const auto& ref = qd::int_kernels_scalar();
  std::mt19937 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float scales[] = {1.0f, 0.0123f, 3.0f / 448.0f, 1e-3f, 1.1920929e-07f, 1e-38f};
  for (Isa isa : simd_levels()) {
    const auto& k = qd::int_kernels(isa);
    for (fastensors::Dtype round : {fastensors::Dtype::F32, fastensors::Dtype::F16, fastensors::Dtype::BF16}) {
      for (float scale : scales) {
        for (std::size_t n : {1u, 7u, 8u, 16u, 33u, 255u, 256u, 257u, 1000u}) {
          std::vector<float> x(n);
          for (std::size_t i = 0; i < n; ++i) x[i] = i % 5 == 0 ? 0.0f : normal(rng) * (i % 2 ? 1.0f : 500.0f);
          std::vector<std::uint8_t> want(n, 1), got(n, 2);
          ref.fp8_codes(x.data(), n, scale, round, want.data());
          k.fp8_codes(x.data(), n, scale, round, got.data());
          EXPECT_EQ(got, want) << fst::isa_name(isa) << " " << fastensors::dtype_name(round) << " scale " << scale
                               << " n=" << n;
        }
      }
    }
  }
}

TEST(QuantIsa, Fp8ValuesMatchScalarBitForBit) {
  const auto& ref = qd::int_kernels_scalar();
  std::vector<std::uint8_t> codes(256 * 3 + 5);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<std::uint8_t>(i * 7);  // every code, NaNs included
  for (Isa isa : simd_levels()) {
    const auto& k = qd::int_kernels(isa);
    for (float scale : {1.0f, 0.37f, 1e-30f}) {
      for (std::size_t n : {std::size_t{1}, std::size_t{9}, std::size_t{16}, std::size_t{256}, codes.size()}) {
        std::vector<float> want(n), got(n);
        ref.fp8_values(codes.data(), n, scale, want.data());
        k.fp8_values(codes.data(), n, scale, got.data());
        EXPECT_EQ(std::memcmp(got.data(), want.data(), n * 4), 0) << fst::isa_name(isa) << " n=" << n;
      }
    }
  }
}

TEST(QuantIsa, Nf4MatchesScalarBitForBit) {
  const auto& ref = qd::nf4_kernels_scalar();
  const float* codes = q::nf4_code_values();
  float thr[15];
  for (int i = 0; i < 15; ++i) {
    thr[i] = static_cast<float>((static_cast<double>(codes[i]) + static_cast<double>(codes[i + 1])) / 2.0);
  }
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> blocks;
  for (int b = 0; b < 50; ++b) {
    std::vector<float> x(64);
    for (auto& v : x) v = normal(rng) * (b % 3 == 0 ? 1e-20f : 2.0f);
    blocks.push_back(x);
  }
  blocks.emplace_back(64, 0.0f);
  blocks.emplace_back(64, -0.0f);
  std::vector<float> ties(64);  // values on the thresholds and the codes themselves (absmax 1)
  for (int i = 0; i < 64; ++i) ties[i] = i < 15 ? thr[i] : (i < 31 ? codes[i - 15] : -thr[i % 15]);
  ties[63] = 1.0f;
  blocks.push_back(ties);
  for (Isa isa : simd_levels()) {
    const auto& k = qd::nf4_kernels(isa);
    for (auto& x : blocks) {
      std::uint8_t want[32], got[32];
      float a0 = -1, a1 = -2;
      ASSERT_TRUE(ref.quantize_block(x.data(), thr, &a0, want));
      ASSERT_TRUE(k.quantize_block(x.data(), thr, &a1, got));
      EXPECT_EQ(std::memcmp(&a0, &a1, 4), 0) << fst::isa_name(isa);
      EXPECT_EQ(std::memcmp(want, got, 32), 0) << fst::isa_name(isa);
    }
    for (std::size_t pos : {0u, 17u, 63u}) {
      for (float bad : {__builtin_nanf(""), __builtin_inff(), -__builtin_inff()}) {
        std::vector<float> x = blocks[0];
        x[pos] = bad;
        float a;
        std::uint8_t out[32];
        EXPECT_FALSE(k.quantize_block(x.data(), thr, &a, out)) << fst::isa_name(isa) << " at " << pos;
      }
    }
    // Dequantization of random bytes, into aligned and misaligned outputs.
    const std::size_t nb = 37;
    std::vector<std::uint8_t> in(nb * 32);
    for (auto& b : in) b = static_cast<std::uint8_t>(rng());
    std::vector<float> absmax(nb), want(nb * 64), buf(nb * 64 + 32);
    for (auto& a : absmax) a = std::fabs(normal(rng));
    ref.dequantize_blocks(in.data(), absmax.data(), nb, codes, want.data());
    float* aligned = buf.data() + (-reinterpret_cast<std::uintptr_t>(buf.data()) % 64) / 4;
    for (float* got : {aligned, aligned + 1}) {
      k.dequantize_blocks(in.data(), absmax.data(), nb, codes, got);
      EXPECT_EQ(std::memcmp(got, want.data(), want.size() * 4), 0) << fst::isa_name(isa);
    }
  }
}

}  // namespace
