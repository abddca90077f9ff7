// Checkpoint: locating, the index rules and their error codes, shards checked
// against the index, and reads (whole, rows, boxes, converted) compared with
// the values computed from the tensor's own index arithmetic; the C API's
// output compared with the C++ writer's bytes.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "fastensors/checkpoint.hpp"
#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"
#include "fastensors/fastensors.h"
#include "fastensors/version.hpp"
#include "fastensors/writer.hpp"
#include "test_util.h"

namespace fst = fastensors;
using fastensors::test::read_bytes;
using fastensors::test::TempDir;
using fastensors::test::write_bytes;

namespace {

// t3: F32 [3, 4, 5] with value = 100 * i + 10 * j + k.
std::vector<float> t3_values() {
  std::vector<float> v(60);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 5; ++k) v[static_cast<std::size_t>(i * 20 + j * 5 + k)] = static_cast<float>(100 * i + 10 * j + k);
  return v;
}

void write_shards(const TempDir& dir) {
  static const std::vector<float> t3 = t3_values();
  static const std::vector<std::uint8_t> nib = {0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC};  // F4 [3, 4]
  fst::write_file(dir.file("a.safetensors"), {{"t3", fst::Dtype::F32, {3, 4, 5}, t3.data(), 240}},
                  {{"format", "pt"}}, true);
  fst::write_file(dir.file("b.safetensors"), {{"nib", fst::Dtype::F4, {3, 4}, nib.data(), 6}}, {}, false);
  write_bytes(dir.file("model.safetensors.index.json"),
              R"({"metadata": {"total_size": 246, "extra": [1, 2]},
                  "weight_map": {"t3": "a.safetensors", "nib": "b.safetensors"}})");
}

template <class F>
fst::ErrorCode code_of(F&& f) {
  try {
    f();
  } catch (const fst::Error& e) {
    return e.code();
  }
  ADD_FAILURE() << "no error";
  return fst::ErrorCode::Io;
}

}  // namespace

TEST(Checkpoint, OpensADirectoryOfShards) {
  TempDir dir;
  write_shards(dir);
  for (auto backend : {fst::Backend::Mmap, fst::Backend::Pread}) {
    auto c = fst::Checkpoint::open(dir.path(), backend);
    EXPECT_TRUE(c->sharded());
    EXPECT_EQ(c->files(), (std::vector<std::string>{"a.safetensors", "b.safetensors"}));
    EXPECT_EQ(c->keys(), (std::vector<std::string>{"nib", "t3"}));
    EXPECT_EQ(c->file_of("nib"), "b.safetensors");
    EXPECT_EQ(c->info("t3").shape, (std::vector<std::uint64_t>{3, 4, 5}));
    const fst::Metadata want = {{"format", "pt"}, {"extra", "[1,2]"}};
    EXPECT_EQ(c->metadata(), want);
    EXPECT_EQ(c->data("t3") != nullptr, backend == fst::Backend::Mmap);
  }
}

TEST(Checkpoint, TheRestOfItsInterface) {
  TempDir dir;
  write_shards(dir);
  auto c = fst::Checkpoint::open(dir.path(), fst::Backend::Pread);
  EXPECT_EQ(c->directory(), dir.path());
  EXPECT_EQ(c->backend(), fst::Backend::Pread);
  EXPECT_EQ(c->size(), 2u);
  EXPECT_TRUE(c->contains("nib"));
  EXPECT_FALSE(c->contains("nope"));
  const fst::Metadata index_meta = {{"total_size", "246"}, {"extra", "[1,2]"}};
  EXPECT_EQ(c->index_metadata(), index_meta);
  EXPECT_EQ(c->shard_of("nib").path(), dir.file("b.safetensors"));
  EXPECT_EQ(c->data("t3"), nullptr);  // pread: nothing mapped
  c->prefetch({"t3", "nib"});
  EXPECT_EQ(code_of([&] { c->prefetch({"t3", "nope"}); }), fst::ErrorCode::TensorNotFound);
  c->close();
  c->close();  // twice is harmless; a later read opens the shard again
  std::vector<float> all(60);
  c->read("t3", all.data(), 240);
  EXPECT_EQ(all, t3_values());
  EXPECT_EQ(code_of([&] { fst::row_box(fst::TensorInfo{}, 0, 0); }), fst::ErrorCode::InvalidArgument);
}

