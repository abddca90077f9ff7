// Dtype conversion: the scalar reference against hand-checked values, and
// every ISA level this CPU runs against the scalar reference, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"

namespace fst = fastensors;
using fst::Dtype;

namespace {

std::size_t width(Dtype d) { return fst::dtype_bits(d) / 8; }

std::vector<std::uint8_t> run(Dtype from, const std::vector<std::uint8_t>& src, Dtype to, fst::Isa isa,
                              int threads = 1) {
  const std::size_t n = src.size() / width(from);
  std::vector<std::uint8_t> dst(n * width(to), 0xAB);
  fst::ConvertOptions opt;
  opt.isa = isa;
  opt.threads = threads;
  fst::convert(from, src.data(), to, dst.data(), n, opt);
  return dst;
}

template <class T>
std::vector<std::uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<std::uint8_t> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

template <class T>
std::vector<T> values_of(const std::vector<std::uint8_t>& b) {
  std::vector<T> out(b.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

std::uint32_t f32_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float f32_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One conversion of a single value through the scalar reference.
template <class S, class D>
D one(Dtype from, S x, Dtype to) {
  auto out = run(from, bytes_of(std::vector<S>{x}), to, fst::Isa::Scalar);
  return values_of<D>(out)[0];
}

std::uint32_t f32_from(Dtype from, std::uint32_t code) {
  if (width(from) == 1) return one<std::uint8_t, std::uint32_t>(from, static_cast<std::uint8_t>(code), Dtype::F32);
  return one<std::uint16_t, std::uint32_t>(from, static_cast<std::uint16_t>(code), Dtype::F32);
}

template <class D>
D from_f32(std::uint32_t bits, Dtype to) {
  return one<std::uint32_t, D>(Dtype::F32, bits, to);
}

struct Pair {
  Dtype from, to;
};

const std::vector<Pair>& all_pairs() {
  static const std::vector<Pair> pairs = [] {
    std::vector<Pair> out;
    for (std::size_t i = 0; i < fst::kDtypeCount; ++i) {
      for (std::size_t j = 0; j < fst::kDtypeCount; ++j) {
        Dtype a = fst::all_dtypes()[i], b = fst::all_dtypes()[j];
        if (fst::can_convert(a, b)) out.push_back({a, b});
      }
    }
    return out;
  }();
  return pairs;
}

constexpr Dtype kNarrow[] = {Dtype::BF16,    Dtype::F16,         Dtype::F8_E4M3,    Dtype::F8_E5M2,
                             Dtype::F8_E8M0, Dtype::F8_E4M3FNUZ, Dtype::F8_E5M2FNUZ};

// F32 inputs that probe every rounding decision of `to`: each value the
// format holds, the midpoints between neighbours, one F32 ulp either side,
// and the special values; plus random bit patterns.
std::vector<std::uint32_t> f32_probe(Dtype to, std::size_t random_count, std::uint64_t seed) {
  std::vector<std::uint32_t> v = {0u,          0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u,
                                  0x7F800001u, 0xFF800001u, 0x7FBFFFFFu, 0x7FFFFFFFu, 0x00000001u, 0x80000001u,
                                  0x007FFFFFu, 0x00800000u, 0x00400000u, 0x00400001u, 0x7F7FFFFFu, 0xFF7FFFFFu};
  const std::size_t codes = width(to) == 1 ? 256 : 65536;
  std::vector<float> finite;
  for (std::size_t c = 0; c < codes; ++c) {
    float f = f32_of(f32_from(to, static_cast<std::uint32_t>(c)));
    if (std::isfinite(f) && f >= 0) finite.push_back(f);
  }
  std::sort(finite.begin(), finite.end());
  finite.erase(std::unique(finite.begin(), finite.end()), finite.end());
  for (std::size_t i = 0; i < finite.size(); ++i) {
    const double here = finite[i];
    const double next = i + 1 < finite.size() ? double(finite[i + 1]) : here * 2;  // past the top: overflow
    for (double x : {here, (here + next) / 2}) {
      const std::uint32_t b = f32_bits(static_cast<float>(x));
      for (std::uint32_t c : {b - 1, b, b + 1}) {
        v.push_back(c);
        v.push_back(c | 0x80000000u);
      }
    }
  }
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < random_count; ++i) v.push_back(static_cast<std::uint32_t>(rng()));
  return v;
}

// Every code of a 1- or 2-byte format, then random patterns of any width.
std::vector<std::uint8_t> probe_input(Dtype from, std::size_t random_count, std::uint64_t seed) {
  std::vector<std::uint8_t> out;
  const std::size_t w = width(from);
  if (w <= 2) {
    const std::size_t codes = std::size_t{1} << (8 * w);
    for (std::size_t c = 0; c < codes; ++c) {
      for (std::size_t k = 0; k < w; ++k) out.push_back(static_cast<std::uint8_t>(c >> (8 * k)));
    }
  }
  if (from == Dtype::F32) {
    for (Dtype narrow : kNarrow) {
      auto probe = f32_probe(narrow, 0, 0);
      auto b = bytes_of(probe);
      out.insert(out.end(), b.begin(), b.end());
    }
  }
  if (from == Dtype::F64) {
    const std::vector<std::uint64_t> special = {0, 0x8000000000000000ull, 0x7FF0000000000000ull, 0x7FF0000000000001ull,
                                                0x7FF8000000000000ull, 0xFFF4000000000000ull, 0x7FF0000020000000ull,
                                                0x0000000000000001ull, 0x36A0000000000000ull, 0x36A0000000000001ull,
                                                0x3690000000000000ull, 0x47EFFFFFF0000000ull, 0x47EFFFFFEFFFFFFFull,
                                                0x3810000000000000ull, 0x380FFFFFFFFFFFFFull, 0x3FF0000010000000ull,
                                                0x3FF0000030000000ull, 0x3FF0000010000001ull};
    auto b = bytes_of(special);
    out.insert(out.end(), b.begin(), b.end());
  }
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < random_count * w; ++i) out.push_back(static_cast<std::uint8_t>(rng()));
  return out;
}

std::string pair_name(const Pair& p) {
  return std::string(fst::dtype_name(p.from)) + "->" + std::string(fst::dtype_name(p.to));
}

}  // namespace

