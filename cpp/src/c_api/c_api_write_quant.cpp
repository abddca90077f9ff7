// The C API's writers and quantization kernels, over the C++ API.
#include <string>
#include <utility>
#include <vector>

#include "c_api/c_api_internal.h"
#include "fastensors/quant.hpp"
#include "fastensors/writer.hpp"

namespace fst = fastensors;
namespace q = fastensors::quant;
using namespace fastensors::c_api;

namespace {

constexpr unsigned kKnownFlags = FST_WRITE_NO_FSYNC | FST_WRITE_METADATA_ALWAYS;

std::vector<fst::TensorSource> tensor_args(const fst_tensor_desc* tensors, size_t count, bool need_data) {
  if (count > 0) need(tensors, "tensors");
  std::vector<fst::TensorSource> out(count);
  for (size_t i = 0; i < count; ++i) {
    const fst_tensor_desc& d = tensors[i];
    const std::string at = "tensors[" + std::to_string(i) + "]";
    if (d.name == nullptr) fail(FST_ERR_INVALID_ARGUMENT, at + ".name is NULL");
    if (d.ndim > 0 && d.shape == nullptr) fail(FST_ERR_INVALID_ARGUMENT, at + ".shape is NULL");
    if (need_data && d.nbytes > 0 && d.data == nullptr) fail(FST_ERR_INVALID_ARGUMENT, at + ".data is NULL");
    out[i].name = d.name;
    out[i].dtype = dtype_arg(d.dtype, (at + ".dtype").c_str());
    out[i].shape.assign(d.shape, d.shape + d.ndim);
    out[i].data = need_data ? d.data : nullptr;
    out[i].nbytes = d.nbytes;
  }
  return out;
}

fst::Metadata metadata_args(const char* const* keys, const char* const* values, size_t count) {
  if (count > 0) {
    need(keys, "metadata_keys");
    need(values, "metadata_values");
  }
  fst::Metadata out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    if (keys[i] == nullptr || values[i] == nullptr) {
      fail(FST_ERR_INVALID_ARGUMENT, "metadata entry " + std::to_string(i) + " has a NULL key or value");
    }
    out.emplace_back(keys[i], values[i]);
  }
  return out;
}

fst::WriteOptions options_arg(unsigned flags) {
  if ((flags & ~kKnownFlags) != 0) fail(FST_ERR_INVALID_ARGUMENT, "unknown write flags " + std::to_string(flags));
  fst::WriteOptions o;
  if (flags & FST_WRITE_NO_FSYNC) o.durable = false;
  return o;
}

q::GgmlType ggml_arg(int type) {
  if (type < FST_GGML_Q8_0 || type > FST_GGML_Q6_K) {
    fail(FST_ERR_INVALID_ARGUMENT, std::to_string(type) + " is not an fst_ggml_type");
  }
  return static_cast<q::GgmlType>(type);
}

std::size_t product(std::size_t a, std::size_t b, const char* what) {
  std::size_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) fail(FST_ERR_OVERFLOW, std::string(what) + " overflows");
  return out;
}

void room(std::size_t have, std::size_t want, const char* what) {
  if (have < want) {
    fail(FST_ERR_BUFFER_TOO_SMALL,
         std::string(what) + " holds " + std::to_string(have) + ", " + std::to_string(want) + " are needed");
  }
}

// Values and scale groups of an int-quantized rows x cols matrix; a group
// size that does not divide the columns is an argument error.
std::pair<std::size_t, std::size_t> int_counts(std::size_t rows, std::size_t cols, std::size_t group_size) {
  if (group_size == 0 || cols % group_size != 0) {
    fail(FST_ERR_INVALID_ARGUMENT, "group_size " + std::to_string(group_size) + " does not divide cols " +
                                       std::to_string(cols));
  }
  return {product(rows, cols, "rows * cols"), product(rows, cols / group_size, "the scale count")};
}


