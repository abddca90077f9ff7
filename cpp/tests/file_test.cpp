#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "test_util.h"

using namespace fastensors;
using namespace fastensors::test;

namespace {
const std::string kHeader =
    R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},)"
    R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

std::string data() {
  float a[2] = {1.5f, -2.0f};
  std::int32_t b[2] = {7, -9};
  std::string d(16, '\0');
  std::memcpy(&d[0], a, 8);
  std::memcpy(&d[8], b, 8);
  return d;
}
}  // namespace

class FileTest : public ::testing::TestWithParam<Backend> {};

TEST_P(FileTest, OpensAndReads) {
  TempDir dir;
  auto path = dir.file("m.safetensors");
  write_bytes(path, raw_file(kHeader, data()));
  auto f = File::open(path, GetParam());
  EXPECT_EQ(f->keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f->offset_keys(), (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(f->metadata().size(), 1u);
  EXPECT_EQ(f->metadata()[0].second, "pt");
  const auto& b = f->info("b");
  std::int32_t got[2];
  f->read(b, 0, got, 8);
  EXPECT_EQ(got[0], 7);
  EXPECT_EQ(got[1], -9);
  f->read(b, 4, got, 4);
  EXPECT_EQ(got[0], -9);
  EXPECT_THROW(f->read(b, 4, got, 8), Error);
  if (GetParam() == Backend::Mmap) {
    const std::uint8_t* p = f->data(f->info("a"));
    ASSERT_NE(p, nullptr);
    float first;  // the raw header leaves "a" unaligned: no float reference to it
    std::memcpy(&first, p, 4);
    EXPECT_EQ(first, 1.5f);
  } else {
    EXPECT_EQ(f->data(f->info("a")), nullptr);
  }
  EXPECT_THROW(f->info("zzz"), Error);
}

TEST(File, MappingIsCopyOnWrite) {
  TempDir dir;
  auto path = dir.file("m.safetensors");
  auto bytes = raw_file(kHeader, data());
  write_bytes(path, bytes);
  auto f = File::open(path, Backend::Mmap);
  f->data(f->info("a"))[0] = 0x42;
  EXPECT_EQ(f->data(f->info("a"))[0], 0x42);
  EXPECT_EQ(read_bytes(path), bytes);
}

TEST_P(FileTest, ReleaseKeepsTheBytesReadable) {
  // Dropped pages come back from the file on the next access (and a pread
  // handle has nothing to drop).
  TempDir dir;
  auto path = dir.file("m.safetensors");
  write_bytes(path, raw_file(kHeader, data()));
  auto f = File::open(path, GetParam());
  for (const char* name : {"a", "b"}) {
    const auto& t = f->info(name);
    std::int32_t before[2], after[2];
    f->read(t, 0, before, 8);
    f->release(t);
    f->read(t, 0, after, 8);
    EXPECT_EQ(std::memcmp(before, after, 8), 0) << name;
  }
  const std::string d = data();
  std::int32_t b[2];
  f->read(f->info("b"), 0, b, 8);
  EXPECT_EQ(std::memcmp(b, d.data() + 8, 8), 0);
}

TEST_P(FileTest, MissingFileAndDirectoryAreTypedErrors) {
  TempDir dir;
  try {
    File::open(dir.file("nope"), GetParam());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::FileNotFound);
    EXPECT_EQ(e.errno_value(), ENOENT);
  }
  try {
    File::open(dir.path(), GetParam());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
  }
}

// A FIFO, a socket or a device is an Io error naming the path and the kind
// of file, raised at once: opening a FIFO used to wait forever for a writer.
TEST_P(FileTest, NonRegularFilesAreErrorsAtOnce) {
  TempDir dir;
  const std::string fifo = dir.file("pipe.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string link = dir.file("link.safetensors");
  ASSERT_EQ(::symlink(fifo.c_str(), link.c_str()), 0);
  const std::string sock = dir.file("sock.safetensors");
  const int sock_fd = bind_unix_socket(sock);
  std::vector<std::pair<std::string, std::string>> cases = {{fifo, "a FIFO"}, {link, "a FIFO"}};
  if (sock_fd >= 0) cases.emplace_back(sock, "a socket");
  if (is_char_device("/dev/null")) cases.emplace_back("/dev/null", "a character device");
  for (const auto& c : cases) {
    const std::string& path = c.first;
    const std::string& kind = c.second;
    const Backend backend = GetParam();
    ASSERT_TRUE(returns_within([&] { File::open(path, backend); })) << path << " blocked";
    try {
      File::open(path, backend);
      ADD_FAILURE() << path << " opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::Io) << e.what();
      EXPECT_EQ(e.path(), path);
      const std::string what = e.what();
      EXPECT_NE(what.find("is " + kind), std::string::npos) << what;
      EXPECT_NE(what.find("not a regular file"), std::string::npos) << what;
      EXPECT_NE(what.find(path), std::string::npos) << what;
    }
  }
  if (sock_fd >= 0) ::close(sock_fd);
}

TEST_P(FileTest, RejectsMalformedFiles) {
  TempDir dir;
  auto path = dir.file("bad");
  write_bytes(path, "");
  EXPECT_THROW(File::open(path, GetParam()), Error);
  write_bytes(path, raw_file(kHeader, data() + "x"));
  try {
    File::open(path, GetParam());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::TrailingBytes);
  }
}

TEST_P(FileTest, ManyThreadsReadOneFile) {
  TempDir dir;
  auto path = dir.file("m.safetensors");
  write_bytes(path, raw_file(kHeader, data()));
  auto f = File::open(path, GetParam());
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        float a[2];
        f->read(f->info("a"), 0, a, 8);
        if (a[0] != 1.5f || a[1] != -2.0f) return;
      }
      ok[static_cast<std::size_t>(t)] = 1;
    });
  }
  for (auto& th : threads) th.join();
  for (int v : ok) EXPECT_EQ(v, 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, FileTest, ::testing::Values(Backend::Mmap, Backend::Pread),
                         [](const auto& info) { return info.param == Backend::Mmap ? "mmap" : "pread"; });

TEST(Backend, Parse) {
  EXPECT_EQ(parse_backend("mmap"), Backend::Mmap);
  EXPECT_EQ(parse_backend("pread"), Backend::Pread);
  EXPECT_THROW(parse_backend("MMAP"), Error);
}