// -- the scalar reference, against values checked by hand and against ml_dtypes -----

TEST(ConvertScalar, Bf16AndF16) {
  EXPECT_EQ(f32_from(Dtype::BF16, 0x3F80), 0x3F800000u);
  EXPECT_EQ(f32_from(Dtype::BF16, 0x7F81), 0x7F810000u);  // payload kept, stays signaling
  EXPECT_EQ(f32_from(Dtype::F16, 0x3C00), 0x3F800000u);
  EXPECT_EQ(f32_from(Dtype::F16, 0x0001), 0x33800000u);   // 2^-24
  EXPECT_EQ(f32_from(Dtype::F16, 0x7C01), 0x7F802000u);   // signaling NaN stays signaling (numpy)
  EXPECT_EQ(f32_from(Dtype::F16, 0xFC00), 0xFF800000u);

  EXPECT_EQ(from_f32<std::uint16_t>(0x3F808000u, Dtype::BF16), 0x3F80);  // tie -> even
  EXPECT_EQ(from_f32<std::uint16_t>(0x3F818000u, Dtype::BF16), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(from_f32<std::uint16_t>(0x3F808001u, Dtype::BF16), 0x3F81);
  EXPECT_EQ(from_f32<std::uint16_t>(0x7F7FFFFFu, Dtype::BF16), 0x7F80);  // overflow -> inf
  EXPECT_EQ(from_f32<std::uint16_t>(0xFF800001u, Dtype::BF16), 0xFFC0);  // NaN: canonical, signed
  EXPECT_EQ(from_f32<std::uint16_t>(0x00018000u, Dtype::BF16), 0x0002);  // subnormal tie -> even

  EXPECT_EQ(from_f32<std::uint16_t>(f32_bits(65504.f), Dtype::F16), 0x7BFF);
  EXPECT_EQ(from_f32<std::uint16_t>(f32_bits(65519.f), Dtype::F16), 0x7BFF);
  EXPECT_EQ(from_f32<std::uint16_t>(f32_bits(65520.f), Dtype::F16), 0x7C00);
  EXPECT_EQ(from_f32<std::uint16_t>(0x33000000u, Dtype::F16), 0x0000);  // 2^-25: tie -> 0
  EXPECT_EQ(from_f32<std::uint16_t>(0x33000001u, Dtype::F16), 0x0001);
  EXPECT_EQ(from_f32<std::uint16_t>(0x7F800001u, Dtype::F16), 0x7C01);  // numpy: payload 0 -> 1
  EXPECT_EQ(from_f32<std::uint16_t>(0x7FA00000u, Dtype::F16), 0x7D00);  // numpy: never quieted
  EXPECT_EQ(from_f32<std::uint16_t>(0xFFC00000u, Dtype::F16), 0xFE00);

  EXPECT_EQ((one<std::uint16_t, std::uint16_t>(Dtype::BF16, 0x7F81, Dtype::F16)), 0x7E00);
  EXPECT_EQ((one<std::uint16_t, std::uint16_t>(Dtype::BF16, 0x3F81, Dtype::F16)), 0x3C08);
  EXPECT_EQ((one<std::uint16_t, std::uint16_t>(Dtype::F16, 0x7C01, Dtype::BF16)), 0x7FC0);
  EXPECT_EQ((one<std::uint16_t, std::uint16_t>(Dtype::F16, 0x3C01, Dtype::BF16)), 0x3F80);
}

TEST(ConvertScalar, Fp8) {
  // Values from ml_dtypes 0.6.0.
  EXPECT_EQ(f32_from(Dtype::F8_E4M3, 0x7E), f32_bits(448.f));
  EXPECT_EQ(f32_from(Dtype::F8_E4M3, 0x01), f32_bits(0.001953125f));  // 2^-9
  EXPECT_EQ(f32_from(Dtype::F8_E4M3, 0xFF), 0xFFC00000u);
  EXPECT_EQ(f32_from(Dtype::F8_E5M2, 0x7C), 0x7F800000u);
  EXPECT_EQ(f32_from(Dtype::F8_E5M2, 0x7D), 0x7FC00000u);
  EXPECT_EQ(f32_from(Dtype::F8_E4M3FNUZ, 0x80), 0xFFC00000u);
  EXPECT_EQ(f32_from(Dtype::F8_E4M3FNUZ, 0x7F), f32_bits(240.f));
  EXPECT_EQ(f32_from(Dtype::F8_E5M2FNUZ, 0x7F), f32_bits(57344.f));
  EXPECT_EQ(f32_from(Dtype::F8_E8M0, 0x00), 0x00400000u);
  EXPECT_EQ(f32_from(Dtype::F8_E8M0, 0x7F), f32_bits(1.f));
  EXPECT_EQ(f32_from(Dtype::F8_E8M0, 0xFF), 0x7FC00000u);

  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(464.f), Dtype::F8_E4M3), 0x7E);  // tie -> even (448)
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(465.f), Dtype::F8_E4M3), 0x7F);  // overflow -> NaN
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(-1e30f), Dtype::F8_E4M3), 0xFF);
  EXPECT_EQ(from_f32<std::uint8_t>(0xFF800000u, Dtype::F8_E4M3), 0xFF);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(61439.f), Dtype::F8_E5M2), 0x7B);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(61440.f), Dtype::F8_E5M2), 0x7C);  // -> inf
  EXPECT_EQ(from_f32<std::uint8_t>(0xFFC00000u, Dtype::F8_E5M2), 0xFE);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(-1e-30f), Dtype::F8_E5M2), 0x80);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(-1e-30f), Dtype::F8_E4M3FNUZ), 0x00);  // no -0
  EXPECT_EQ(from_f32<std::uint8_t>(0xFF800000u, Dtype::F8_E4M3FNUZ), 0x80);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(61440.f), Dtype::F8_E5M2FNUZ), 0x80);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(61439.f), Dtype::F8_E5M2FNUZ), 0x7F);

  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(3.f), Dtype::F8_E8M0), 0x81);  // half up, not even
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(1.5f), Dtype::F8_E8M0), 0x80);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(1.4999f), Dtype::F8_E8M0), 0x7F);
  // Subnormal inputs: the nearest of 2^-127 (code 0) and 2^-126 (code 1);
  // the midpoint 1.5 * 2^-127 goes up, as 1.5 * 2^k does for normal inputs.
  EXPECT_EQ(from_f32<std::uint8_t>(0x00000001u, Dtype::F8_E8M0), 0x00);
  EXPECT_EQ(from_f32<std::uint8_t>(0x00400000u, Dtype::F8_E8M0), 0x00);
  EXPECT_EQ(from_f32<std::uint8_t>(0x00400001u, Dtype::F8_E8M0), 0x00);
  EXPECT_EQ(from_f32<std::uint8_t>(0x005FFFFFu, Dtype::F8_E8M0), 0x00);
  EXPECT_EQ(from_f32<std::uint8_t>(0x00600000u, Dtype::F8_E8M0), 0x01);
  EXPECT_EQ(from_f32<std::uint8_t>(0x007FFFFFu, Dtype::F8_E8M0), 0x01);
  EXPECT_EQ(from_f32<std::uint8_t>(0x00800000u, Dtype::F8_E8M0), 0x01);
  EXPECT_EQ(from_f32<std::uint8_t>(0u, Dtype::F8_E8M0), 0xFF);
  EXPECT_EQ(from_f32<std::uint8_t>(f32_bits(-1.f), Dtype::F8_E8M0), 0xFF);
  EXPECT_EQ(from_f32<std::uint8_t>(0x7F400000u, Dtype::F8_E8M0), 0xFF);  // 1.5 * 2^127 -> 2^128
}