// A float matrix argument: dtype F32/F16/BF16 and src_size covering it.
q::Matrix matrix_arg(const void* src, size_t src_size, int src_dtype, size_t rows, size_t cols) {
  const fst::Dtype d = dtype_arg(src_dtype, "src_dtype");
  if (d != fst::Dtype::F32 && d != fst::Dtype::F16 && d != fst::Dtype::BF16) {
    fail(FST_ERR_INVALID_ARGUMENT, "src_dtype must be FST_F32, FST_F16 or FST_BF16");
  }
  const std::size_t bytes = product(product(rows, cols, "rows * cols"), fst::dtype_bits(d) / 8, "src size");
  room(src_size, bytes, "src (bytes)");
  if (bytes > 0) need(src, "src");
  return q::Matrix{src, d, rows, cols};
}

}  // namespace

extern "C" {

fst_status fst_write_file(const char* path, const fst_tensor_desc* tensors, size_t count,
                          const char* const* metadata_keys, const char* const* metadata_values,
                          size_t metadata_count, unsigned flags) {
  return guarded([&] {
    need(path, "path");
    const auto sources = tensor_args(tensors, count, true);
    const auto meta = metadata_args(metadata_keys, metadata_values, metadata_count);
    const auto options = options_arg(flags);
    fst::write_file(path, sources, meta, metadata_count > 0 || (flags & FST_WRITE_METADATA_ALWAYS), options);
  });
}

fst_status fst_write_file_streaming(const char* path, const fst_tensor_desc* tensors, size_t count,
                                    const char* const* metadata_keys, const char* const* metadata_values,
                                    size_t metadata_count, unsigned flags, fst_fill_fn fill, void* user) {
  return guarded([&] {
    need(path, "path");
    if (fill == nullptr) fail(FST_ERR_INVALID_ARGUMENT, "fill is NULL");
    const auto sources = tensor_args(tensors, count, false);
    const auto meta = metadata_args(metadata_keys, metadata_values, metadata_count);
    const auto options = options_arg(flags);
    fst::TensorFill producer = [&](std::size_t index) -> std::pair<const void*, std::uint64_t> {
      const void* data = nullptr;
      uint64_t nbytes = 0;
      const int rc = fill(user, index, &data, &nbytes);
      if (rc != 0) {
        fail(FST_ERR_CALLBACK, "the fill callback returned " + std::to_string(rc) + " for tensor '" +
                                   sources[index].name + "'; nothing was written");
      }
      if (nbytes > 0 && data == nullptr) {
        fail(FST_ERR_INVALID_ARGUMENT, "the fill callback gave NULL data for tensor '" + sources[index].name + "'");
      }
      return {data, nbytes};
    };
    fst::write_file_streaming(path, sources, meta, metadata_count > 0 || (flags & FST_WRITE_METADATA_ALWAYS),
                              producer, options);
  });
}

fst_status fst_ggml_row_bytes(int type, size_t cols, size_t* out) {
  return guarded([&] {
    need(out, "out");
    *out = q::ggml_row_bytes(ggml_arg(type), cols);
  });
}

namespace {

// Both GGML entries: the arguments checked in the same order, then the
// kernel, weighted when `weighted` (imatrix then non-null, one per column).
void ggml_quantize_args(int type, const void* src, size_t src_size, int src_dtype, size_t rows, size_t cols,
                        bool weighted, const float* imatrix, size_t imatrix_count, void* dst, size_t dst_size) {
  const q::GgmlType t = ggml_arg(type);
  const q::Matrix m = matrix_arg(src, src_size, src_dtype, rows, cols);
  const std::size_t want = product(rows, q::ggml_row_bytes(t, cols), "the quantized size");
  room(dst_size, want, "dst (bytes)");
  if (want > 0) need(dst, "dst");
  if (!weighted) return q::ggml_quantize(t, m, static_cast<std::uint8_t*>(dst));
  need(imatrix, "imatrix");
  if (imatrix_count != cols) {
    fail(FST_ERR_INVALID_ARGUMENT, "imatrix holds " + std::to_string(imatrix_count) +
                                       " weights; one per column (" + std::to_string(cols) + ") is needed");
  }
  q::ggml_quantize(t, m, static_cast<std::uint8_t*>(dst), imatrix);
}

}  // namespace

fst_status fst_ggml_quantize(int type, const void* src, size_t src_size, int src_dtype, size_t rows, size_t cols,
                             void* dst, size_t dst_size) {
  return guarded([&] {
    ggml_quantize_args(type, src, src_size, src_dtype, rows, cols, false, nullptr, 0, dst, dst_size);
  });
}

fst_status fst_ggml_quantize_weighted(int type, const void* src, size_t src_size, int src_dtype, size_t rows,
                                      size_t cols, const float* imatrix, size_t imatrix_count, void* dst,
                                      size_t dst_size) {
  return guarded([&] {
    ggml_quantize_args(type, src, src_size, src_dtype, rows, cols, true, imatrix, imatrix_count, dst, dst_size);
  });
}

fst_status fst_ggml_dequantize(int type, const void* src, size_t src_size, size_t rows, size_t cols, float* dst,
                               size_t dst_count) {
  return guarded([&] {
    const q::GgmlType t = ggml_arg(type);
    const std::size_t want_src = product(rows, q::ggml_row_bytes(t, cols), "the quantized size");
    room(src_size, want_src, "src (bytes)");
    room(dst_count, product(rows, cols, "rows * cols"), "dst (floats)");
    if (want_src > 0) {
      need(src, "src");
      need(dst, "dst");
    }
    q::ggml_dequantize(t, static_cast<const std::uint8_t*>(src), rows, cols, dst);
  });
}

fst_status fst_int_quantize(const void* src, size_t src_size, int src_dtype, size_t rows, size_t cols,
                            unsigned bits, size_t group_size, int symmetric, int8_t* codes, size_t codes_count,
                            void* scales, size_t scales_size, int8_t* zero_points, size_t zero_points_count) {
  return guarded([&] {
    const q::Matrix m = matrix_arg(src, src_size, src_dtype, rows, cols);
    const auto [n, groups] = int_counts(rows, cols, group_size);
    room(codes_count, n, "codes");
    room(scales_size, product(groups, fst::dtype_bits(m.dtype) / 8, "the scale size"), "scales (bytes)");
    if (!symmetric) room(zero_points_count, groups, "zero_points");
    if (n > 0) {
      need(codes, "codes");
      need(scales, "scales");
      if (!symmetric) need(zero_points, "zero_points");
    }
    q::int_quantize(m, q::IntParams{bits, group_size, symmetric != 0}, codes, scales,
                    symmetric ? nullptr : zero_points);
  });
}

fst_status fst_int_dequantize(const int8_t* codes, size_t codes_count, const void* scales, size_t scales_size,
                              int scale_dtype, const int8_t* zero_points, size_t zero_points_count, size_t rows,
                              size_t cols, size_t group_size, float* dst, size_t dst_count) {
  return guarded([&] {
    const fst::Dtype sd = dtype_arg(scale_dtype, "scale_dtype");
    if (sd != fst::Dtype::F32 && sd != fst::Dtype::F16 && sd != fst::Dtype::BF16) {
      fail(FST_ERR_INVALID_ARGUMENT, "scale_dtype must be FST_F32, FST_F16 or FST_BF16");
    }
    const auto [n, groups] = int_counts(rows, cols, group_size);
    room(codes_count, n, "codes");
    room(scales_size, product(groups, fst::dtype_bits(sd) / 8, "the scale size"), "scales (bytes)");
    if (zero_points != nullptr) room(zero_points_count, groups, "zero_points");
    room(dst_count, n, "dst (floats)");
    if (n > 0) {
      need(codes, "codes");
      need(scales, "scales");
      need(dst, "dst");
    }
    q::int_dequantize(codes, scales, sd, zero_points, rows, cols, group_size, dst);
  });
}

}  // extern "C"
