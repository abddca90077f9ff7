#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/writer.hpp"
#include "test_util.h"

using namespace fastensors;
using namespace fastensors::test;

namespace {
std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

TEST(Writer, HeaderMatchesTheReferenceLayout) {
  float f[2] = {1, 2};
  std::uint8_t u[3] = {1, 2, 3};
  std::vector<TensorSource> ts = {{"z_u8", Dtype::U8, {3}, u, 3}, {"a_f32", Dtype::F32, {2}, f, 8}};
  auto plan = plan_header(ts, {{"format", "pt"}}, true);
  std::string json = plan.bytes.substr(8);
  EXPECT_EQ(json.size() % 8, 0u);
  std::string expected =
      R"({"__metadata__":{"format":"pt"},"a_f32":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("z_u8":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})";
  EXPECT_EQ(json.substr(0, expected.size()), expected);
  EXPECT_EQ(json.find_first_not_of(' ', expected.size()), std::string::npos);
  EXPECT_EQ(plan.order, (std::vector<std::size_t>{1, 0}));
  EXPECT_EQ(plan.data_size, 11u);
}

TEST(Writer, InOrderPlanKeepsTheGivenOrderWithoutData) {
  // Tensors in an order the reference writer would not choose, no buffers.
  std::vector<TensorSource> ts = {{"z_u8", Dtype::U8, {3}, nullptr, 3}, {"a_f32", Dtype::F32, {2}, nullptr, 8}};
  auto plan = plan_header_in_order(ts, {{"note", "caf\xc3\xa9"}}, true);
  std::string json = plan.bytes.substr(8);
  std::string expected =
      R"({"__metadata__":{"note":"caf)" "\xc3\xa9" R"("},"z_u8":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
      R"("a_f32":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  EXPECT_EQ(json.substr(0, expected.size()), expected);
  EXPECT_EQ(json.size() % 8, 0u);
  EXPECT_EQ(plan.order, (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(plan.data_size, 11u);
  EXPECT_THROW(plan_header_in_order({{"a", Dtype::F32, {2}, nullptr, 4}}, {}, false), Error);
  EXPECT_THROW(plan_header(ts, {}, false), Error);  // the writer's plan still needs the bytes
}

TEST(Writer, EscapesLikeSerdeJson) {
  std::uint8_t u = 0;
  std::vector<TensorSource> ts = {{std::string("q\"b\\n\n\x01\x7f\xc3\xa9", 10), Dtype::U8, {1}, &u, 1}};
  auto plan = plan_header(ts, {}, false);
  EXPECT_NE(plan.bytes.find(R"("q\"b\\n\n\u0001)" "\x7f\xc3\xa9\""), std::string::npos) << plan.bytes;
}

TEST(Writer, RoundTripsThroughTheReader) {
  TempDir dir;
  std::vector<double> big(100000);
  std::iota(big.begin(), big.end(), 0.0);
  std::uint16_t h[4] = {1, 2, 3, 4};
  std::vector<TensorSource> ts = {{"big", Dtype::F64, {1000, 100}, big.data(), big.size() * 8},
                                  {"h", Dtype::BF16, {2, 2}, h, 8},
                                  {"empty", Dtype::F32, {0, 5}, nullptr, 0},
                                  {"scalar", Dtype::U16, {}, h, 2}};
  auto path = dir.file("out.safetensors");
  write_file(path, ts, {{"k", "v"}}, true);
  EXPECT_EQ(read_bytes(path), serialize(ts, {{"k", "v"}}, true));
  auto f = File::open(path);
  EXPECT_EQ(f->keys().size(), 4u);
  std::vector<double> back(100000);
  f->read(f->info("big"), 0, back.data(), back.size() * 8);
  EXPECT_EQ(back, big);
  EXPECT_EQ(f->info("scalar").shape.size(), 0u);
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"out.safetensors"}));
}