TEST(ConvertScalar, F64AndIntegers) {
  auto f64_to = [](std::uint64_t u) { return one<std::uint64_t, std::uint32_t>(Dtype::F64, u, Dtype::F32); };
  EXPECT_EQ(f64_to(0x7FF0000000000001ull), 0x7FC00000u);
  EXPECT_EQ(f64_to(0xFFF4000000000000ull), 0xFFE00000u);
  EXPECT_EQ(f64_to(0x7FF0000020000000ull), 0x7FC00001u);
  EXPECT_EQ(f64_to(0x3FF0000010000000ull), 0x3F800000u);  // tie -> even
  EXPECT_EQ(f64_to(0x3FF0000030000000ull), 0x3F800002u);  // tie -> even (up)
  EXPECT_EQ(f64_to(0x36A0000000000000ull), 0x00000001u);  // 2^-149
  EXPECT_EQ(f64_to(0x3690000000000000ull), 0x00000000u);  // 2^-150: tie -> 0
  EXPECT_EQ(f64_to(0x47EFFFFFF0000000ull), 0x7F800000u);  // rounds past FLT_MAX
  auto f32_to = [](std::uint32_t u) { return one<std::uint32_t, std::uint64_t>(Dtype::F32, u, Dtype::F64); };
  EXPECT_EQ(f32_to(0x7F800001u), 0x7FF8000020000000ull);
  EXPECT_EQ(f32_to(0x00000001u), 0x36A0000000000000ull);
  EXPECT_EQ(f32_to(0xBF800000u), 0xBFF0000000000000ull);

  EXPECT_EQ((one<std::uint8_t, std::uint32_t>(Dtype::BOOL, 2, Dtype::F32)), 0x3F800000u);
  EXPECT_EQ((one<std::int8_t, std::uint32_t>(Dtype::I8, -128, Dtype::F32)), f32_bits(-128.f));
  EXPECT_EQ((one<std::uint32_t, std::uint32_t>(Dtype::U32, 0xFFFFFFFFu, Dtype::F32)), f32_bits(4294967296.f));
  EXPECT_EQ((one<std::int32_t, std::uint32_t>(Dtype::I32, 16777217, Dtype::F32)), f32_bits(16777216.f));
  EXPECT_EQ((one<std::uint64_t, std::uint32_t>(Dtype::U64, (1ull << 63) + (1ull << 39) + 1, Dtype::F32)), 0x5F000001u);
}

