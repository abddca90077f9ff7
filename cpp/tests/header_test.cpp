#include <gtest/gtest.h>

#include <string>

#include "fastensors/error.hpp"
#include "fastensors/header.hpp"
#include "test_util.h"

using namespace fastensors;
using fastensors::test::raw_file;

namespace {

Header parse(const std::string& bytes) {
  return parse_buffer(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "mem");
}

ErrorCode code_of(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "accepted";
  return ErrorCode::Io;
}

const std::string kOne = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";

}  // namespace

TEST(Header, ParsesTensorsAndMetadata) {
  auto h = parse(raw_file(
      R"({"__metadata__":{"format":"pt","k":"é"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[4,16]},)"
      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      std::string(16, '\0')));
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors[0].name, "b");  // offset order
  EXPECT_EQ(h.tensors[1].name, "w");
  EXPECT_EQ(h.tensors[1].dtype, Dtype::BF16);
  EXPECT_EQ(h.tensors[1].shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(h.tensors[1].begin, 4u);
  EXPECT_EQ(h.tensors[1].end, 16u);
  ASSERT_TRUE(h.has_metadata);
  ASSERT_EQ(h.metadata.size(), 2u);
  EXPECT_EQ(h.metadata[0].first, "format");
  EXPECT_EQ(h.metadata[1].second, "é");
  EXPECT_EQ(h.at("w").numel(), 6u);
  EXPECT_EQ(h.sorted_keys(), (std::vector<std::string>{"b", "w"}));
  EXPECT_THROW(h.at("missing"), Error);
}

TEST(Header, AcceptsWhatTheReferenceAccepts) {
  EXPECT_NO_THROW(parse(raw_file("  \n" + kOne + " \t ", std::string(4, '\0'))));
  EXPECT_NO_THROW(parse(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":{"y":[1,{"z":null}]}}})",
                                 std::string(4, '\0'))));
  auto h = parse(raw_file(R"({"__metadata__":null})"));
  EXPECT_FALSE(h.has_metadata);
  EXPECT_NO_THROW(parse(raw_file("{}")));
  EXPECT_NO_THROW(parse(raw_file(R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}})", std::string(8, '\0'))));
  EXPECT_NO_THROW(parse(raw_file(
      R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[3,0],"data_offsets":[0,0]}})")));
  EXPECT_NO_THROW(parse(raw_file(R"({"f":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}})", std::string(3, '\0'))));
  EXPECT_NO_THROW(parse(raw_file(R"({"f":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}})", std::string(3, '\0'))));
}

TEST(Header, RejectsEachRuleWithItsOwnCode) {
  const std::string d4(4, '\0');
  EXPECT_EQ(code_of(""), ErrorCode::HeaderTooSmall);
  EXPECT_EQ(code_of("\x01\x00\x00"), ErrorCode::HeaderTooSmall);
  EXPECT_EQ(code_of(std::string("\x00\xe1\xf5\x05\x01\x00\x00\x00", 8) + "{}"), ErrorCode::HeaderTooLarge);
  EXPECT_EQ(code_of(std::string("\xff\xff\xff\xff\xff\xff\xff\xff", 8)), ErrorCode::HeaderTooLarge);
  EXPECT_EQ(code_of(std::string("\x10\x00\x00\x00\x00\x00\x00\x00", 8) + "{}"), ErrorCode::InvalidHeaderLength);
  EXPECT_EQ(code_of(raw_file("{\"\xff\":1}")), ErrorCode::InvalidUtf8);
  EXPECT_EQ(code_of(raw_file("{\"\xc0\xaf\":1}")), ErrorCode::InvalidUtf8);  // overlong
  EXPECT_EQ(code_of(raw_file("\xef\xbb\xbf{}")), ErrorCode::InvalidJson);
  EXPECT_EQ(code_of(raw_file("{")), ErrorCode::InvalidJson);
  EXPECT_EQ(code_of(raw_file("")), ErrorCode::InvalidJson);
  EXPECT_EQ(code_of(raw_file(kOne + "x", d4)), ErrorCode::InvalidJson);
  EXPECT_EQ(code_of(raw_file(std::string("{}\0\0\0\0\0\0", 8))), ErrorCode::InvalidJson);
  EXPECT_EQ(code_of(raw_file("[]")), ErrorCode::InvalidHeader);
  EXPECT_EQ(code_of(raw_file(R"({"a":"x"})")), ErrorCode::InvalidHeader);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", d4)), ErrorCode::InvalidHeader);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", d4)), ErrorCode::UnknownDtype);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":null,"shape":[1],"data_offsets":[0,4]}})", d4)), ErrorCode::UnknownDtype);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", d4)), ErrorCode::InvalidShape);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", d4)), ErrorCode::InvalidShape);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}})", d4)),
            ErrorCode::InvalidShape);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", d4)), ErrorCode::InvalidShape);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}})", d4)), ErrorCode::InvalidOffsets);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", d4)), ErrorCode::InvalidOffsets);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", d4)), ErrorCode::InvalidOffsets);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", d4)), ErrorCode::OffsetsBackwards);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'))),
            ErrorCode::OffsetsGap);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                             std::string(12, '\0'))),
            ErrorCode::OffsetsGap);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                             std::string(8, '\0'))),
            ErrorCode::OffsetsOverlap);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", d4)), ErrorCode::SizeMismatch);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", d4)),
            ErrorCode::Overflow);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"U64","shape":[2305843009213693952,8],"data_offsets":[0,4]}})", d4)),
            ErrorCode::Overflow);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", std::string(2, '\0'))),
            ErrorCode::MisalignedSubByte);
  EXPECT_EQ(code_of(raw_file(kOne, std::string(5, '\0'))), ErrorCode::TrailingBytes);
  EXPECT_EQ(code_of(raw_file(kOne, std::string(3, '\0'))), ErrorCode::TruncatedData);
  EXPECT_EQ(code_of(raw_file(R"({"__metadata__":{"k":1}})")), ErrorCode::InvalidMetadata);
  EXPECT_EQ(code_of(raw_file(R"({"__metadata__":{"k":{"a":"b"}}})")), ErrorCode::InvalidMetadata);
  EXPECT_EQ(code_of(raw_file(R"({"__metadata__":[]})")), ErrorCode::InvalidMetadata);
  EXPECT_EQ(code_of(raw_file(R"({"__metadata__":{"a":"b","a":"c"}})")), ErrorCode::DuplicateKey);
  EXPECT_EQ(code_of(raw_file(R"({"__metadata__":{},"__metadata__":{}})")), ErrorCode::DuplicateKey);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}})", d4)),
            ErrorCode::DuplicateKey);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                             d4)),
            ErrorCode::DuplicateKey);
}

