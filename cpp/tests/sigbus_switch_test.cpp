// The SIGBUS guard can be turned off (an engine owning its signal handlers):
// then no handler is installed, and a read of a mapping whose file shrank
// dies of SIGBUS, as with any plain mmap; on, the same read is FileChanged.
// Each case runs in a fresh child process, so the handler's state is its own.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/sigbus_guard.hpp"
#include "fastensors/writer.hpp"
#include "test_util.h"

namespace fst = fastensors;
using fastensors::test::TempDir;

namespace {

std::string make_file(const TempDir& dir) {
  std::vector<float> w(64 * 1024, 1.5f);  // 256 KiB
  const std::string path = dir.file("w.safetensors");
  fst::write_file(path, {{"w", fst::Dtype::F32, {64, 1024}, w.data(), w.size() * 4}}, {}, false);
  return path;
}

bool handler_is_default() {
  struct sigaction current = {};
  sigaction(SIGBUS, nullptr, &current);
  return (current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL;
}

// Opens, cuts the file to its header, reads the whole tensor. Exits 0 when
// the read raised FileChanged, 3 when it returned normally.
[[noreturn]] void read_after_truncation(const std::string& path) {
  auto f = fst::File::open(path);
  const auto& t = f->info("w");
  std::vector<float> out(64 * 1024);
  if (::truncate(path.c_str(), static_cast<off_t>(f->header().data_start + 64)) != 0) std::_Exit(4);
  try {
    f->read(t, 0, out.data(), t.nbytes());
  } catch (const fst::Error& e) {
    std::_Exit(e.code() == fst::ErrorCode::FileChanged ? 0 : 5);
  }
  std::_Exit(3);
}

}  // namespace

TEST(SigbusSwitch, OffInstallsNoHandlerAndTheFaultKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const std::string path = make_file(dir);
  EXPECT_EXIT(
      {
        fst::set_sigbus_guard(false);
        auto f = fst::File::open(path);
        if (fst::sigbus_guard_installed() || !handler_is_default()) std::_Exit(6);
        f.reset();
        read_after_truncation(path);
      },
      ::testing::KilledBySignal(SIGBUS), "");
}

TEST(SigbusSwitch, OnTurnsTheFaultIntoFileChanged) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const std::string path = make_file(dir);
  EXPECT_EXIT(
      {
        fst::set_sigbus_guard(true);
        read_after_truncation(path);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(SigbusSwitch, TheEnvironmentDecidesTheDefault) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::setenv("FASTENSORS_SIGBUS_GUARD", "0", 1);
        std::_Exit(fst::sigbus_guard_enabled() ? 1 : 0);
      },
      ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(
      {
        ::setenv("FASTENSORS_SIGBUS_GUARD", "1", 1);
        std::_Exit(fst::sigbus_guard_enabled() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

// The build's default (CMake option FASTENSORS_SIGBUS_GUARD), with no
// environment setting; on, the first mapping installs the handler.
TEST(SigbusSwitch, TheBuildDecidesTheDefault) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  const std::string path = make_file(dir);
  EXPECT_EXIT(
      {
        ::unsetenv("FASTENSORS_SIGBUS_GUARD");
        if (fst::sigbus_guard_enabled() != (FASTENSORS_TEST_GUARD_DEFAULT != 0)) std::_Exit(1);
        auto f = fst::File::open(path);
        const bool installed = fst::sigbus_guard_installed() && !handler_is_default();
        std::_Exit(installed == (FASTENSORS_TEST_GUARD_DEFAULT != 0) ? 0 : 2);
      },
      ::testing::ExitedWithCode(0), "");
}