// -- every level against the scalar reference ------------------------------------

class ConvertLevel : public ::testing::TestWithParam<fst::Isa> {};

TEST_P(ConvertLevel, MatchesScalarOnEveryPairWithTails) {
  const fst::Isa isa = GetParam();
  for (const Pair& p : all_pairs()) {
    SCOPED_TRACE(pair_name(p));
    const auto input = probe_input(p.from, 4096, 42);
    const std::size_t n = input.size() / width(p.from);
    const auto want = run(p.from, input, p.to, fst::Isa::Scalar);
    ASSERT_EQ(run(p.from, input, p.to, isa), want);
    // Lengths 0..130 at every start offset within a vector, so heads, tails
    // and misaligned pointers all go through the kernel.
    for (std::size_t start : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{7}, std::size_t{13}}) {
      for (std::size_t len = 0; len <= 130 && start + len <= n; ++len) {
        std::vector<std::uint8_t> part(input.begin() + static_cast<std::ptrdiff_t>(start * width(p.from)),
                                       input.begin() + static_cast<std::ptrdiff_t>((start + len) * width(p.from)));
        auto got = run(p.from, part, p.to, isa);
        std::vector<std::uint8_t> expect(want.begin() + static_cast<std::ptrdiff_t>(start * width(p.to)),
                                         want.begin() + static_cast<std::ptrdiff_t>((start + len) * width(p.to)));
        ASSERT_EQ(got, expect) << "start " << start << " length " << len;
      }
    }
  }
}

