// Slicing and index arithmetic: builds a small valid file from the input
// (fuzzed dtype and shape, written by the library's own serializer), opens it
// with both backends, then replays fuzzed requests against it:
//   - File::read(offset, size): in range exactly when the arithmetic says so
//     (InvalidArgument otherwise, never an out-of-bounds read), and the bytes
//     of both backends equal the tensor's;
//   - convert_strided over a strided view of the mapped tensor (any shape,
//     negative strides, the path get_slice(...)[index] with a dtype takes):
//     equal to an element-by-element gather followed by a flat conversion.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/header.hpp"
#include "fastensors/writer.hpp"

namespace fst = fastensors;

namespace {

std::string scratch_path() {
  static const std::string path = [] {
    // $TMPDIR (a tmpfs such as /dev/shm makes each run cheaper), else /tmp.
    const char* dir = std::getenv("TMPDIR");
    std::string tmpl = std::string(dir && *dir ? dir : "/tmp") + "/fastensors-fuzz-slice-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    if (fd >= 0) ::close(fd);
    return tmpl;
  }();
  return path;
}

void check_read(const fst::File& f, const fst::TensorInfo& t, const std::vector<std::uint8_t>& bytes,
                std::uint64_t offset, std::uint64_t size) {
  const bool in_range = offset <= t.nbytes() && size <= t.nbytes() - offset;
  std::vector<std::uint8_t> out(in_range ? size : 1);
  try {
    f.read(t, offset, out.data(), size);
  } catch (const fst::Error& e) {
    if (in_range || e.code() != fst::ErrorCode::InvalidArgument) __builtin_trap();
    return;
  }
  if (!in_range) __builtin_trap();
  if (size && std::memcmp(out.data(), bytes.data() + offset, size) != 0) __builtin_trap();
}

// A strided view of `count` elements of `in` bytes at `base` (element units):
// converted by convert_strided and by gather + convert, compared bytewise.
void check_strided(FuzzedDataProvider& fdp, const std::uint8_t* tensor, std::uint64_t count, fst::Dtype dtype) {
  const std::size_t in = fst::dtype_bits(dtype) / 8;
  if (in == 0 || count == 0) return;
  const std::size_t nd = fdp.ConsumeIntegralInRange<std::size_t>(1, 4);
  std::vector<std::int64_t> shape(nd), strides(nd);
  const auto start = fdp.ConsumeIntegralInRange<std::int64_t>(0, static_cast<std::int64_t>(count) - 1);
  std::int64_t lo = start, hi = start, n = 1;
  for (std::size_t ax = 0; ax < nd; ++ax) {
    shape[ax] = fdp.ConsumeIntegralInRange<std::int64_t>(0, 7);
    const std::int64_t step = fdp.ConsumeIntegralInRange<std::int64_t>(-9, 9);
    strides[ax] = step * static_cast<std::int64_t>(in);
    n *= shape[ax];
    if (shape[ax] > 0) (step < 0 ? lo : hi) += step * (shape[ax] - 1);
  }
  // The caller guarantees the view lies inside the tensor (numpy does).
  if (n > 0 && (lo < 0 || hi >= static_cast<std::int64_t>(count))) return;
  const fst::Dtype to = fdp.ConsumeBool() && fst::can_convert(dtype, fst::Dtype::F32) ? fst::Dtype::F32 : dtype;
  if (!fst::can_convert(dtype, to)) return;
  const std::size_t out = fst::dtype_bits(to) / 8;
  const std::uint8_t* origin = tensor + start * static_cast<std::int64_t>(in);

  std::vector<std::uint8_t> got(static_cast<std::size_t>(n) * out, 0xEE);
  fst::ConvertOptions opt;
  opt.threads = 1;
  fst::convert_strided(dtype, origin, shape, strides, to, got.data(), got.size(), opt);

  // Oracle: visit the elements in row-major order with a plain odometer.
  std::vector<std::uint8_t> gathered(static_cast<std::size_t>(n) * in);
  std::vector<std::int64_t> idx(nd, 0);
  for (std::int64_t k = 0; k < n; ++k) {
    std::int64_t off = 0;
    for (std::size_t ax = 0; ax < nd; ++ax) off += idx[ax] * strides[ax];
    std::memcpy(gathered.data() + k * static_cast<std::int64_t>(in), origin + off, in);
    for (std::size_t ax = nd; ax-- > 0;) {
      if (++idx[ax] < shape[ax]) break;
      idx[ax] = 0;
    }
  }
  std::vector<std::uint8_t> want(got.size(), 0xEE);
  opt.isa = fst::Isa::Scalar;
  fst::convert(dtype, gathered.data(), to, want.data(), static_cast<std::size_t>(n), opt);
  if (got != want) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider fdp(data, size);
  const fst::Dtype dtype = fst::all_dtypes()[fdp.ConsumeIntegralInRange<std::size_t>(0, fst::kDtypeCount - 1)];
  std::vector<std::uint64_t> shape(fdp.ConsumeIntegralInRange<std::size_t>(0, 4));
  std::uint64_t numel = 1;
  for (auto& d : shape) {
    d = fdp.ConsumeIntegralInRange<std::uint64_t>(0, 9);
    numel *= d;
  }
  const std::uint64_t bits = numel * fst::dtype_bits(dtype);
  if (bits % 8 != 0) return 0;  // a sub-byte tensor must end on a byte
  std::vector<std::uint8_t> bytes(bits / 8);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 37u + 11u);
  const std::size_t fill = fdp.ConsumeIntegralInRange<std::size_t>(0, bytes.size());
  const auto given = fdp.ConsumeBytes<std::uint8_t>(fill);
  if (!given.empty()) std::memcpy(bytes.data(), given.data(), given.size());
  // A second tensor so the fuzzed one does not always start at offset 0.
  const std::vector<std::uint8_t> other(fdp.ConsumeIntegralInRange<std::size_t>(0, 24), 0x42);

