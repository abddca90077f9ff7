#include "fastensors/convert_file.hpp"

#include <algorithm>
#include <memory>
#include <unordered_map>

#include "checked_math_internal.h"
#include "fastensors/error.hpp"
#include "fastensors/file.hpp"

namespace fastensors {
namespace {

// plan_header checks that a tensor with bytes has a data pointer, but never
// reads it: the bytes are streamed later, chunk by chunk.
const unsigned char kNotRead = 0;

std::uint64_t converted_nbytes(const TensorInfo& t, Dtype to) {
  std::uint64_t n;
  if (detail::mul_overflows(t.numel(), dtype_bits(to) / 8, &n)) {
    throw Error(ErrorCode::Overflow, "the converted size overflows 64 bits", {}, t.name);
  }
  return n;
}

}  // namespace

FileConversionResult convert_file(const std::string& src, const std::string& dst,
                                  const std::vector<std::pair<std::string, Dtype>>& targets,
                                  const FileConversionOptions& options) {
  // pread: the source's pages go through the page cache, never into this
  // process's resident set.
  std::shared_ptr<File> in = File::open(src, Backend::Pread);
  const Header& header = in->header();

  std::vector<Dtype> to(header.tensors.size());
  for (std::size_t i = 0; i < header.tensors.size(); ++i) to[i] = header.tensors[i].dtype;
  for (const auto& [name, dtype] : targets) {
    const TensorInfo* t = header.find(name);
    if (t == nullptr) throw Error(ErrorCode::TensorNotFound, "no such tensor to convert", src, name);
    const std::size_t i = header.index.at(name);
    if (t->dtype != dtype && !can_convert(t->dtype, dtype)) {
      throw Error(ErrorCode::UnsupportedConversion,
                  "cannot convert " + std::string(dtype_name(t->dtype)) + " to " + std::string(dtype_name(dtype)) +
                      " (see docs/dtypes.md for the supported pairs)",
                  src, name);
    }
    to[i] = dtype;
  }

  std::vector<TensorSource> sources(header.tensors.size());
  FileConversionResult result;
  std::uint64_t largest_in = 0;
  std::size_t widest_ratio = 1;
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    const TensorInfo& t = header.tensors[i];
    TensorSource& s = sources[i];
    s.name = t.name;
    s.dtype = to[i];
    s.shape = t.shape;
    s.nbytes = to[i] == t.dtype ? t.nbytes() : converted_nbytes(t, to[i]);
    s.data = s.nbytes ? &kNotRead : nullptr;
    largest_in = std::max(largest_in, t.nbytes());
    if (to[i] != t.dtype) {
      ++result.converted;
      widest_ratio = std::max<std::size_t>(widest_ratio, (dtype_bits(to[i]) + dtype_bits(t.dtype) - 1) / dtype_bits(t.dtype));
    } else {
      ++result.copied;
    }
  }
  const HeaderPlan plan = plan_header(sources, header.metadata, header.has_metadata);
  result.file_size = plan.total_size();
  result.data_size = plan.data_size;

  // Chunks hold whole elements of every dtype (widths divide 8).
  std::size_t chunk = std::max<std::size_t>(options.chunk_bytes / 8 * 8, 8);
  chunk = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, (largest_in + 7) / 8 * 8));
  std::unique_ptr<unsigned char[]> in_buf(new unsigned char[std::max<std::size_t>(chunk, 8)]);
  std::unique_ptr<unsigned char[]> out_buf(result.converted ? new unsigned char[chunk * widest_ratio] : nullptr);

  // The output buffer is read right back by write(): keep it in the caches.
  ConvertOptions convert_options = options.convert;
  if (!convert_options.stream) convert_options.stream = false;

  AtomicFile out(dst, options.write);
  out.write(plan.bytes.data(), plan.bytes.size());
  if (options.progress) options.progress(out.written(), result.file_size);
  for (std::size_t idx : plan.order) {
    const TensorInfo& t = header.tensors[idx];
    const Dtype target = to[idx];
    const std::size_t in_width = dtype_bits(t.dtype) / 8;
    const std::size_t out_width = dtype_bits(target) / 8;
    const std::uint64_t total = t.nbytes();
    for (std::uint64_t offset = 0; offset < total;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, total - offset));
      in->read(t, offset, in_buf.get(), n);
      if (target == t.dtype) {
        out.write(in_buf.get(), n);
      } else {
        const std::size_t count = n / in_width;
        convert(t.dtype, in_buf.get(), target, out_buf.get(), count, convert_options);
        out.write(out_buf.get(), count * out_width);
      }
      offset += n;
      if (options.progress) options.progress(out.written(), result.file_size);
    }
  }
  if (out.written() != result.file_size) {
    throw Error(ErrorCode::Io, "wrote " + std::to_string(out.written()) + " bytes, planned " +
                                   std::to_string(result.file_size), dst);
  }
  out.commit();
  return result;
}

}  // namespace fastensors
