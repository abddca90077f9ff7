// Writes arbitrary bytes to a file and opens it with both backends and with
// the in-memory parser: all three must accept it or all reject it with the
// same error code. For an accepted file the headers agree, and every tensor
// reads back the same through the mapping, File::read on the mapping, and
// pread, in whole and in a split read.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/header.hpp"

namespace fst = fastensors;

namespace {

std::string scratch_path() {
  static const std::string path = [] {
    // $TMPDIR (a tmpfs such as /dev/shm makes each run cheaper), else /tmp.
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/fastensors-fuzz-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    if (fd >= 0) ::close(fd);
    return tmpl;
  }();
  return path;
}

template <class F>
std::optional<fst::ErrorCode> error_of(F&& f) {
  try {
    f();
  } catch (const fst::Error& e) {
    return e.code();
  }
  return std::nullopt;
}

bool same_header(const fst::Header& a, const fst::Header& b) {
  if (a.tensors.size() != b.tensors.size() || a.metadata != b.metadata || a.has_metadata != b.has_metadata ||
      a.data_start != b.data_start || a.data_size != b.data_size) {
    return false;
  }
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    const auto &x = a.tensors[i], &y = b.tensors[i];
    if (x.name != y.name || x.dtype != y.dtype || x.shape != y.shape || x.begin != y.begin || x.end != y.end) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);

  std::shared_ptr<fst::File> mapped, pread;
  fst::Header parsed;
  const auto e_map = error_of([&] { mapped = fst::File::open(path, fst::Backend::Mmap); });
  const auto e_pread = error_of([&] { pread = fst::File::open(path, fst::Backend::Pread); });
  const auto e_buf = error_of([&] { parsed = fst::parse_buffer(data, size, "fuzz"); });
  if (e_map != e_pread || e_map != e_buf) __builtin_trap();
  if (e_map) return 0;

  if (!same_header(mapped->header(), pread->header()) || !same_header(mapped->header(), parsed)) __builtin_trap();
  if (mapped->keys() != pread->keys() || mapped->file_size() != size) __builtin_trap();
  std::vector<std::uint8_t> a, b;
  for (const auto& name : mapped->offset_keys()) {
    const auto& t = mapped->info(name);
    const std::uint64_t n = t.nbytes();
    const std::uint8_t* want = data + parsed.data_start + t.begin;
    a.assign(n, 0);
    b.assign(n, 0);
    mapped->read(t, 0, a.data(), n);
    pread->read(pread->info(name), 0, b.data(), n);
    if (n && (std::memcmp(a.data(), want, n) != 0 || a != b || std::memcmp(mapped->data(t), want, n) != 0)) {
      __builtin_trap();
    }
    if (n > 1) {  // the same bytes in two reads split at an odd place
      const std::uint64_t cut = n / 2 + 1;
      b.assign(n, 0);
      pread->read(pread->info(name), 0, b.data(), cut);
      pread->read(pread->info(name), cut, b.data() + cut, n - cut);
      if (a != b) __builtin_trap();
    }
  }
  return 0;
}
