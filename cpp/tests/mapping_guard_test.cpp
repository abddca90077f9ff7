// A file truncated while mapped: the library's own reads from the mapping
// (File::read, conversions, quantization) raise FileChanged instead of dying
// of SIGBUS, on the calling thread and on worker threads, whether the file
// was cut by this process or another one. A read of the mapping outside the
// library still gets the default SIGBUS.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/quant.hpp"
#include "fastensors/writer.hpp"
#include "io/mapping_guard_internal.h"
#include "test_util.h"

namespace fst = fastensors;
namespace q = fastensors::quant;
using fastensors::test::TempDir;

namespace {

// A file with one F32 tensor "w" of `rows` x 1024 values (4 KiB per row).
std::string make_file(const TempDir& dir, std::size_t rows) {
  std::vector<float> w(rows * 1024);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 97) * 0.25f - 3.0f;
  const std::string path = dir.file("w.safetensors");
  fst::write_file(path, {{"w", fst::Dtype::F32, {rows, 1024}, w.data(), w.size() * 4}}, {}, false);
  return path;
}

// Cuts the file to just past its header, from a child process.
void truncate_from_another_process(const std::string& path, off_t size) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(::truncate(path.c_str(), size) == 0 ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

template <class F>
fst::ErrorCode code_of(F&& f) {
  try {
    f();
  } catch (const fst::Error& e) {
    return e.code();
  }
  return fst::ErrorCode::Io;  // "no error" would be a failure below either way
}

TEST(MappingGuard, ReadsBeforeTheTruncationAreIntact) {
  TempDir dir;
  const std::string path = make_file(dir, 16);
  auto f = fst::File::open(path);
  const auto& t = f->info("w");
  std::vector<float> out(16 * 1024);
  f->read(t, 0, out.data(), t.nbytes());
  EXPECT_EQ(out[5], 5 * 0.25f - 3.0f);
}

TEST(MappingGuard, EveryReadPathRaisesFileChanged) {
  TempDir dir;
  const std::string path = make_file(dir, 64);  // 256 KiB of data
  auto f = fst::File::open(path);
  const auto& t = f->info("w");
  const std::uint8_t* src = f->data(t);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(f->header().data_start + 100)), 0);

  std::vector<std::uint8_t> bytes(t.nbytes());
  EXPECT_EQ(code_of([&] { f->read(t, 0, bytes.data(), t.nbytes()); }), fst::ErrorCode::FileChanged);
  std::vector<std::uint16_t> bf16(t.numel());
  EXPECT_EQ(code_of([&] { fst::convert(fst::Dtype::F32, src, fst::Dtype::BF16, bf16.data(), t.numel()); }),
            fst::ErrorCode::FileChanged);
  std::vector<std::uint8_t> q8(64 * q::ggml_row_bytes(q::GgmlType::Q8_0, 1024));
  EXPECT_EQ(code_of([&] { q::ggml_quantize(q::GgmlType::Q8_0, {src, fst::Dtype::F32, 64, 1024}, q8.data()); }),
            fst::ErrorCode::FileChanged);
  std::vector<std::uint8_t> nf4(64 * 1024 / 2);
  std::vector<float> absmax(64 * 1024 / 64);
  EXPECT_EQ(code_of([&] { q::nf4_quantize({src, fst::Dtype::F32, 64, 1024}, nf4.data(), absmax.data()); }),
            fst::ErrorCode::FileChanged);
  // A view with strides (get_slice(..., dtype=...)[::2]).
  std::vector<float> half(32 * 1024);
  EXPECT_EQ(code_of([&] {
              fst::convert_strided(fst::Dtype::F32, src, {32, 1024}, {8192, 4}, fst::Dtype::F32, half.data(),
                                   half.size() * 4);
            }),
            fst::ErrorCode::FileChanged);
}

TEST(MappingGuard, FaultsInsideAGuardAreSurvivedOnEveryThread) {
  // The file shrinks while a guard is open (as when another process cuts it
  // in the middle of a conversion): the reads themselves fault, on this
  // thread and on others, and the handler turns each fault into a page of
  // zeros and the guard's finish() into FileChanged.
  TempDir dir;
  const std::string path = make_file(dir, 64);
  auto f = fst::File::open(path);
  const auto& t = f->info("w");
  const volatile std::uint8_t* p = f->data(t);
  std::optional<fst::detail::MappedReadGuard> guard;
  guard.emplace(f->data(t), path);
  truncate_from_another_process(path, static_cast<off_t>(f->header().data_start + 4096));
  std::vector<unsigned> sums(4, 0);
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < sums.size(); ++k) {
    threads.emplace_back([&, k] {
      for (std::size_t i = (k + 2) * 4096; i < t.nbytes(); i += 4096 * sums.size()) sums[k] += p[i + 1];
    });
  }
  for (auto& th : threads) th.join();
  unsigned here = 0;
  for (std::size_t i = 3 * 4096; i < t.nbytes(); i += 4096) here += p[i + 2];
  EXPECT_EQ(here, 0u);  // the pages past the new end now read as zeros
  EXPECT_EQ(code_of([&] { guard->finish(); }), fst::ErrorCode::FileChanged);
  guard.reset();
  // The mapping stays marked: every later read fails, even of the intact start.
  std::vector<std::uint8_t> bytes(16);
  EXPECT_EQ(code_of([&] { f->read(t, 0, bytes.data(), 16); }), fst::ErrorCode::FileChanged);
}