TEST_P(ConvertLevel, MisalignedOutputAndStreamingStores) {
  // Non-temporal stores forced on; the output starts aligned, at an element
  // boundary (streaming after a scalar head) and one byte past alignment (no
  // streaming possible).
  const fst::Isa isa = GetParam();
  for (const Pair& p : all_pairs()) {
    SCOPED_TRACE(pair_name(p));
    const std::size_t n = (std::size_t{1} << 16) + 77;
    std::vector<std::uint8_t> src(n * width(p.from) + 1);
    std::mt19937_64 rng(7);
    for (auto& b : src) b = static_cast<std::uint8_t>(rng());
    std::vector<std::uint8_t> want(n * width(p.to));
    fst::ConvertOptions scalar;
    scalar.isa = fst::Isa::Scalar;
    scalar.threads = 1;
    fst::convert(p.from, src.data() + 1, p.to, want.data(), n, scalar);
    for (std::size_t shift : {std::size_t{0}, width(p.to), std::size_t{1}}) {
      std::vector<std::uint8_t> out(n * width(p.to) + 64);
      fst::ConvertOptions opt;
      opt.isa = isa;
      opt.stream = true;
      fst::convert(p.from, src.data() + 1, p.to, out.data() + shift, n, opt);
      ASSERT_EQ(0, std::memcmp(out.data() + shift, want.data(), want.size())) << "output shift " << shift;
    }
  }
}

TEST_P(ConvertLevel, ThreadedBlocksMatchScalar) {
  // Past kParallelThresholdBytes, so threads split the buffer into blocks.
  const fst::Isa isa = GetParam();
  const Pair pairs[] = {{Dtype::BF16, Dtype::F32}, {Dtype::F32, Dtype::F8_E4M3}, {Dtype::F32, Dtype::F16},
                        {Dtype::F16, Dtype::BF16}, {Dtype::F32, Dtype::F32}};
  for (const Pair& p : pairs) {
    SCOPED_TRACE(pair_name(p));
    const std::size_t n = fst::kParallelThresholdBytes / (width(p.from) + width(p.to)) + 12345;
    std::vector<std::uint8_t> src(n * width(p.from));
    std::mt19937_64 rng(11);
    for (auto& b : src) b = static_cast<std::uint8_t>(rng());
    const auto want = run(p.from, src, p.to, fst::Isa::Scalar, 1);
    ASSERT_EQ(run(p.from, src, p.to, isa, 2), want);
  }
}

INSTANTIATE_TEST_SUITE_P(Supported, ConvertLevel, ::testing::ValuesIn(fst::supported_isas()),
                         [](const ::testing::TestParamInfo<fst::Isa>& info) {
                           return std::string(fst::isa_name(info.param));
                         });

// -- dispatch, errors, environment ---------------------------------------------------

TEST(ConvertDispatch, LevelNamesAndOrder) {
  EXPECT_EQ(fst::parse_isa("AVX512"), fst::Isa::Avx512);
  EXPECT_EQ(fst::parse_isa("scalar"), fst::Isa::Scalar);
  EXPECT_EQ(fst::parse_isa("avx512bf16"), fst::Isa::Avx512Bf16);
  EXPECT_FALSE(fst::parse_isa("sse9").has_value());
  auto levels = fst::supported_isas();
  ASSERT_FALSE(levels.empty());
  EXPECT_EQ(levels.back(), fst::Isa::Scalar);
  for (std::size_t i = 1; i < levels.size(); ++i) EXPECT_GT(levels[i - 1], levels[i]);
  EXPECT_TRUE(fst::isa_supported(fst::active_isa()));
}