TEST(Checkpoint, ReadsWholeRowsAndBoxes) {
  TempDir dir;
  write_shards(dir);
  const std::vector<float> t3 = t3_values();
  auto c = fst::Checkpoint::open(dir.file("model.safetensors.index.json"), fst::Backend::Pread);
  std::vector<float> all(60);
  c->read("t3", all.data(), 240);
  EXPECT_EQ(all, t3);
  std::vector<float> rows(20);
  c->read_rows("t3", 1, 2, rows.data(), 80);
  EXPECT_EQ(rows, std::vector<float>(t3.begin() + 20, t3.begin() + 40));
  // Every box of a sweep, against the index arithmetic.
  for (std::uint64_t i0 = 0; i0 < 3; ++i0)
    for (std::uint64_t i1 = i0; i1 <= 3; ++i1)
      for (std::uint64_t j0 = 0; j0 < 4; j0 += 3)
        for (std::uint64_t j1 = j0; j1 <= 4; j1 += 2)
          for (std::uint64_t k0 = 0; k0 < 5; k0 += 2)
            for (std::uint64_t k1 : {k0, k0 + 1, std::uint64_t{5}}) {
              fst::Box box{{i0, j0, k0}, {i1, j1, k1}};
              std::vector<float> want;
              for (auto i = i0; i < i1; ++i)
                for (auto j = j0; j < j1; ++j)
                  for (auto k = k0; k < k1; ++k) want.push_back(static_cast<float>(100 * i + 10 * j + k));
              ASSERT_EQ(fst::box_bytes(c->info("t3"), box), want.size() * 4);
              std::vector<float> got(want.size() + 1, -1.0f);
              c->read_box("t3", box, got.data(), got.size() * 4);
              got.pop_back();
              EXPECT_EQ(got, want) << i0 << i1 << j0 << j1 << k0 << k1;
              // Converted to F64 through the same plan.
              std::vector<double> wide(want.size());
              c->read_box("t3", box, wide.data(), wide.size() * 8, fst::Dtype::F64);
              for (std::size_t n = 0; n < want.size(); ++n) EXPECT_EQ(wide[n], static_cast<double>(want[n]));
            }
}

TEST(Checkpoint, ConvertsOnTheWayLikeConvert) {
  TempDir dir;
  write_shards(dir);
  auto c = fst::Checkpoint::open(dir.path());
  const std::vector<float> t3 = t3_values();
  std::vector<std::uint16_t> want(60), got(60);
  fst::convert(fst::Dtype::F32, t3.data(), fst::Dtype::BF16, want.data(), 60);
  c->read("t3", got.data(), 120, fst::Dtype::BF16);
  EXPECT_EQ(got, want);
  // F4 rows are whole bytes; a box of a single F4 value is not.
  std::vector<std::uint8_t> nib(2);
  c->read_rows("nib", 1, 2, nib.data(), 2);
  EXPECT_EQ(nib, (std::vector<std::uint8_t>{0x56, 0x78}));
  EXPECT_EQ(code_of([&] { c->read_box("nib", fst::Box{{0, 1}, {1, 2}}, nib.data(), 2); }), fst::ErrorCode::InvalidArgument);
  std::vector<float> f(4);
  EXPECT_FALSE(fst::can_convert(fst::Dtype::F4, fst::Dtype::F32));
  EXPECT_EQ(code_of([&] { c->read_rows("nib", 0, 1, f.data(), 16, fst::Dtype::F32); }),
            fst::ErrorCode::UnsupportedConversion);
}

TEST(Checkpoint, RefusesBadBoxesAndBuffers) {
  TempDir dir;
  write_shards(dir);
  auto c = fst::Checkpoint::open(dir.path());
  std::vector<float> buf(60);
  EXPECT_EQ(code_of([&] { c->read("t3", buf.data(), 239); }), fst::ErrorCode::SizeMismatch);
  EXPECT_EQ(code_of([&] { c->read_box("t3", fst::Box{{0, 0}, {1, 1}}, buf.data(), 240); }), fst::ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of([&] { c->read_box("t3", fst::Box{{0, 0, 3}, {1, 1, 2}}, buf.data(), 240); }), fst::ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of([&] { c->read_rows("t3", 0, 4, buf.data(), 240); }), fst::ErrorCode::InvalidArgument);
  EXPECT_EQ(code_of([&] { c->read("t3", buf.data(), 240, fst::Dtype::I32); }), fst::ErrorCode::UnsupportedConversion);
  EXPECT_EQ(code_of([&] { c->read("nope", buf.data(), 240); }), fst::ErrorCode::TensorNotFound);
}

