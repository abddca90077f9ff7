// Writes arbitrary bytes to a file and opens it with both backends; every
// tensor of an accepted file is read back through both, and must agree.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"

namespace {
std::string scratch_path() {
  static std::string path = [] {
    char tmpl[] = "/tmp/fastensors-fuzz-XXXXXX";
    int fd = ::mkstemp(tmpl);
    if (fd >= 0) ::close(fd);
    return std::string(tmpl);
  }();
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    auto mapped = fastensors::File::open(path, fastensors::Backend::Mmap);
    auto pread = fastensors::File::open(path, fastensors::Backend::Pread);
    if (mapped->keys() != pread->keys()) std::abort();
    std::vector<std::uint8_t> a, b;
    for (const auto& name : mapped->offset_keys()) {
      const auto& t = mapped->info(name);
      a.resize(t.nbytes());
      b.resize(t.nbytes());
      mapped->read(t, 0, a.data(), t.nbytes());
      pread->read(pread->info(name), 0, b.data(), t.nbytes());
      if (a != b) std::abort();
      if (t.nbytes() && std::memcmp(mapped->data(t), a.data(), t.nbytes()) != 0) std::abort();
    }
  } catch (const fastensors::Error&) {
  }
  return 0;
}