TEST(Writer, FailureLeavesTargetAndNoTemporary) {
  TempDir dir;
  auto path = dir.file("out.safetensors");
  write_bytes(path, "previous");
  float f[2] = {1, 2};
  std::vector<TensorSource> bad = {{"x", Dtype::F32, {3}, f, 8}};
  EXPECT_THROW(write_file(path, bad, {}, false), Error);
  EXPECT_EQ(read_bytes(path), "previous");
  {
    AtomicFile out(path);
    out.write("partial", 7);
    // destroyed without commit
  }
  EXPECT_EQ(read_bytes(path), "previous");
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"out.safetensors"}));
}

TEST(Writer, CommitRemovesTemporariesOfDeadWriters) {
  TempDir dir;
  auto path = dir.file("out.safetensors");
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ::waitpid(child, nullptr, 0);  // a pid that no longer exists
  const std::string dead = ".out.safetensors.tmp-" + std::to_string(child) + "-0";
  const std::string mine = ".out.safetensors.tmp-" + std::to_string(::getpid()) + "-999";
  const std::string other = ".other.safetensors.tmp-" + std::to_string(child) + "-0";
  for (const auto& name : {dead, mine, other}) write_bytes(dir.file(name), "left by a killed writer");
  float f[1] = {1};
  write_file(path, {{"a", Dtype::F32, {1}, f, 4}}, {}, false);
  // Only the dead writer's temporary of this target goes; a live writer's
  // (this process's) and other targets' stay.
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{other, mine, "out.safetensors"}));
}

TEST(Writer, ValidatesInputs) {
  float f[2] = {1, 2};
  auto code = [](const std::vector<TensorSource>& ts, const Metadata& m = {}) {
    try {
      plan_header(ts, m, !m.empty());
    } catch (const Error& e) {
      return e.code();
    }
    return ErrorCode::Io;
  };
  EXPECT_EQ(code({{"a", Dtype::F32, {2}, f, 8}, {"a", Dtype::F32, {2}, f, 8}}), ErrorCode::DuplicateKey);
  EXPECT_EQ(code({{"__metadata__", Dtype::F32, {2}, f, 8}}), ErrorCode::InvalidArgument);
  EXPECT_EQ(code({{"a", Dtype::F32, {2}, f, 4}}), ErrorCode::SizeMismatch);
  EXPECT_EQ(code({{"a", Dtype::F4, {3}, f, 2}}), ErrorCode::MisalignedSubByte);
  EXPECT_EQ(code({{"a", Dtype::F32, {1ull << 62, 8}, f, 8}}), ErrorCode::Overflow);
  EXPECT_EQ(code({{"a", Dtype::F32, {2}, f, 8}}, {{"k", "1"}, {"k", "2"}}), ErrorCode::DuplicateKey);
}

TEST(Writer, MissingDirectoryIsFileNotFound) {
  TempDir dir;
  float f[1] = {1};
  try {
    write_file(dir.file("no/such/dir/x.safetensors"), {{"a", Dtype::F32, {1}, f, 4}}, {}, false);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::FileNotFound);
  }
}

// The new file replaces the target by rename: a FIFO or socket there is an
// Io error before anything is written, and stays as it was (never replaced
// by a regular file, never opened, so no write blocks).
TEST(Writer, NonRegularTargetIsAnErrorAndStays) {
  TempDir dir;
  const std::string fifo = dir.file("pipe.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string sock = dir.file("sock.safetensors");
  const int sock_fd = bind_unix_socket(sock);
  std::vector<std::string> targets = {fifo};
  if (sock_fd >= 0) targets.push_back(sock);
  float f[1] = {1};
  const std::vector<TensorSource> tensors = {{"a", Dtype::F32, {1}, f, 4}};
  for (const auto& path : targets) {
    ASSERT_TRUE(returns_within([&] { write_file(path, tensors, {}, false); })) << path << " blocked";
    try {
      write_file(path, tensors, {}, false);
      ADD_FAILURE() << path << " written";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Io) << e.what();
      EXPECT_EQ(e.path(), path);
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
    }
    EXPECT_THROW(AtomicFile{path}, Error);
    struct stat st;
    ASSERT_EQ(::lstat(path.c_str(), &st), 0);
    EXPECT_FALSE(S_ISREG(st.st_mode)) << path << " was replaced";
  }
  std::vector<std::string> left = {"pipe.safetensors"};
  if (sock_fd >= 0) left.push_back("sock.safetensors");
  EXPECT_EQ(list_dir(dir.path()), left);
  if (sock_fd >= 0) ::close(sock_fd);
}