TEST(ConvertDispatch, UnsupportedPairsThrow) {
  float x = 1;
  std::uint8_t y[8];
  try {
    fst::convert(Dtype::BF16, &x, Dtype::F8_E4M3, y, 1);
    FAIL() << "expected UnsupportedConversion";
  } catch (const fst::Error& e) {
    EXPECT_EQ(e.code(), fst::ErrorCode::UnsupportedConversion);
    EXPECT_NE(std::string(e.what()).find("BF16 to F8_E4M3"), std::string::npos);
  }
  EXPECT_FALSE(fst::can_convert(Dtype::F32, Dtype::I32));
  EXPECT_FALSE(fst::can_convert(Dtype::F64, Dtype::BF16));  // would round twice
  EXPECT_FALSE(fst::can_convert(Dtype::F4, Dtype::F4));
  EXPECT_FALSE(fst::can_convert(Dtype::C64, Dtype::F32));
  EXPECT_TRUE(fst::can_convert(Dtype::C64, Dtype::C64));
  EXPECT_THROW(fst::convert_bytes(Dtype::F32, &x, 4, Dtype::BF16, y, 4), fst::Error);
  EXPECT_NO_THROW(fst::convert_bytes(Dtype::F32, &x, 4, Dtype::BF16, y, 2));
}

TEST(ConvertDispatch, IgnoresCallerFloatingPointEnvironment) {
#if defined(__x86_64__) || defined(__i386__)
  // FTZ + DAZ + round toward zero would change subnormal and integer results.
  const unsigned saved = _mm_getcsr();
  const unsigned odd = (saved & ~0x6000u) | 0x8040u | 0x6000u;
  std::vector<std::uint32_t> in = {0x00000001u, 0x00018000u, 0x3F808001u, 0x007FFFFFu};
  std::vector<std::int32_t> ints = {16777217, 16777219, -16777217};
  for (fst::Isa isa : fst::supported_isas()) {
    fst::ConvertOptions opt;
    opt.isa = isa;
    std::vector<std::uint16_t> bf(in.size()), want(in.size());
    fst::ConvertOptions ref;
    ref.isa = fst::Isa::Scalar;
    fst::convert(Dtype::F32, in.data(), Dtype::BF16, want.data(), in.size(), ref);
    std::vector<float> fi(ints.size()), fi_want(ints.size());
    fst::convert(Dtype::I32, ints.data(), Dtype::F32, fi_want.data(), ints.size(), ref);
    _mm_setcsr(odd);
    fst::convert(Dtype::F32, in.data(), Dtype::BF16, bf.data(), in.size(), opt);
    fst::convert(Dtype::I32, ints.data(), Dtype::F32, fi.data(), ints.size(), opt);
    const unsigned after = _mm_getcsr();
    _mm_setcsr(saved);
    EXPECT_EQ(after, odd) << "the caller's MXCSR is restored";
    EXPECT_EQ(bf, want) << fst::isa_name(isa);
    EXPECT_EQ(fi, fi_want) << fst::isa_name(isa);
  }
#else
  GTEST_SKIP() << "x86 only";
#endif
}

