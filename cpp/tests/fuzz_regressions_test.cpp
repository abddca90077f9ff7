// Replays the fuzzers' findings (cpp/fuzz/regressions) and the seed corpora
// of the parser targets: each input is rejected with a fastensors::Error or
// accepted, identically by the in-memory parser and both file backends.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/header.hpp"

namespace fs = std::filesystem;
namespace fst = fastensors;

namespace {

template <class F>
std::optional<fst::ErrorCode> error_of(F&& f) {
  try {
    f();
  } catch (const fst::Error& e) {
    return e.code();
  }
  return std::nullopt;
}

std::vector<fs::path> inputs() {
  std::vector<fs::path> out;
  const fs::path root = FASTENSORS_FUZZ_DIR;
  for (const char* sub : {"regressions", "corpus/header", "corpus/files", "corpus/malformed"}) {
    for (const auto& entry : fs::directory_iterator(root / sub)) {
      if (entry.is_regular_file() && entry.path().extension() != ".md") out.push_back(entry.path());
    }
  }
  return out;
}

TEST(FuzzRegressions, EveryInputIsRejectedOrReadTheSameWay) {
  const auto files = inputs();
  ASSERT_GT(files.size(), 90u);  // the regressions plus the committed corpora
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    const auto e_buf = error_of([&] { fst::parse_buffer(bytes.data(), bytes.size(), "buffer"); });
    for (fst::Backend backend : {fst::Backend::Mmap, fst::Backend::Pread}) {
      const auto e_file = error_of([&] {
        auto f = fst::File::open(path.string(), backend);
        std::vector<std::uint8_t> out;
        for (const auto& t : f->header().tensors) {
          out.resize(t.nbytes());
          f->read(t, 0, out.data(), t.nbytes());
        }
      });
      EXPECT_EQ(e_file, e_buf) << path;
    }
  }
}

}  // namespace