TEST(Writer, NonDurableStillAtomic) {
  TempDir dir;
  auto path = dir.file("x.safetensors");
  float f[1] = {3};
  WriteOptions opts;
  opts.durable = false;
  write_file(path, {{"a", Dtype::F32, {1}, f, 4}}, {}, false, opts);
  auto file = File::open(path);
  float back = 0;
  file->read(file->info("a"), 0, &back, 4);
  EXPECT_EQ(back, 3.0f);
}

TEST(Writer, StreamingGivesTheSameBytesAsWriteFile) {
  TempDir dir;
  std::vector<double> big(1000);
  std::iota(big.begin(), big.end(), 0.0);
  std::uint16_t h[4] = {1, 2, 3, 4};
  std::uint8_t u[3] = {7, 8, 9};
  std::vector<TensorSource> ts = {{"big", Dtype::F64, {10, 100}, big.data(), big.size() * 8},
                                  {"h", Dtype::BF16, {2, 2}, h, 8},
                                  {"empty", Dtype::F32, {0, 5}, nullptr, 0},
                                  {"a_u8", Dtype::U8, {3}, u, 3}};
  std::vector<TensorSource> planned = ts;
  for (auto& t : planned) t.data = nullptr;
  std::vector<std::size_t> asked;
  auto path = dir.file("out.safetensors");
  write_file_streaming(path, planned, {{"k", "v"}}, true, [&](std::size_t i) {
    asked.push_back(i);
    return std::pair<const void*, std::uint64_t>(ts[i].data, ts[i].nbytes);
  });
  EXPECT_EQ(read_bytes(path), serialize(ts, {{"k", "v"}}, true));
  // file order: F64, F32, BF16, U8
  EXPECT_EQ(asked, (std::vector<std::size_t>{0, 2, 1, 3}));

  // keep_order: the given order, the same bytes as an in-order header plan.
  asked.clear();
  auto kept = dir.file("kept.safetensors");
  write_file_streaming(
      kept, planned, {{"k", "v"}}, true,
      [&](std::size_t i) {
        asked.push_back(i);
        return std::pair<const void*, std::uint64_t>(ts[i].data, ts[i].nbytes);
      },
      {}, /*keep_order=*/true);
  EXPECT_EQ(asked, (std::vector<std::size_t>{0, 1, 2, 3}));
  std::string expect = plan_header_in_order(ts, {{"k", "v"}}, true).bytes;
  for (const auto& t : ts) expect.append(static_cast<const char*>(t.data ? t.data : ""), t.nbytes);
  EXPECT_EQ(read_bytes(kept), expect);
}

TEST(Writer, StreamingFailureLeavesTargetAndNoTemporary) {
  TempDir dir;
  auto path = dir.file("out.safetensors");
  write_bytes(path, "previous");
  float f[2] = {1, 2};
  std::vector<TensorSource> ts = {{"a", Dtype::F32, {2}, nullptr, 8}, {"b", Dtype::F32, {2}, nullptr, 8}};
  int calls = 0;
  auto throwing = [&](std::size_t) -> std::pair<const void*, std::uint64_t> {
    if (++calls == 2) throw std::runtime_error("no space");
    return {f, 8};
  };
  EXPECT_THROW(write_file_streaming(path, ts, {}, false, throwing), std::runtime_error);
  auto short_fill = [&](std::size_t) { return std::pair<const void*, std::uint64_t>(f, 4); };
  EXPECT_THROW(write_file_streaming(path, ts, {}, false, short_fill), Error);
  EXPECT_EQ(read_bytes(path), "previous");
  EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"out.safetensors"}));
}