TEST(Header, DeepNestingIsBoundedNotACrash) {
  std::string deep = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":)" + std::string(100000, '[') +
                     std::string(100000, ']') + "}}";
  EXPECT_EQ(code_of(raw_file(deep, std::string(4, '\0'))), ErrorCode::NestingTooDeep);
  std::string ok = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":)" + std::string(100, '[') +
                   std::string(100, ']') + "}}";
  EXPECT_NO_THROW(parse(raw_file(ok, std::string(4, '\0'))));
}

TEST(Header, ErrorsNameTheTensorAndTheRule) {
  try {
    parse(raw_file(R"({"weight":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')));
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.tensor(), "weight");
    EXPECT_EQ(e.path(), "mem");
    std::string what = e.what();
    EXPECT_NE(what.find("SizeMismatch"), std::string::npos) << what;
    EXPECT_NE(what.find("weight"), std::string::npos) << what;
  }
}

TEST(Header, ManyTensorsParse) {
  std::string header = "{";
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    if (i) header += ',';
    header += "\"t" + std::to_string(i) + "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[" + std::to_string(i) +
              "," + std::to_string(i + 1) + "]}";
  }
  header += "}";
  auto h = parse(raw_file(header, std::string(n, 'x')));
  EXPECT_EQ(h.tensors.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(h.at("t99999").begin, 99999u);
}

TEST(Header, OffsetsPast2To63AreTypedErrors) {
  const std::string d4(4, '\0');
  // A tensor that claims to end past 2^63: its size in bits overflows (the
  // reference agrees), and one just under that is checked against the file.
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"U8","shape":[9223372036854775816],"data_offsets":[0,9223372036854775816]}})", d4)),
            ErrorCode::Overflow);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"U8","shape":[1152921504606846977],"data_offsets":[0,1152921504606846977]}})", d4)),
            ErrorCode::TruncatedData);
  // Starting past 2^63 leaves a hole before it.
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[9223372036854775808,9223372036854775808]}})")),
            ErrorCode::OffsetsGap);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                             R"("b":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}})", d4)),
            ErrorCode::OffsetsBackwards);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})")),
            ErrorCode::OffsetsGap);
  // Element count x element size just over 2^64.
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}})", d4)),
            ErrorCode::Overflow);
}

TEST(Header, ZeroSizedTensorsWithHugeDimensions) {
  // A zero anywhere makes the product 0, as in the reference, as long as no
  // partial product overflows first (the reference multiplies left to right).
  auto h = parse(raw_file(R"({"a":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}})"));
  EXPECT_EQ(h.at("a").numel(), 0u);
  EXPECT_EQ(h.at("a").shape[1], 18446744073709551615ull);
  h = parse(raw_file(R"({"a":{"dtype":"F32","shape":[18446744073709551615,0],"data_offsets":[0,0]}})"));
  EXPECT_EQ(h.at("a").nbytes(), 0u);
  EXPECT_EQ(code_of(raw_file(R"({"a":{"dtype":"F32","shape":[18446744073709551615,2,0],"data_offsets":[0,0]}})")),
            ErrorCode::Overflow);
}

TEST(Header, AHundredThousandZeroSizedTensorsAtOneOffset) {
  std::string header = "{";
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    if (i) header += ',';
    header += "\"z" + std::to_string(i) + "\":{\"dtype\":\"BF16\",\"shape\":[0,7],\"data_offsets\":[0,0]}";
  }
  header += ",\"last\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
  auto h = parse(raw_file(header, "xy"));
  EXPECT_EQ(h.tensors.size(), static_cast<std::size_t>(n + 1));
  EXPECT_EQ(h.at("z77777").nbytes(), 0u);
  EXPECT_EQ(h.at("last").begin, 0u);
  EXPECT_EQ(h.data_size, 2u);
}
