// Quantization kernels (fastensors/quant.hpp).
//
// Every array is a typed, C-contiguous CPU ndarray. Matrix dimensions come
// from the arrays themselves (the input of a quantization, the output of a
// dequantization); every other array must hold exactly as many elements as
// the kernel reads or writes for them, which is checked here before the
// kernel runs. Float inputs and scales are raw bit patterns (an unsigned
// view) of the F32/F16/BF16 dtype the call names.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "bind_common.h"

namespace fastensors_py {
namespace {

using namespace nb::literals;
namespace q = fst::quant;

using Matrix = nb::ndarray<nb::ro, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using In2 = In<T, nb::ndim<2>>;
template <typename T>
using Out2 = Out<T, nb::ndim<2>>;

const char* ggml_name(q::GgmlType t) {
  switch (t) {
    case q::GgmlType::Q8_0: return "q8_0";
    case q::GgmlType::Q4_0: return "q4_0";
    case q::GgmlType::Q4_1: return "q4_1";
    case q::GgmlType::Q5_0: return "q5_0";
    case q::GgmlType::Q5_1: return "q5_1";
    case q::GgmlType::Q2_K: return "q2_k";
    case q::GgmlType::Q3_K: return "q3_k";
    case q::GgmlType::Q4_K: return "q4_k";
    case q::GgmlType::Q5_K: return "q5_k";
    case q::GgmlType::Q6_K: return "q6_k";
  }
  return "?";
}

const char* granularity_name(q::Fp8Granularity g) {
  switch (g) {
    case q::Fp8Granularity::Tensor: return "tensor";
    case q::Fp8Granularity::Channel: return "channel";
    case q::Fp8Granularity::Block: return "block";
  }
  return "?";
}

std::string dims(std::uint64_t rows, std::uint64_t cols) { return std::to_string(rows) + "x" + std::to_string(cols); }

// F32, F16 or BF16 (what the kernels read and write as values or scales).
fst::Dtype float_dtype(const std::string& name, const char* arg) {
  const fst::Dtype d = dtype_or_throw(name, {});
  if (d != fst::Dtype::F32 && d != fst::Dtype::F16 && d != fst::Dtype::BF16) {
    bad_argument(std::string(arg) + ": F32, F16 or BF16, not " + name);
  }
  return d;
}

// F64, F32, F16 or BF16 (what quality reads).
fst::Dtype metric_dtype(const std::string& name, const char* arg) {
  const fst::Dtype d = dtype_or_throw(name, {});
  if (d != fst::Dtype::F64 && d != fst::Dtype::F32 && d != fst::Dtype::F16 && d != fst::Dtype::BF16) {
    bad_argument(std::string(arg) + ": F64, F32, F16 or BF16, not " + name);
  }
  return d;
}

q::Matrix matrix(const Matrix& src, const std::string& dtype) {
  const fst::Dtype d = float_dtype(dtype, "dtype");
  expect_width(src, "src", d);
  return {src.data(), d, src.shape(0), src.shape(1)};
}

std::uint64_t groups_of(std::uint64_t cols, std::uint64_t group_size) {
  if (group_size == 0 || cols % group_size != 0) {
    bad_argument("group_size: " + std::to_string(group_size) + " does not divide the row length " +
                 std::to_string(cols));
  }
  return cols / group_size;
}

void check_bits(unsigned bits, bool packed_only) {
  const bool ok = packed_only ? (bits == 1 || bits == 2 || bits == 4 || bits == 8)
                              : (bits == 2 || bits == 4 || bits == 8);
  if (!ok) bad_argument("bits: " + std::to_string(bits) + (packed_only ? " is not 1, 2, 4 or 8" : " is not 8, 4 or 2"));
}

// int32 words per row of `cols` codes of `bits` bits, checked.
std::uint64_t words_per_row(std::uint64_t cols, unsigned bits) {
  return (mul(cols, bits, "cols") + 31) / 32;
}

std::string int_context(unsigned bits, std::uint64_t rows, std::uint64_t cols, std::uint64_t group) {
  return "int" + std::to_string(bits) + " " + dims(rows, cols) + " (group " + std::to_string(group) + ")";
}

// Scales (raw `sd` patterns) and optional int8 zero points for `count` groups.
template <typename S, typename Z>
void check_groups(const S& scales, fst::Dtype sd, const std::optional<Z>& zero_points, std::uint64_t count,
                  const std::string& ctx, bool output) {
  expect_width(scales, "scales", sd, output);
  expect_size(scales, "scales", count, std::string(fst::dtype_name(sd)) + " values", ctx, output);
  if (zero_points) expect_size(*zero_points, "zero_points", count, "int8 values", ctx, output);
}

template <typename Z>
const std::int8_t* zp_data(const std::optional<Z>& z) { return z ? z->data() : nullptr; }

}  // namespace

void init_quant(nb::module_& m) {
  nb::enum_<q::GgmlType>(m, "GgmlType", "GGML block formats.")
      .value("q8_0", q::GgmlType::Q8_0)
      .value("q4_0", q::GgmlType::Q4_0)
      .value("q4_1", q::GgmlType::Q4_1)
      .value("q5_0", q::GgmlType::Q5_0)
      .value("q5_1", q::GgmlType::Q5_1)
      .value("q2_k", q::GgmlType::Q2_K)
      .value("q3_k", q::GgmlType::Q3_K)
      .value("q4_k", q::GgmlType::Q4_K)
      .value("q5_k", q::GgmlType::Q5_K)
      .value("q6_k", q::GgmlType::Q6_K);
  nb::enum_<q::Fp8Granularity>(m, "Fp8Granularity", "What one FP8 scale covers.")
      .value("tensor", q::Fp8Granularity::Tensor)
      .value("channel", q::Fp8Granularity::Channel)
      .value("block", q::Fp8Granularity::Block);
  nb::class_<q::Quality>(m, "Quality", "Error metrics of a candidate against a reference.")
      .def_ro("cosine", &q::Quality::cosine)
      .def_ro("sqnr_db", &q::Quality::sqnr_db)
      .def_ro("rmse", &q::Quality::rmse)
      .def_ro("max_abs_err", &q::Quality::max_abs_err);

  m.def("kernel_isa", []() { return std::string(q::kernel_isa()); },
        "Instruction set of the quantization kernels: avx512, avx2 or scalar (follows isa()).");

  // ---- GGML ----
  m.def("ggml_row_bytes", [](q::GgmlType t, std::uint64_t cols) { return q::ggml_row_bytes(t, cols); },
        "type"_a, "cols"_a);
  m.def("ggml_quantize", [](q::GgmlType t, Matrix src, const std::string& dtype, Out<std::uint8_t> out,
                            std::optional<In<float, nb::ndim<1>>> imatrix) {
        const q::Matrix in = matrix(src, dtype);
        const std::uint64_t row_bytes = q::ggml_row_bytes(t, in.cols);
        const std::string ctx = std::string(ggml_name(t)) + " " + dims(in.rows, in.cols);
        expect_size(out, "out", mul(in.rows, row_bytes, "out"), "bytes", ctx, true);
        if (imatrix) expect_size(*imatrix, "imatrix", in.cols, "weights (one per column)", ctx);
        const float* w = imatrix ? imatrix->data() : nullptr;
        nb::gil_scoped_release release;
        q::ggml_quantize(t, in, out.data(), w);
      }, "type"_a, nb::arg("src").noconvert(), "dtype"_a, nb::arg("out").noconvert(),
      nb::arg("imatrix").noconvert() = nb::none(),
      "Quantize src (rows, cols) into out (rows * ggml_row_bytes bytes); imatrix: None or cols float32 "
      "weights (ggml's weighted quantizers).");
  m.def("ggml_has_weighted", [](q::GgmlType t) { return q::ggml_has_weighted(t); }, "type"_a,
        "Whether the type has an importance-matrix (weighted) form: all but q8_0.");
  m.def("ggml_dequantize", [](q::GgmlType t, Bytes data, Out2<float> out) {
        const std::uint64_t rows = out.shape(0), cols = out.shape(1);
        const std::uint64_t row_bytes = q::ggml_row_bytes(t, cols);
        const std::string ctx = std::string(ggml_name(t)) + " " + dims(rows, cols);
        expect_size(data, "data", mul(rows, row_bytes, "data"), "bytes", ctx);
        nb::gil_scoped_release release;
        q::ggml_dequantize(t, data.data(), rows, cols, out.data());
      }, "type"_a, nb::arg("data").noconvert(), nb::arg("out").noconvert(),
      "Dequantize blocks into out (rows, cols) F32.");

  // ---- integer schemes ----
  m.def("packed_words", [](std::uint64_t cols, unsigned bits) {
        check_bits(bits, true);
        return words_per_row(cols, bits);
      }, "cols"_a, "bits"_a);
  m.def("int_quantize", [](Matrix src, const std::string& dtype, unsigned bits, std::uint64_t group_size,
                           bool symmetric, Out2<std::int8_t> codes, RawOut scales,
                           std::optional<Out<std::int8_t>> zero_points) {
        const q::Matrix in = matrix(src, dtype);
        check_bits(bits, false);
        const std::uint64_t groups = groups_of(in.cols, group_size);
        const std::string ctx = int_context(bits, in.rows, in.cols, group_size);
        if (codes.shape(0) != in.rows || codes.shape(1) != in.cols) {
          bad_output("codes: expected shape (" + std::to_string(in.rows) + ", " + std::to_string(in.cols) +
                     ") for " + ctx + ", got (" + std::to_string(codes.shape(0)) + ", " +
                     std::to_string(codes.shape(1)) + ")");
        }
        if (!symmetric && !zero_points) bad_argument("zero_points: an asymmetric " + ctx + " needs them");
        check_groups(scales, in.dtype, zero_points, mul(in.rows, groups, "scales"), ctx, true);
        q::IntParams p{bits, static_cast<std::size_t>(group_size), symmetric};
        std::int8_t* zp = zero_points ? zero_points->data() : nullptr;
        nb::gil_scoped_release release;
        q::int_quantize(in, p, codes.data(), scales.data(), zp);
      }, nb::arg("src").noconvert(), "dtype"_a, "bits"_a, "group_size"_a, "symmetric"_a,
      nb::arg("codes").noconvert(), nb::arg("scales").noconvert(), nb::arg("zero_points").noconvert().none(),
      "Quantize src (rows, cols) into int8 codes (rows, cols), scales (rows * cols / group_size values of "
      "dtype) and, when asymmetric, int8 zero points (as many).");
  m.def("int_dequantize", [](In<std::int8_t> codes, RawIn scales, const std::string& scale_dtype,
                             std::optional<In<std::int8_t>> zero_points, std::uint64_t group_size,
                             Out2<float> out) {
        const std::uint64_t rows = out.shape(0), cols = out.shape(1);
        const fst::Dtype sd = float_dtype(scale_dtype, "scale_dtype");
        const std::uint64_t groups = groups_of(cols, group_size);
        const std::string ctx = int_context(8, rows, cols, group_size);
        expect_size(codes, "codes", mul(rows, cols, "codes"), "int8 values", ctx);
        check_groups(scales, sd, zero_points, mul(rows, groups, "scales"), ctx, false);
        const std::int8_t* zp = zp_data(zero_points);
        nb::gil_scoped_release release;
        q::int_dequantize(codes.data(), scales.data(), sd, zp, rows, cols, group_size, out.data());
      }, nb::arg("codes").noconvert(), nb::arg("scales").noconvert(), "scale_dtype"_a,
      nb::arg("zero_points").noconvert().none(), "group_size"_a, nb::arg("out").noconvert(),
      "(code - zero_point) * scale into out (rows, cols) F32.");
  m.def("int_dequantize_packed", [](In<std::int32_t> packed, unsigned bits, RawIn scales,
                                    const std::string& scale_dtype, std::optional<In<std::int8_t>> zero_points,
                                    std::uint64_t group_size, Out2<float> out) {
        const std::uint64_t rows = out.shape(0), cols = out.shape(1);
        check_bits(bits, true);
        const fst::Dtype sd = float_dtype(scale_dtype, "scale_dtype");
        const std::uint64_t groups = groups_of(cols, group_size);
        const std::string ctx = int_context(bits, rows, cols, group_size);
        expect_size(packed, "packed", mul(rows, words_per_row(cols, bits), "packed"), "int32 words", ctx);
        check_groups(scales, sd, zero_points, mul(rows, groups, "scales"), ctx, false);
        const std::int8_t* zp = zp_data(zero_points);
        nb::gil_scoped_release release;
        q::int_dequantize_packed(packed.data(), bits, scales.data(), sd, zp, rows, cols, group_size, out.data());
      }, nb::arg("packed").noconvert(), "bits"_a, nb::arg("scales").noconvert(), "scale_dtype"_a,
      nb::arg("zero_points").noconvert().none(), "group_size"_a, nb::arg("out").noconvert(),
      "int_dequantize of codes packed as by pack_int32, into out (rows, cols) F32.");
  m.def("pack_int32", [](In2<std::int8_t> codes, unsigned bits, Out<std::int32_t> out) {
        const std::uint64_t rows = codes.shape(0), cols = codes.shape(1);
        check_bits(bits, true);
        const std::string ctx = std::to_string(bits) + "-bit codes " + dims(rows, cols);
        expect_size(out, "out", mul(rows, words_per_row(cols, bits), "out"), "int32 words", ctx, true);
        nb::gil_scoped_release release;
        q::pack_int32(codes.data(), rows, cols, bits, out.data());
      }, nb::arg("codes").noconvert(), "bits"_a, nb::arg("out").noconvert(),
      "Pack int8 codes (rows, cols) into rows of packed_words(cols, bits) int32 words.");
  m.def("unpack_int32", [](In<std::int32_t> packed, unsigned bits, Out2<std::int8_t> out) {
        const std::uint64_t rows = out.shape(0), cols = out.shape(1);
        check_bits(bits, true);
        const std::string ctx = std::to_string(bits) + "-bit codes " + dims(rows, cols);
        expect_size(packed, "packed", mul(rows, words_per_row(cols, bits), "packed"), "int32 words", ctx);
        nb::gil_scoped_release release;
        q::unpack_int32(packed.data(), rows, cols, bits, out.data());
      }, nb::arg("packed").noconvert(), "bits"_a, nb::arg("out").noconvert(),
      "Unpack int32 words into int8 codes out (rows, cols).");

  // ---- FP8 E4M3FN ----
  m.def("fp8_scale_count", [](q::Fp8Granularity g, std::uint64_t rows, std::uint64_t cols) {
        return q::fp8_scale_count(g, rows, cols);
      }, "granularity"_a, "rows"_a, "cols"_a);
  m.def("fp8_quantize", [](Matrix src, const std::string& dtype, q::Fp8Granularity g, Out<std::uint8_t> out,
                           RawOut scales) {
        const q::Matrix in = matrix(src, dtype);
        const std::string ctx = "fp8_e4m3 " + dims(in.rows, in.cols) + " (" + granularity_name(g) + ")";
        expect_size(out, "out", mul(in.rows, in.cols, "out"), "bytes", ctx, true);
        expect_width(scales, "scales", in.dtype, true);
        expect_size(scales, "scales", q::fp8_scale_count(g, in.rows, in.cols),
                    std::string(fst::dtype_name(in.dtype)) + " values", ctx, true);
        nb::gil_scoped_release release;
        q::fp8_quantize(in, g, out.data(), scales.data());
      }, nb::arg("src").noconvert(), "dtype"_a, "granularity"_a, nb::arg("out").noconvert(),
      nb::arg("scales").noconvert(),
      "Quantize src (rows, cols) into E4M3FN bytes and fp8_scale_count scales of dtype.");
  m.def("fp8_dequantize", [](Bytes data, RawIn scales, const std::string& scale_dtype, q::Fp8Granularity g,
                             Out2<float> out) {
        const std::uint64_t rows = out.shape(0), cols = out.shape(1);
        const fst::Dtype sd = float_dtype(scale_dtype, "scale_dtype");
        const std::string ctx = "fp8_e4m3 " + dims(rows, cols) + " (" + granularity_name(g) + ")";
        expect_size(data, "data", mul(rows, cols, "data"), "bytes", ctx);
        expect_width(scales, "scales", sd);
        expect_size(scales, "scales", q::fp8_scale_count(g, rows, cols),
                    std::string(fst::dtype_name(sd)) + " values", ctx);
        nb::gil_scoped_release release;
        q::fp8_dequantize(data.data(), scales.data(), sd, g, rows, cols, out.data());
      }, nb::arg("data").noconvert(), nb::arg("scales").noconvert(), "scale_dtype"_a, "granularity"_a,
      nb::arg("out").noconvert(), "Dequantize E4M3FN bytes into out (rows, cols) F32.");

  // ---- NF4 ----
  m.def("nf4_code_values", []() {
        std::vector<float> v(q::nf4_code_values(), q::nf4_code_values() + 16);
        return v;
      });
  m.def("nf4_quantize", [](Matrix src, const std::string& dtype, Out<std::uint8_t> out, Out<float> absmax) {
        const q::Matrix in = matrix(src, dtype);
        const std::uint64_t n = mul(in.rows, in.cols, "src");
        const std::string ctx = "nf4 of " + std::to_string(n) + " values";
        expect_size(out, "out", n / 2 + n % 2, "bytes", ctx, true);
        expect_size(absmax, "absmax", n / q::kNf4Block + (n % q::kNf4Block != 0), "F32 values", ctx, true);
        nb::gil_scoped_release release;
        q::nf4_quantize(in, out.data(), absmax.data());
      }, nb::arg("src").noconvert(), "dtype"_a, nb::arg("out").noconvert(), nb::arg("absmax").noconvert(),
      "Quantize src, taken flat, into ceil(n/2) bytes and ceil(n/64) F32 absmax values.");
  m.def("nf4_dequantize", [](Bytes data, In<float> absmax, Out<float> out) {
        const std::uint64_t n = out.size();
        const std::string ctx = "nf4 of " + std::to_string(n) + " values";
        expect_size(data, "data", n / 2 + n % 2, "bytes", ctx);
        expect_size(absmax, "absmax", n / q::kNf4Block + (n % q::kNf4Block != 0), "F32 values", ctx);
        nb::gil_scoped_release release;
        q::nf4_dequantize(data.data(), absmax.data(), n, out.data());
      }, nb::arg("data").noconvert(), nb::arg("absmax").noconvert(), nb::arg("out").noconvert(),
      "Dequantize NF4 codes into out (n F32 values, any shape).");

  // ---- quality ----
  m.def("quality", [](RawIn reference, const std::string& ref_dtype, RawIn candidate,
                      const std::string& cand_dtype) {
        const fst::Dtype rd = metric_dtype(ref_dtype, "ref_dtype"), cd = metric_dtype(cand_dtype, "cand_dtype");
        expect_width(reference, "reference", rd);
        expect_width(candidate, "candidate", cd);
        if (reference.size() != candidate.size()) {
          bad_argument("candidate: expected " + std::to_string(reference.size()) + " values (as the reference), got " +
                       std::to_string(candidate.size()));
        }
        nb::gil_scoped_release release;
        return q::quality(reference.data(), rd, candidate.data(), cd, reference.size());
      }, nb::arg("reference").noconvert(), "ref_dtype"_a, nb::arg("candidate").noconvert(), "cand_dtype"_a,
      "Metrics of two equally long float arrays (F64, F32, F16 or BF16).");
}

}  // namespace fastensors_py