  std::vector<fst::TensorSource> sources = {{"a", dtype, shape, bytes.data(), bytes.size()},
                                            {"b", fst::Dtype::U8, {other.size()}, other.data(), other.size()}};
  const std::string file = fst::serialize(sources, {}, false);
  const std::string path = scratch_path();
  FILE* fp = std::fopen(path.c_str(), "wb");
  if (!fp) return 0;
  std::fwrite(file.data(), 1, file.size(), fp);
  std::fclose(fp);

  const fst::Header h =
      fst::parse_buffer(reinterpret_cast<const std::uint8_t*>(file.data()), file.size(), "fuzz");
  auto mapped = fst::File::open(path, fst::Backend::Mmap);
  auto pread = fst::File::open(path, fst::Backend::Pread);
  const fst::TensorInfo& t = mapped->info("a");
  if (t.nbytes() != bytes.size() || t.shape != shape || h.at("a").begin != t.begin) __builtin_trap();
  if (t.nbytes() && std::memcmp(mapped->data(t), bytes.data(), bytes.size()) != 0) __builtin_trap();

  while (fdp.remaining_bytes() > 0) {
    switch (fdp.ConsumeIntegralInRange<int>(0, 2)) {
      case 0: {
        // Offsets and sizes near the tensor's size, and anywhere in 64 bits.
        const bool wide = fdp.ConsumeBool();
        const std::uint64_t offset = wide ? fdp.ConsumeIntegral<std::uint64_t>()
                                          : fdp.ConsumeIntegralInRange<std::uint64_t>(0, t.nbytes() + 2);
        const std::uint64_t sz = wide ? fdp.ConsumeIntegral<std::uint64_t>()
                                      : fdp.ConsumeIntegralInRange<std::uint64_t>(0, t.nbytes() + 2);
        check_read(*mapped, t, bytes, offset, sz);
        check_read(*pread, pread->info("a"), bytes, offset, sz);
        break;
      }
      case 1:
        if (t.nbytes()) check_strided(fdp, mapped->data(t), numel, dtype);
        break;
      default: {
        std::vector<std::uint8_t> whole(t.nbytes() + 1);
        pread->read(pread->info("a"), 0, whole.data(), t.nbytes());
        if (!std::equal(bytes.begin(), bytes.end(), whole.begin())) __builtin_trap();
        break;
      }
    }
  }
  return 0;
}
