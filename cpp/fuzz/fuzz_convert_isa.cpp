// Differential target: the same bytes through every converter pair at every
// instruction-set level this CPU runs; any output bit that differs from the
// scalar reference aborts. NaN bit patterns are specified per pair
// (docs/dtypes.md), so the comparison is bytewise with no NaN exception.
//
// Input: byte 0 picks the pair, byte 1 the source misalignment (0-63) and the
// streaming-store flag, the rest is the source.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/dtype.hpp"
#include "fastensors/error.hpp"

namespace fst = fastensors;

namespace {

struct Pair {
  fst::Dtype from, to;
};

const std::vector<Pair>& pairs() {
  static const std::vector<Pair> all = [] {
    std::vector<Pair> out;
    for (std::size_t i = 0; i < fst::kDtypeCount; ++i) {
      for (std::size_t j = 0; j < fst::kDtypeCount; ++j) {
        const fst::Dtype a = fst::all_dtypes()[i], b = fst::all_dtypes()[j];
        if (fst::dtype_bits(a) >= 8 && fst::dtype_bits(b) >= 8 && fst::can_convert(a, b)) out.push_back({a, b});
      }
    }
    return out;
  }();
  return all;
}

const std::vector<fst::Isa>& levels() {
  static const std::vector<fst::Isa> all = fst::supported_isas();
  return all;
}

std::vector<std::uint8_t> run(const Pair& p, const std::uint8_t* src, std::size_t count, fst::Isa isa, bool stream,
                              std::size_t out_shift) {
  const std::size_t out_bytes = count * (fst::dtype_bits(p.to) / 8);
  std::vector<std::uint8_t> buf(out_bytes + 64, 0xA5);
  fst::ConvertOptions opt;
  opt.isa = isa;
  opt.threads = 1;
  opt.stream = stream;
  fst::convert(p.from, src, p.to, buf.data() + out_shift, count, opt);
  return std::vector<std::uint8_t>(buf.begin() + static_cast<std::ptrdiff_t>(out_shift),
                                   buf.begin() + static_cast<std::ptrdiff_t>(out_shift + out_bytes));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const Pair& p = pairs()[data[0] % pairs().size()];
  const std::size_t shift = data[1] & 63u;
  const bool stream = (data[1] & 64u) != 0;
  const std::size_t in = fst::dtype_bits(p.from) / 8;
  const std::size_t count = (size - 2) / in;
  // Misaligned copy of the source: the kernels take unaligned pointers.
  std::vector<std::uint8_t> src(count * in + 64);
  if (count) std::memcpy(src.data() + shift, data + 2, count * in);
  const auto want = run(p, src.data() + shift, count, fst::Isa::Scalar, false, 0);
  for (fst::Isa isa : levels()) {
    if (isa == fst::Isa::Scalar) continue;
    if (run(p, src.data() + shift, count, isa, stream, shift) != want) {
      __builtin_trap();  // a SIMD level differs from the scalar reference
    }
  }
  return 0;
}