TEST(MappingGuard, ConversionRacingATruncationFailsCleanly) {
  // Another process cuts the file at a random moment of a series of
  // conversions: each one succeeds with the right values or raises
  // FileChanged; the process survives.
  TempDir dir;
  const std::string path = make_file(dir, 1024);  // 4 MiB
  auto f = fst::File::open(path);
  const auto& t = f->info("w");
  std::vector<std::uint16_t> out(t.numel());
  std::atomic<bool> stop{false};
  std::thread cutter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    truncate_from_another_process(path, static_cast<off_t>(f->header().data_start + 4096));
    stop = true;
  });
  int failures = 0, wrong = 0;
  for (int i = 0; i < 100000 && failures == 0; ++i) {
    try {
      fst::convert(fst::Dtype::F32, f->data(t), fst::Dtype::BF16, out.data(), t.numel());
      if (out[7] != 0xBFA0) ++wrong;  // bf16(7 * 0.25 - 3) = -1.25
    } catch (const fst::Error& e) {
      if (e.code() != fst::ErrorCode::FileChanged) ++wrong;
      ++failures;
    }
    if (stop && failures == 0 && i > 0) {
      // The cut has happened; the next conversion must see it.
      EXPECT_EQ(code_of([&] { fst::convert(fst::Dtype::F32, f->data(t), fst::Dtype::BF16, out.data(), t.numel()); }),
                fst::ErrorCode::FileChanged);
      ++failures;
    }
  }
  cutter.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_GE(failures, 1);
}

TEST(MappingGuard, ThreadedConversionFromATruncatedFile) {
  // 48 MiB: over the threshold at which conversions split across threads.
  TempDir dir;
  const std::string path = make_file(dir, 12 * 1024);
  auto f = fst::File::open(path);
  const auto& t = f->info("w");
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(f->header().data_start + (8u << 20))), 0);
  std::vector<std::uint16_t> out(t.numel());
  fst::ConvertOptions opt;
  opt.threads = 4;
  EXPECT_EQ(code_of([&] { fst::convert(fst::Dtype::F32, f->data(t), fst::Dtype::F16, out.data(), t.numel(), opt); }),
            fst::ErrorCode::FileChanged);
}

TEST(MappingGuard, PreadBackendReportsTheShrinkToo) {
  TempDir dir;
  const std::string path = make_file(dir, 4);
  auto f = fst::File::open(path, fst::Backend::Pread);
  const auto& t = f->info("w");
  ASSERT_EQ(::truncate(path.c_str(), 200), 0);
  std::vector<std::uint8_t> bytes(t.nbytes());
  EXPECT_EQ(code_of([&] { f->read(t, 0, bytes.data(), t.nbytes()); }), fst::ErrorCode::FileChanged);
}

TEST(MappingGuard, OtherFilesAndLaterOpensAreUnaffected) {
  TempDir dir;
  const std::string path = make_file(dir, 8);
  auto cut = fst::File::open(path);
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  std::vector<std::uint8_t> bytes(8 * 4096);
  EXPECT_EQ(code_of([&] { cut->read(cut->info("w"), 0, bytes.data(), bytes.size()); }), fst::ErrorCode::FileChanged);
  cut.reset();
  make_file(dir, 8);  // rewritten whole (by rename): a fresh open reads it
  auto fresh = fst::File::open(path);
  fresh->read(fresh->info("w"), 0, bytes.data(), bytes.size());
  float v;
  std::memcpy(&v, bytes.data() + 4 * 7, 4);
  EXPECT_EQ(v, 7 * 0.25f - 3.0f);
}

TEST(MappingGuardDeathTest, AReadOutsideTheLibraryStillGetsSigbus) {
  // Zero-copy views are the caller's memory: no handler hides their faults.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const std::string path = make_file(dir, 8);
  auto f = fst::File::open(path);
  const volatile std::uint8_t* p = f->data(f->info("w"));
  ASSERT_EQ(::truncate(path.c_str(), 100), 0);
  EXPECT_DEATH({ std::printf("%d\n", p[5 * 4096]); }, "");
}

}  // namespace
