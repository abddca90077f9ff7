// Quantization kernels against scalar references written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "quant/quant_float_internal.h"

namespace q = fastensors::quant;
namespace d = fastensors::quant_detail;

TEST(QuantFloat, F16Rounding) {
  EXPECT_EQ(d::f32_to_f16_bits(65504.0f), 0x7bff);
  EXPECT_EQ(d::f32_to_f16_bits(65519.0f), 0x7bff);
  EXPECT_EQ(d::f32_to_f16_bits(65520.0f), 0x7c00);  // tie rounds to even: infinity
  EXPECT_EQ(d::f32_to_f16_bits(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(d::f32_to_f16_bits(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(d::f32_to_f16_bits(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 units: tie to even
  EXPECT_EQ(d::f32_to_f16_bits(-1.0f), 0xbc00);
  for (std::uint32_t h = 0; h < 0x7c00; ++h) {  // every finite F16 survives a round trip
    ASSERT_EQ(d::f32_to_f16_bits(d::f16_bits_to_f32(static_cast<std::uint16_t>(h))), h);
  }
}

TEST(QuantFloat, E4m3Rounding) {
  EXPECT_EQ(d::f32_to_e4m3_bits(448.0f), 0x7e);
  EXPECT_EQ(d::f32_to_e4m3_bits(-448.0f), 0xfe);
  EXPECT_EQ(d::f32_to_e4m3_bits(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_EQ(d::f32_to_e4m3_bits(std::ldexp(1.0f, -10)), 0x00);  // tie to even
  EXPECT_EQ(d::f32_to_e4m3_bits(std::ldexp(3.0f, -10)), 0x02);  // 1.5 units: tie to even
  EXPECT_EQ(d::f32_to_e4m3_bits(1.0625f), 0x38);                // tie between 1 and 1.125
  EXPECT_EQ(d::f32_to_e4m3_bits(500.0f), 0x7f);                 // out of range: NaN
  for (std::uint32_t b = 0; b < 0x7f; ++b) {
    ASSERT_EQ(d::f32_to_e4m3_bits(d::e4m3_bits_to_f32(static_cast<std::uint8_t>(b))), b);
  }
}

namespace {
std::vector<float> random_values(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}
}  // namespace

TEST(QuantGgml, Q8_0MatchesScalarReference) {
  auto x = random_values(64 * 32, 1);
  q::Matrix m{x.data(), fastensors::Dtype::F32, 64, 32};
  std::vector<std::uint8_t> out(64 * 34);
  q::ggml_quantize(q::GgmlType::Q8_0, m, out.data());
  for (std::size_t b = 0; b < 64; ++b) {
    const float* xb = x.data() + b * 32;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float dd = amax / 127.0f;
    const float id = dd == 0 ? 0.0f : 1.0f / dd;
    std::uint16_t h;
    std::memcpy(&h, &out[b * 34], 2);
    EXPECT_EQ(h, d::f32_to_f16_bits(dd));
    for (int j = 0; j < 32; ++j) {
      EXPECT_EQ(static_cast<std::int8_t>(out[b * 34 + 2 + j]), static_cast<int>(std::round(xb[j] * id)));
    }
  }
  std::vector<float> back(64 * 32);
  q::ggml_dequantize(q::GgmlType::Q8_0, out.data(), 64, 32, back.data());
  for (std::size_t i = 0; i < back.size(); ++i) EXPECT_NEAR(back[i], x[i], 0.05f);
}

TEST(QuantGgml, RejectsBadRowsAndNonFinite) {
  std::vector<float> x(40, 1.0f);
  q::Matrix m{x.data(), fastensors::Dtype::F32, 1, 40};
  std::vector<std::uint8_t> out(64);
  EXPECT_THROW(q::ggml_quantize(q::GgmlType::Q4_0, m, out.data()), fastensors::Error);
  x[5] = NAN;
  q::Matrix m32{x.data(), fastensors::Dtype::F32, 1, 32};
  try {
    q::ggml_quantize(q::GgmlType::Q4_1, m32, out.data());
    FAIL() << "expected an error";
  } catch (const fastensors::Error& e) {
    EXPECT_EQ(e.code(), fastensors::ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("column 5"), std::string::npos);
  }
}

// The K-quants' bytes are checked against ggml itself in tests/test_kquants.py;
// here: sizes, error bounds, half inputs and rejections from C++.
TEST(QuantGgml, KQuantsRoundTrip) {
  const q::GgmlType types[] = {q::GgmlType::Q2_K, q::GgmlType::Q3_K, q::GgmlType::Q4_K, q::GgmlType::Q5_K,
                               q::GgmlType::Q6_K};
  const std::size_t bytes[] = {84, 110, 144, 176, 210};
  const float max_rmse[] = {0.45f, 0.25f, 0.12f, 0.06f, 0.03f};  // of unit-variance input
  auto x = random_values(16 * 512, 3);
  std::vector<std::uint16_t> half(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) half[i] = d::f32_to_f16_bits(x[i]);
  std::vector<float> widened(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) widened[i] = d::f16_bits_to_f32(half[i]);
  for (int t = 0; t < 5; ++t) {
    EXPECT_EQ(q::ggml_block_size(types[t]), 256u);
    EXPECT_EQ(q::ggml_block_bytes(types[t]), bytes[t]);
    ASSERT_EQ(q::ggml_row_bytes(types[t], 512), 2 * bytes[t]);
    EXPECT_THROW(q::ggml_row_bytes(types[t], 480), fastensors::Error);
    std::vector<std::uint8_t> out(16 * 2 * bytes[t]);
    q::ggml_quantize(types[t], {x.data(), fastensors::Dtype::F32, 16, 512}, out.data());
    std::vector<float> back(x.size());
    q::ggml_dequantize(types[t], out.data(), 16, 512, back.data());
    double se = 0;
    for (std::size_t i = 0; i < x.size(); ++i) se += (back[i] - x[i]) * (back[i] - x[i]);
    EXPECT_LT(std::sqrt(se / static_cast<double>(x.size())), max_rmse[t]) << "type " << t;
    // F16 input quantizes as its exact F32 widening.
    std::vector<std::uint8_t> from_half(out.size()), from_widened(out.size());
    q::ggml_quantize(types[t], {half.data(), fastensors::Dtype::F16, 16, 512}, from_half.data());
    q::ggml_quantize(types[t], {widened.data(), fastensors::Dtype::F32, 16, 512}, from_widened.data());
    EXPECT_EQ(from_half, from_widened);
    std::vector<float> bad(x.begin(), x.begin() + 512);
    bad[300] = INFINITY;
    EXPECT_THROW(q::ggml_quantize(types[t], {bad.data(), fastensors::Dtype::F32, 1, 512}, out.data()),
                 fastensors::Error);
  }
}

// The importance-matrix entry: every type but Q8_0, weights checked, a null
// imatrix the unweighted path, scaling all weights alike changes nothing
// (ggml's searches compare weighted sums only), and zero weights on some
// columns still give a valid block. Byte identity with ggml itself is in
// tests/test_imatrix.py.
TEST(QuantGgml, WeightedEntry) {
  const q::GgmlType types[] = {q::GgmlType::Q4_0, q::GgmlType::Q4_1, q::GgmlType::Q5_0, q::GgmlType::Q5_1,
                               q::GgmlType::Q2_K, q::GgmlType::Q3_K, q::GgmlType::Q4_K, q::GgmlType::Q5_K,
                               q::GgmlType::Q6_K};
  const std::size_t rows = 8, cols = 1024;
  auto x = random_values(rows * cols, 11);
  const q::Matrix m{x.data(), fastensors::Dtype::F32, rows, cols};
  std::vector<float> w(cols), w4(cols);
  for (std::size_t c = 0; c < cols; ++c) {
    w[c] = static_cast<float>((c * 7) % 19) * 0.25f;
    w4[c] = 4.0f * w[c];  // exact: a power of two
  }
  EXPECT_FALSE(q::ggml_has_weighted(q::GgmlType::Q8_0));
  for (q::GgmlType t : types) {
    EXPECT_TRUE(q::ggml_has_weighted(t));
    const std::size_t n = rows * q::ggml_row_bytes(t, cols);
    std::vector<std::uint8_t> plain(n), null_w(n), weighted(n), scaled(n);
    q::ggml_quantize(t, m, plain.data());
    q::ggml_quantize(t, m, null_w.data(), nullptr);
    EXPECT_EQ(plain, null_w);
    q::ggml_quantize(t, m, weighted.data(), w.data());
    EXPECT_NE(plain, weighted);
    std::vector<float> back(rows * cols);
    q::ggml_dequantize(t, weighted.data(), rows, cols, back.data());
    double se = 0;
    for (std::size_t i = 0; i < back.size(); ++i) se += (back[i] - x[i]) * (back[i] - x[i]);
    EXPECT_LT(std::sqrt(se / static_cast<double>(back.size())), 0.6) << static_cast<int>(t);
    std::vector<float> bad = w;
    bad[5] = -0.5f;
    EXPECT_THROW(q::ggml_quantize(t, m, weighted.data(), bad.data()), fastensors::Error);
    bad[5] = NAN;
    EXPECT_THROW(q::ggml_quantize(t, m, weighted.data(), bad.data()), fastensors::Error);
    bad[5] = INFINITY;
    EXPECT_THROW(q::ggml_quantize(t, m, weighted.data(), bad.data()), fastensors::Error);
  }
  // Q6_K uses the weights as they are, so scaling them all keeps its bytes.
  std::vector<std::uint8_t> a(rows * q::ggml_row_bytes(q::GgmlType::Q6_K, cols)), b(a.size());
  q::ggml_quantize(q::GgmlType::Q6_K, m, a.data(), w.data());
  q::ggml_quantize(q::GgmlType::Q6_K, m, b.data(), w4.data());
  EXPECT_EQ(a, b);
  std::vector<std::uint8_t> out(rows * 34 * cols / 32);
  try {
    q::ggml_quantize(q::GgmlType::Q8_0, m, out.data(), w.data());
    ADD_FAILURE() << "Q8_0 took an importance matrix";
  } catch (const fastensors::Error& e) {
    EXPECT_EQ(e.code(), fastensors::ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("no importance-matrix form"), std::string::npos);
  }
  std::vector<float> nan_row(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(cols));
  nan_row[700] = NAN;
  EXPECT_THROW(q::ggml_quantize(q::GgmlType::Q4_K, {nan_row.data(), fastensors::Dtype::F32, 1, cols}, out.data(),
                                w.data()),
               fastensors::Error);
}

TEST(QuantInt, SymmetricInt8AndPacking) {
  auto x = random_values(4 * 64, 2);
  q::Matrix m{x.data(), fastensors::Dtype::F32, 4, 64};
  std::vector<std::int8_t> codes(4 * 64);
  std::vector<float> scales(4 * 2);
  q::int_quantize(m, {4, 32, true}, codes.data(), scales.data(), nullptr);
  for (std::size_t g = 0; g < 8; ++g) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[g * 32 + j]));
    EXPECT_EQ(scales[g], amax / 7.5f);
    for (int j = 0; j < 32; ++j) {
      float v = std::nearbyint(std::min(std::max(x[g * 32 + j] / scales[g], -8.0f), 7.0f));
      EXPECT_EQ(codes[g * 32 + j], static_cast<int>(v));
    }
  }
  std::vector<std::int32_t> packed(4 * q::packed_words(64, 4));
  q::pack_int32(codes.data(), 4, 64, 4, packed.data());
  std::uint32_t w0 = 0;
  for (int i = 0; i < 8; ++i) w0 |= static_cast<std::uint32_t>(codes[i] + 8) << (4 * i);
  EXPECT_EQ(static_cast<std::uint32_t>(packed[0]), w0);
  std::vector<std::int8_t> back(codes.size());
  q::unpack_int32(packed.data(), 4, 64, 4, back.data());
  EXPECT_EQ(back, codes);
}

TEST(QuantInt, PackedDequantizationEqualsUnpackThenDequantize) {
  // Odd row lengths leave partly filled words; asymmetric groups carry zero points.
  for (unsigned bits : {2u, 4u, 8u}) {
    for (bool symmetric : {true, false}) {
      const std::size_t rows = 5, cols = 36, group = 12;
      auto x = random_values(rows * cols, 7 + bits);
      q::Matrix m{x.data(), fastensors::Dtype::F32, rows, cols};
      std::vector<std::int8_t> codes(rows * cols), zp(rows * cols / group);
      std::vector<float> scales(rows * cols / group);
      q::int_quantize(m, {bits, group, symmetric}, codes.data(), scales.data(), symmetric ? nullptr : zp.data());
      const std::int8_t* z = symmetric ? nullptr : zp.data();
      std::vector<std::int32_t> packed(rows * q::packed_words(cols, bits));
      q::pack_int32(codes.data(), rows, cols, bits, packed.data());
      std::vector<float> want(rows * cols), got(rows * cols, -1.0f);
      q::int_dequantize(codes.data(), scales.data(), fastensors::Dtype::F32, z, rows, cols, group, want.data());
      q::int_dequantize_packed(packed.data(), bits, scales.data(), fastensors::Dtype::F32, z, rows, cols, group,
                               got.data());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << bits << " " << symmetric;
    }
  }
  float out[4];
  std::int32_t word = 0;
  float scale = 1.0f;
  EXPECT_THROW(q::int_dequantize_packed(&word, 3, &scale, fastensors::Dtype::F32, nullptr, 1, 4, 4, out),
               fastensors::Error);
}

TEST(QuantQuality, MatchesDoubleLoop) {
  auto a = random_values(100000, 3);
  auto b = random_values(100000, 4);
  double dot = 0, aa = 0, bb = 0, ee = 0, mx = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    double x = a[i], y = b[i];
    dot += x * y;
    aa += x * x;
    bb += y * y;
    ee += (x - y) * (x - y);
    mx = std::max(mx, std::fabs(x - y));
  }
  auto r = q::quality(a.data(), fastensors::Dtype::F32, b.data(), fastensors::Dtype::F32, a.size());
  EXPECT_NEAR(r.cosine, dot / std::sqrt(aa * bb), 1e-12);
  EXPECT_NEAR(r.sqnr_db, 10 * std::log10(aa / ee), 1e-9);
  EXPECT_NEAR(r.rmse, std::sqrt(ee / a.size()), 1e-12);
  EXPECT_EQ(r.max_abs_err, mx);
}
