// Feeds arbitrary bytes to the in-memory parser: it must either return a
// header whose tensors tile the buffer, or throw fastensors::Error.
#include <cstdint>
#include <cstdlib>

#include "fastensors/error.hpp"
#include "fastensors/header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto h = fastensors::parse_buffer(data, size, "fuzz");
    std::uint64_t cursor = 0;
    for (const auto& t : h.tensors) {
      if (t.begin != cursor || t.end < t.begin) std::abort();
      if (t.numel() * fastensors::dtype_bits(t.dtype) / 8 != t.nbytes()) std::abort();
      if (h.find(t.name) != &t) std::abort();
      cursor = t.end;
    }
    if (h.data_start + cursor != size) std::abort();
  } catch (const fastensors::Error&) {
  }
  return 0;
}