TEST(Checkpoint, IndexRules) {
  TempDir dir;
  write_shards(dir);
  const std::string index = dir.file("model.safetensors.index.json");
  auto with_index = [&](const std::string& json) {
    write_bytes(index, json);
    return code_of([&] { fst::Checkpoint::open(index)->verify(); });
  };
  EXPECT_EQ(with_index("not json"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index("\xEF\xBB\xBF{\"weight_map\": {}}"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(std::string("{\"weight_map\": {}}\0", 19)), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": []})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {}, "metadata": 3})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "a.safetensors", "t3": "a.safetensors"}})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": null}})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "/etc/a.safetensors"}})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "x\\..\\a.safetensors"}})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "C:a.safetensors"}})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "a.bin"}})"), fst::ErrorCode::InvalidIndex);
  EXPECT_EQ(with_index(std::string(200, '[') + std::string(200, ']')), fst::ErrorCode::InvalidIndex);
  // Against the shards.
  write_bytes(index, R"({"weight_map": {"t3": "a.safetensors"}})");  // b is simply not part of it
  EXPECT_NO_THROW(fst::Checkpoint::open(index)->verify());
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "a.safetensors", "nib": "c.safetensors"}})"), fst::ErrorCode::ShardNotFound);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "a.safetensors", "nib": "b.safetensors", "x": "b.safetensors"}})"),
            fst::ErrorCode::TensorMissingFromShard);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "b.safetensors", "nib": "b.safetensors"}})"),
            fst::ErrorCode::TensorMissingFromShard);
  fst::write_file(dir.file("c.safetensors"),
                  {{"nib", fst::Dtype::U8, {1}, "x", 1}, {"z", fst::Dtype::U8, {1}, "y", 1}}, {}, false);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "a.safetensors", "nib": "b.safetensors", "z": "c.safetensors"}})"),
            fst::ErrorCode::TensorInMultipleShards);
  EXPECT_EQ(with_index(R"({"weight_map": {"t3": "a.safetensors", "z": "c.safetensors"}})"),
            fst::ErrorCode::UnlistedTensor);
}

TEST(Checkpoint, Locating) {
  TempDir dir;
  EXPECT_EQ(code_of([&] { fst::Checkpoint::open(dir.path()); }), fst::ErrorCode::CheckpointNotFound);
  EXPECT_EQ(code_of([&] { fst::Checkpoint::open(dir.file("none")); }), fst::ErrorCode::CheckpointNotFound);
  std::vector<float> v(2, 1.0f);
  fst::write_file(dir.file("x.safetensors"), {{"v", fst::Dtype::F32, {2}, v.data(), 8}}, {}, false);
  EXPECT_FALSE(fst::locate_checkpoint(dir.path()).is_index);
  fst::write_file(dir.file("y.safetensors"), {{"v", fst::Dtype::F32, {2}, v.data(), 8}}, {}, false);
  EXPECT_EQ(code_of([&] { fst::Checkpoint::open(dir.path()); }), fst::ErrorCode::AmbiguousCheckpoint);
  fst::write_file(dir.file("model.safetensors"), {{"v", fst::Dtype::F32, {2}, v.data(), 8}}, {}, false);
  auto c = fst::Checkpoint::open(dir.path());
  EXPECT_FALSE(c->sharded());
  EXPECT_EQ(c->path(), dir.file("model.safetensors"));
  EXPECT_EQ(c->keys(), std::vector<std::string>{"v"});
}

TEST(Checkpoint, ConcurrentReadersShareTheShards) {
  TempDir dir;
  write_shards(dir);
  auto c = fst::Checkpoint::open(dir.path());
  const std::vector<float> t3 = t3_values();
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int n = 0; n < 8; ++n) {
    threads.emplace_back([&, n] {
      std::vector<float> got(60);
      for (int r = 0; r < 50; ++r) c->read("t3", got.data(), 240);
      ok[static_cast<std::size_t>(n)] = got == t3;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, std::vector<int>(8, 1));
}

TEST(CApi, WritesTheSameBytesAsTheCppWriter) {
  TempDir dir;
  const std::vector<float> t3 = t3_values();
  const std::uint64_t shape[3] = {3, 4, 5};
  fst_tensor_desc d{"t3", FST_F32, 3, shape, t3.data(), 240};
  const char* keys[1] = {"format"};
  const char* values[1] = {"pt"};
  ASSERT_EQ(fst_write_file(dir.file("c.safetensors").c_str(), &d, 1, keys, values, 1, FST_WRITE_NO_FSYNC), FST_OK);
  EXPECT_EQ(read_bytes(dir.file("c.safetensors")),
            fst::serialize({{"t3", fst::Dtype::F32, {3, 4, 5}, t3.data(), 240}}, {{"format", "pt"}}, true));
  EXPECT_STREQ(fst_version(), fst::version());
  EXPECT_STREQ(fst::version(), FASTENSORS_VERSION_STRING);
  EXPECT_EQ(fst::version_number(), FASTENSORS_VERSION_NUMBER);
}

TEST(CApi, LastErrorIsPerThread) {
  fst_dtype d;
  ASSERT_EQ(fst_dtype_parse("main-thread", &d), FST_ERR_UNKNOWN_DTYPE);
  std::string other;
  std::thread([&] {
    fst_dtype e;
    fst_dtype_parse("other-thread", &e);
    other = fst_last_error();
  }).join();
  EXPECT_NE(std::string(fst_last_error()).find("main-thread"), std::string::npos);
  EXPECT_NE(other.find("other-thread"), std::string::npos);
}
