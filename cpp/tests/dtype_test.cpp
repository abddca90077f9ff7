#include <gtest/gtest.h>

#include <set>
#include <string>

#include "fastensors/dtype.hpp"

using namespace fastensors;

TEST(Dtype, NamesRoundTripAndAreUnique) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < kDtypeCount; ++i) {
    Dtype d = all_dtypes()[i];
    std::string name(dtype_name(d));
    ASSERT_TRUE(names.insert(name).second) << name;
    auto parsed = parse_dtype(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(*parsed, d);
  }
  EXPECT_EQ(names.size(), 22u);
}

TEST(Dtype, BitSizes) {
  EXPECT_EQ(dtype_bits(Dtype::BOOL), 8u);
  EXPECT_EQ(dtype_bits(Dtype::F4), 4u);
  EXPECT_EQ(dtype_bits(Dtype::F6_E2M3), 6u);
  EXPECT_EQ(dtype_bits(Dtype::F6_E3M2), 6u);
  EXPECT_EQ(dtype_bits(Dtype::F8_E8M0), 8u);
  EXPECT_EQ(dtype_bits(Dtype::BF16), 16u);
  EXPECT_EQ(dtype_bits(Dtype::C64), 64u);
  EXPECT_EQ(dtype_bits(Dtype::U64), 64u);
}

TEST(Dtype, ParsingIsCaseSensitive) {
  EXPECT_FALSE(parse_dtype("f32").has_value());
  EXPECT_FALSE(parse_dtype("").has_value());
  EXPECT_FALSE(parse_dtype("F32 ").has_value());
  EXPECT_TRUE(parse_dtype("F8_E4M3FNUZ").has_value());
}

TEST(Dtype, WriterOrderIsTheReferenceOrder) {
  // Ascending declaration order; the writer sorts descending.
  const char* expected[] = {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
                            "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16",
                            "I32", "U32", "F32", "C64", "F64", "I64", "U64"};
  for (std::size_t i = 0; i < kDtypeCount; ++i) EXPECT_EQ(dtype_name(all_dtypes()[i]), expected[i]);
}
