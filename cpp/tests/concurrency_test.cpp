// Many threads reading, converting and quantizing from one open file at once,
// some through their own handles, while another process replaces the file by
// rename: every reader sees exactly the data of the file it opened, nothing
// crashes, and (under FASTENSORS_SANITIZE) ASan/LeakSanitizer see no race on
// freed memory and no leak.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/quant.hpp"
#include "fastensors/writer.hpp"
#include "test_util.h"

namespace fst = fastensors;
namespace q = fastensors::quant;
using fastensors::test::TempDir;

namespace {

constexpr std::size_t kRows = 64, kCols = 256;

// Generation g of the file: every value of "w" encodes g, so a reader can
// tell which file it read from.
std::vector<float> values(int g) {
  std::vector<float> w(kRows * kCols);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(g * 1000 + static_cast<int>(i % 512)) * 0.5f;
  return w;
}

void write_generation(const std::string& path, int g) {
  auto w = values(g);
  fst::write_file(path, {{"w", fst::Dtype::F32, {kRows, kCols}, w.data(), w.size() * 4}}, {}, false);
}

// Everything a reader does with a handle, checked against generation g.
void read_everything(const fst::File& f, int g, std::atomic<int>& bad) {
  const auto& t = f.info("w");
  const auto want = values(g);
  std::vector<float> copy(kRows * kCols);
  f.read(t, 0, copy.data(), t.nbytes());
  if (std::memcmp(copy.data(), want.data(), t.nbytes()) != 0) ++bad;
  const void* src = f.backend() == fst::Backend::Mmap ? static_cast<const void*>(f.data(t)) : copy.data();
  std::vector<std::uint16_t> bf16(kRows * kCols), ref(kRows * kCols);
  fst::ConvertOptions one;
  one.threads = 1;
  fst::convert(fst::Dtype::F32, src, fst::Dtype::BF16, bf16.data(), bf16.size(), one);
  fst::convert(fst::Dtype::F32, want.data(), fst::Dtype::BF16, ref.data(), ref.size(), one);
  if (bf16 != ref) ++bad;
  std::vector<std::uint8_t> q8(kRows * q::ggml_row_bytes(q::GgmlType::Q8_0, kCols)), q8_ref(q8.size());
  q::ggml_quantize(q::GgmlType::Q8_0, {src, fst::Dtype::F32, kRows, kCols}, q8.data());
  q::ggml_quantize(q::GgmlType::Q8_0, {want.data(), fst::Dtype::F32, kRows, kCols}, q8_ref.data());
  if (q8 != q8_ref) ++bad;
}

TEST(Concurrency, ThreadsShareOneHandle) {
  TempDir dir;
  const std::string path = dir.file("shared.safetensors");
  write_generation(path, 1);
  for (fst::Backend backend : {fst::Backend::Mmap, fst::Backend::Pread}) {
    auto f = fst::File::open(path, backend);
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int k = 0; k < 8; ++k) {
      threads.emplace_back([&] {
        for (int i = 0; i < 20; ++i) read_everything(*f, 1, bad);
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad.load(), 0);
  }
}

TEST(Concurrency, ReadersKeepTheirFileWhileAnotherProcessReplacesIt) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_generation(path, 0);
  constexpr int kGenerations = 30;
  // The writer is another process: each generation is a whole new file,
  // renamed over the old one by the atomic writer.
  pid_t writer = ::fork();
  ASSERT_GE(writer, 0);
  if (writer == 0) {
    for (int g = 1; g <= kGenerations; ++g) {
      write_generation(path, g);
      ::usleep(2000);
    }
    _exit(0);
  }
  std::atomic<int> bad{0}, opened{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int k = 0; k < 6; ++k) {
    threads.emplace_back([&, k] {
      const fst::Backend backend = k % 2 ? fst::Backend::Pread : fst::Backend::Mmap;
      while (!done) {
        auto f = fst::File::open(path, backend);
        // Which generation did this handle get? Read one value, then check
        // that everything else agrees with it, however often the file is
        // replaced meanwhile.
        float first;
        f->read(f->info("w"), 0, &first, 4);
        const int g = static_cast<int>(first * 2.0f) / 1000;
        read_everything(*f, g, bad);
        ++opened;
      }
    });
  }
  int status = 0;
  ASSERT_EQ(::waitpid(writer, &status, 0), writer);
  done = true;
  for (auto& th : threads) th.join();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(opened.load(), 6);
  auto last = fst::File::open(path);
  read_everything(*last, kGenerations, bad);
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
