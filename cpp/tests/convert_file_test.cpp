// convert_file: the output equals a file written directly from converted
// tensors, byte for byte; errors leave the target untouched.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <random>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/convert_file.hpp"
#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/writer.hpp"
#include "test_util.h"

using namespace fastensors;
using namespace fastensors::test;

namespace {

std::vector<std::uint8_t> random_bytes(std::size_t n, std::uint64_t seed) {
  std::vector<std::uint8_t> out(n);
  std::mt19937_64 rng(seed);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng());
  return out;
}

struct Model {
  std::vector<std::uint8_t> bf16 = random_bytes(3000 * 2, 1);    // [30, 100]
  std::vector<std::uint8_t> f32 = random_bytes(777 * 4, 2);       // [777]
  std::vector<std::uint8_t> i64 = random_bytes(5 * 8, 3);         // [5]
  std::vector<std::uint8_t> e4m3 = random_bytes(64, 4);           // [8, 8]

  std::vector<TensorSource> sources() const {
    return {{"layer.bf16", Dtype::BF16, {30, 100}, bf16.data(), bf16.size()},
            {"layer.f32", Dtype::F32, {777}, f32.data(), f32.size()},
            {"ids", Dtype::I64, {5}, i64.data(), i64.size()},
            {"fp8", Dtype::F8_E4M3, {8, 8}, e4m3.data(), e4m3.size()},
            {"empty", Dtype::F16, {0, 3}, nullptr, 0}};
  }
};

std::vector<std::uint8_t> converted(Dtype from, const std::vector<std::uint8_t>& src, Dtype to) {
  std::vector<std::uint8_t> out(src.size() / (dtype_bits(from) / 8) * (dtype_bits(to) / 8));
  convert_bytes(from, src.data(), src.size(), to, out.data(), out.size());
  return out;
}

}  // namespace

TEST(ConvertFile, MatchesWritingTheConvertedTensors) {
  TempDir dir;
  Model m;
  const Metadata meta = {{"format", "pt"}, {"note", "kept"}};
  write_file(dir.file("in.safetensors"), m.sources(), meta, true);

  FileConversionOptions opt;
  opt.chunk_bytes = 1000;  // many chunks per tensor, odd against the sizes
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  opt.progress = [&](std::uint64_t done, std::uint64_t total) { calls.emplace_back(done, total); };
  auto result = convert_file(dir.file("in.safetensors"), dir.file("out.safetensors"),
                             {{"layer.bf16", Dtype::F32}, {"layer.f32", Dtype::BF16}, {"fp8", Dtype::F32},
                              {"empty", Dtype::F32}},
                             opt);

  auto bf16_f32 = converted(Dtype::BF16, m.bf16, Dtype::F32);
  auto f32_bf16 = converted(Dtype::F32, m.f32, Dtype::BF16);
  auto fp8_f32 = converted(Dtype::F8_E4M3, m.e4m3, Dtype::F32);
  std::vector<TensorSource> want = {{"layer.bf16", Dtype::F32, {30, 100}, bf16_f32.data(), bf16_f32.size()},
                                    {"layer.f32", Dtype::BF16, {777}, f32_bf16.data(), f32_bf16.size()},
                                    {"ids", Dtype::I64, {5}, m.i64.data(), m.i64.size()},
                                    {"fp8", Dtype::F32, {8, 8}, fp8_f32.data(), fp8_f32.size()},
                                    {"empty", Dtype::F32, {0, 3}, nullptr, 0}};
  const std::string expect = serialize(want, meta, true);
  EXPECT_EQ(read_bytes(dir.file("out.safetensors")), expect);
  EXPECT_EQ(result.file_size, expect.size());
  EXPECT_EQ(result.converted, 4u);
  EXPECT_EQ(result.copied, 1u);
  ASSERT_GT(calls.size(), 10u);
  EXPECT_EQ(calls.back().first, expect.size());
  for (std::size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);
}

TEST(ConvertFile, NoTargetsIsAByteIdenticalCopy) {
  TempDir dir;
  Model m;
  write_file(dir.file("in.safetensors"), m.sources(), {}, false);
  convert_file(dir.file("in.safetensors"), dir.file("out.safetensors"), {});
  EXPECT_EQ(read_bytes(dir.file("out.safetensors")), read_bytes(dir.file("in.safetensors")));
}

TEST(ConvertFile, ErrorsLeaveTheTargetUntouched) {
  TempDir dir;
  Model m;
  write_file(dir.file("in.safetensors"), m.sources(), {}, false);
  write_bytes(dir.file("out.safetensors"), "previous");
  auto expect_code = [&](ErrorCode code, const std::vector<std::pair<std::string, Dtype>>& targets,
                         const FileConversionOptions& opt = {}) {
    try {
      convert_file(dir.file("in.safetensors"), dir.file("out.safetensors"), targets, opt);
      ADD_FAILURE() << "expected " << error_code_name(code);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
    }
    EXPECT_EQ(read_bytes(dir.file("out.safetensors")), "previous");
  };
  expect_code(ErrorCode::UnsupportedConversion, {{"ids", Dtype::BF16}});
  expect_code(ErrorCode::UnsupportedConversion, {{"fp8", Dtype::BF16}});
  expect_code(ErrorCode::TensorNotFound, {{"nope", Dtype::F32}});
  FileConversionOptions cancel;
  cancel.chunk_bytes = 256;
  cancel.progress = [](std::uint64_t done, std::uint64_t) {
    if (done > 1000) throw Error(ErrorCode::InvalidArgument, "cancelled");
  };
  expect_code(ErrorCode::InvalidArgument, {{"layer.bf16", Dtype::F32}}, cancel);
  EXPECT_THROW(convert_file(dir.file("missing.safetensors"), dir.file("x.safetensors"), {}), Error);
}

TEST(ConvertFile, FifoSourceIsAnErrorAtOnce) {
  TempDir dir;
  const std::string fifo = dir.file("in.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string out = dir.file("out.safetensors");
  ASSERT_TRUE(returns_within([&] { convert_file(fifo, out, {}); })) << "blocked";
  try {
    convert_file(fifo, out, {});
    ADD_FAILURE() << "converted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io) << e.what();
    EXPECT_EQ(e.path(), fifo);
  }
  struct stat st;
  EXPECT_NE(::stat(out.c_str(), &st), 0);
}