TEST(ConvertStrided, MatchesContiguous) {
  // A 3-d F32 array viewed with a step on every axis, one axis reversed.
  const std::int64_t A = 5, B = 7, C = 300;
  std::vector<std::uint32_t> base(static_cast<std::size_t>(A * B * C));
  std::mt19937_64 rng(3);
  for (auto& x : base) x = static_cast<std::uint32_t>(rng());
  auto at = [&](std::int64_t i, std::int64_t j, std::int64_t k) { return base[static_cast<std::size_t>((i * B + j) * C + k)]; };
  // view = base[::2, ::-3, 1::2]
  std::vector<std::int64_t> shape = {3, 3, 150};
  std::vector<std::int64_t> strides = {2 * B * C * 4, -3 * C * 4, 2 * 4};
  const std::uint32_t* origin = &base[static_cast<std::size_t>((0 * B + 6) * C + 1)];
  std::vector<std::uint32_t> gathered;
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 3; ++j)
      for (std::int64_t k = 0; k < 150; ++k) gathered.push_back(at(2 * i, 6 - 3 * j, 1 + 2 * k));
  for (fst::Isa isa : fst::supported_isas()) {
    fst::ConvertOptions opt;
    opt.isa = isa;
    std::vector<std::uint16_t> got(gathered.size()), want(gathered.size());
    fst::convert(Dtype::F32, gathered.data(), Dtype::BF16, want.data(), gathered.size(), opt);
    fst::convert_strided(Dtype::F32, origin, shape, strides, Dtype::BF16, got.data(), got.size() * 2, opt);
    EXPECT_EQ(got, want) << fst::isa_name(isa);
    // Contiguous rows (last stride == element size) take the direct path.
    std::vector<std::int64_t> row_strides = {B * C * 4, C * 4, 4};
    std::vector<std::uint16_t> rows(static_cast<std::size_t>(A * B * C)), rows_want(rows.size());
    fst::convert(Dtype::F32, base.data(), Dtype::BF16, rows_want.data(), base.size(), opt);
    fst::convert_strided(Dtype::F32, base.data(), {A, B, C}, row_strides, Dtype::BF16, rows.data(), rows.size() * 2,
                          opt);
    EXPECT_EQ(rows, rows_want);
  }
  // Large and strided: the threaded path splits rows between threads.
  std::vector<std::uint16_t> big(1 << 22);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint16_t>(i * 2654435761u >> 7);
  std::vector<std::uint32_t> got(big.size() / 2), want(big.size() / 2);
  fst::ConvertOptions two;
  two.threads = 2;
  fst::convert_strided(Dtype::BF16, big.data(), {1024, 2048}, {2 * 4096, 4}, Dtype::F32, got.data(), got.size() * 4,
                       two);
  for (std::size_t i = 0; i < want.size(); ++i) want[i] = std::uint32_t{big[(i / 2048) * 4096 + (i % 2048) * 2]} << 16;
  EXPECT_EQ(got, want);
  EXPECT_THROW(fst::convert_strided(Dtype::F32, base.data(), {2, 2}, {8}, Dtype::BF16, got.data(), 8), fst::Error);
  EXPECT_THROW(fst::convert_strided(Dtype::F32, base.data(), {2, 2}, {8, 4}, Dtype::BF16, got.data(), 6), fst::Error);
}

// Every F32 input (2^32 of them) through every level, against the scalar
// reference, for each F32 -> narrow pair and F32 -> F64. Minutes of CPU:
// runs only with FASTENSORS_EXHAUSTIVE=1.
TEST(ConvertExhaustive, EveryF32InputAtEveryLevel) {
  const char* flag = std::getenv("FASTENSORS_EXHAUSTIVE");
  if (flag == nullptr || std::string(flag) != "1") GTEST_SKIP() << "set FASTENSORS_EXHAUSTIVE=1 to run";
  constexpr std::size_t kChunk = std::size_t{1} << 24;
  std::vector<std::uint32_t> in(kChunk);
  std::vector<std::uint8_t> want(kChunk * 8), got(kChunk * 8);
  std::vector<Dtype> targets(std::begin(kNarrow), std::end(kNarrow));
  targets.push_back(Dtype::F64);
  for (Dtype to : targets) {
    for (std::uint64_t base = 0; base < (std::uint64_t{1} << 32); base += kChunk) {
      for (std::size_t i = 0; i < kChunk; ++i) in[i] = static_cast<std::uint32_t>(base + i);
      fst::ConvertOptions ref;
      ref.isa = fst::Isa::Scalar;
      fst::convert(Dtype::F32, in.data(), to, want.data(), kChunk, ref);
      for (fst::Isa isa : fst::supported_isas()) {
        if (isa == fst::Isa::Scalar) continue;
        fst::ConvertOptions opt;
        opt.isa = isa;
        fst::convert(Dtype::F32, in.data(), to, got.data(), kChunk, opt);
        ASSERT_EQ(0, std::memcmp(got.data(), want.data(), kChunk * width(to)))
            << fst::dtype_name(to) << " at " << fst::isa_name(isa) << ", inputs from " << base;
      }
    }
  }
}
