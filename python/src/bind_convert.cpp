// Dtype conversion: arrays (any strides) and whole files. The logic is in
// fastensors/convert.hpp and fastensors/convert_file.hpp.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <vector>

#include "bind_common.h"
#include "fastensors/convert.hpp"

namespace fastensors_py {
namespace {

using namespace nb::literals;

// The source of a conversion: an unsigned-integer view of the values, any
// strides (the kernels see bit patterns).
using Source = nb::ndarray<nb::ro, nb::device::cpu>;

fst::ConvertOptions convert_options(const std::optional<std::string>& isa, int threads,
                                    const std::optional<bool>& stream) {
  fst::ConvertOptions opt;
  opt.threads = threads;
  opt.stream = stream;
  if (isa) {
    auto parsed = fst::parse_isa(*isa);
    if (!parsed) throw fst::Error(fst::ErrorCode::UnsupportedIsa, "unknown instruction-set level '" + *isa + "'");
    opt.isa = *parsed;
  }
  return opt;
}

}  // namespace

void init_convert(nb::module_& m) {
  m.def("isa", []() { return std::string(fst::isa_name(fst::active_isa())); },
        "The instruction-set level conversions use (FASTENSORS_ISA or the best supported).");
  m.def("supported_isas", []() {
        std::vector<std::string> out;
        for (fst::Isa isa : fst::supported_isas()) out.emplace_back(fst::isa_name(isa));
        return out;
      }, "Every level this CPU runs, best first.");
  m.def("can_convert", [](const std::string& from, const std::string& to) {
        return fst::can_convert(dtype_or_throw(from, {}), dtype_or_throw(to, {}));
      }, "from_dtype"_a, "to_dtype"_a, "Whether convert() supports this pair of safetensors codes.");

  m.def("convert", [](Source src, const std::string& from, OutBytes dst, const std::string& to,
                      const std::optional<std::string>& isa, int threads, const std::optional<bool>& stream) {
        const fst::Dtype f = dtype_or_throw(from, {});
        const fst::Dtype t = dtype_or_throw(to, {});
        if (src.itemsize() * 8 != fst::dtype_bits(f)) {
          bad_argument("src: " + from + " values are " + std::to_string(fst::dtype_bits(f)) +
                       "-bit items, the array has " + std::to_string(src.itemsize() * 8) + "-bit items");
        }
        std::vector<std::int64_t> shape(src.ndim()), strides(src.ndim());
        for (std::size_t i = 0; i < src.ndim(); ++i) {
          shape[i] = static_cast<std::int64_t>(src.shape(i));
          strides[i] = src.stride(i) * static_cast<std::int64_t>(src.itemsize());
        }
        const fst::ConvertOptions opt = convert_options(isa, threads, stream);
        nb::gil_scoped_release release;
        // Checks that dst holds exactly the converted size.
        fst::convert_strided(f, src.data(), shape, strides, t, dst.data(), dst.shape(0), opt);
      }, "src"_a, "from_dtype"_a, nb::arg("dst").noconvert(), "to_dtype"_a, "isa"_a.none() = nb::none(),
      "threads"_a = 0, "stream"_a.none() = nb::none(),
      "Convert `src` (an unsigned-integer view of the source, any strides) into the contiguous bytes `dst`; "
      "stream=False for a freshly allocated `dst`.");

  nb::class_<fst::FileConversionResult>(m, "FileConversionResult")
      .def_ro("file_size", &fst::FileConversionResult::file_size, "Bytes of the output file.")
      .def_ro("data_size", &fst::FileConversionResult::data_size, "Bytes of tensor data in it.")
      .def_ro("converted", &fst::FileConversionResult::converted, "Tensors whose dtype changed.")
      .def_ro("copied", &fst::FileConversionResult::copied, "Tensors copied unchanged.")
      .def("__repr__", [](const fst::FileConversionResult& r) {
        return "FileConversionResult(file_size=" + std::to_string(r.file_size) +
               ", data_size=" + std::to_string(r.data_size) + ", converted=" + std::to_string(r.converted) +
               ", copied=" + std::to_string(r.copied) + ")";
      });

  m.def("convert_file", [](const std::string& src, const std::string& dst,
                           const std::vector<std::pair<std::string, std::string>>& targets, bool durable,
                           nb::object progress, std::size_t chunk_bytes) {
        std::vector<std::pair<std::string, fst::Dtype>> to;
        to.reserve(targets.size());
        for (const auto& [name, dtype] : targets) to.emplace_back(name, dtype_or_throw(dtype, name));
        fst::FileConversionOptions opt;
        opt.write.durable = durable;
        if (chunk_bytes) opt.chunk_bytes = chunk_bytes;
        if (!progress.is_none()) {
          // Runs on the converting thread: take the GIL, let Ctrl-C cancel.
          opt.progress = [progress](std::uint64_t done, std::uint64_t total) {
            nb::gil_scoped_acquire gil;
            if (PyErr_CheckSignals() != 0) throw nb::python_error();
            progress(done, total);
          };
        }
        fst::FileConversionResult r;
        {
          nb::gil_scoped_release release;
          r = fst::convert_file(src, dst, to, opt);
        }
        return r;
      }, "src"_a, "dst"_a, "targets"_a, "durable"_a, "progress"_a.none(), "chunk_bytes"_a = 0,
      "Write `dst` with the tensors of `src`, those in targets [(name, dtype)] converted.");
}

}  // namespace fastensors_py
