// fastensors._core: converts arguments, releases the GIL, calls the C++
// library, converts results. No format logic lives here.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fastensors/convert.hpp"
#include "fastensors/fastensors.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace fst = fastensors;

namespace {

// Python exception classes by error code, installed by fastensors._errors.
// A raw reference: a static nb::dict would be built before Python starts.
PyObject* g_error_classes = nullptr;

void translate_error(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const fst::Error& e) {
    nb::gil_scoped_acquire gil;
    std::string code(fst::error_code_name(e.code()));
    nb::handle cls = PyExc_RuntimeError;
    if (g_error_classes != nullptr) {
      if (PyObject* found = PyDict_GetItemString(g_error_classes, code.c_str())) cls = found;
    }
    // An entry is an exception class or a factory returning an instance.
    nb::object exc;
    if (e.errno_value() != 0) {
      // OSError-style arguments so .errno / .filename work.
      exc = nb::handle(cls)(e.errno_value(), std::string(e.what()),
                            e.path().empty() ? nb::none() : nb::cast(e.path()));
    } else {
      exc = nb::handle(cls)(std::string(e.what()));
    }
    if (!e.tensor().empty()) nb::setattr(exc, "tensor", nb::cast(e.tensor()));
    if (!e.path().empty()) nb::setattr(exc, "path", nb::cast(e.path()));
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  }
}

using Bytes = nb::ndarray<nb::numpy, std::uint8_t, nb::ndim<1>>;
using OutBytes = nb::ndarray<std::uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// One open file. Views of the mapping hold `owner` (a capsule with its own
// reference to the File), so closing the handle never invalidates them.
struct PyFile {
  std::shared_ptr<fst::File> file;
  nb::object owner;

  const fst::File& get() const {
    if (!file) throw fst::Error(fst::ErrorCode::InvalidArgument, "the file is closed");
    return *file;
  }
};

nb::tuple info_tuple(const fst::TensorInfo& t) {
  nb::list shape;
  for (auto d : t.shape) shape.append(d);
  return nb::make_tuple(t.name, std::string(fst::dtype_name(t.dtype)), shape, t.begin, t.end);
}

nb::object metadata_dict(const fst::Header& h) {
  if (!h.has_metadata) return nb::none();
  nb::dict d;
  for (const auto& kv : h.metadata) d[nb::cast(kv.first)] = nb::cast(kv.second);
  return d;
}

fst::Dtype dtype_or_throw(const std::string& name, const std::string& tensor) {
  auto dt = fst::parse_dtype(name);
  if (!dt) throw fst::Error(fst::ErrorCode::UnknownDtype, "unknown dtype '" + name + "'", {}, tensor);
  return *dt;
}

// specs: [(name, dtype, shape, data_ptr, nbytes), ...]
std::vector<fst::TensorSource> to_sources(
    const std::vector<std::tuple<std::string, std::string, std::vector<std::uint64_t>, std::uintptr_t,
                                 std::uint64_t>>& specs) {
  std::vector<fst::TensorSource> out;
  out.reserve(specs.size());
  for (const auto& s : specs) {
    fst::TensorSource t;
    t.name = std::get<0>(s);
    t.dtype = dtype_or_throw(std::get<1>(s), t.name);
    t.shape = std::get<2>(s);
    t.data = reinterpret_cast<const void*>(std::get<3>(s));
    t.nbytes = std::get<4>(s);
    out.push_back(std::move(t));
  }
  return out;
}

// -- dtype conversion: argument conversion only (logic in fastensors/convert.hpp)
using AnyArray = nb::ndarray<nb::ro, nb::device::cpu>;

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

// ---- quantization: raw pointers from numpy arrays the Python layer owns ----

fst::Dtype float_dtype(const std::string& name) { return dtype_or_throw(name, {}); }

fst::quant::GgmlType ggml_type(const std::string& name) {
  using T = fst::quant::GgmlType;
  if (name == "q8_0") return T::Q8_0;
  if (name == "q4_0") return T::Q4_0;
  if (name == "q4_1") return T::Q4_1;
  if (name == "q5_0") return T::Q5_0;
  if (name == "q5_1") return T::Q5_1;
  throw fst::Error(fst::ErrorCode::InvalidArgument, "unknown GGML type '" + name + "'");
}

fst::quant::Fp8Granularity fp8_granularity(const std::string& name) {
  using G = fst::quant::Fp8Granularity;
  if (name == "tensor") return G::Tensor;
  if (name == "channel") return G::Channel;
  if (name == "block") return G::Block;
  throw fst::Error(fst::ErrorCode::InvalidArgument,
                   "unknown FP8 granularity '" + name + "' (expected 'tensor', 'channel' or 'block')");
}

template <typename T>
T* ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

fst::quant::Matrix matrix(std::uintptr_t data, const std::string& dtype, std::uint64_t rows, std::uint64_t cols) {
  return {ptr<const void>(data), float_dtype(dtype), static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)};
}

void bind_quant(nb::module_& m) {
  namespace q = fst::quant;
  m.def("kernel_isa", []() { return std::string(q::kernel_isa()); },
        "Instruction set of the quantization kernels: avx512, avx2 or scalar (follows isa()).");
  m.def("ggml_row_bytes", [](const std::string& t, std::uint64_t cols) { return q::ggml_row_bytes(ggml_type(t), cols); },
        "type"_a, "cols"_a);
  m.def("ggml_quantize", [](const std::string& t, std::uintptr_t src, const std::string& dtype, std::uint64_t rows,
                            std::uint64_t cols, std::uintptr_t out) {
        auto type = ggml_type(t);
        auto in = matrix(src, dtype, rows, cols);
        nb::gil_scoped_release release;
        q::ggml_quantize(type, in, ptr<std::uint8_t>(out));
      }, "type"_a, "src"_a, "dtype"_a, "rows"_a, "cols"_a, "out"_a);
  m.def("ggml_dequantize", [](const std::string& t, std::uintptr_t src, std::uint64_t rows, std::uint64_t cols,
                              std::uintptr_t out) {
        auto type = ggml_type(t);
        nb::gil_scoped_release release;
        q::ggml_dequantize(type, ptr<const std::uint8_t>(src), rows, cols, ptr<float>(out));
      }, "type"_a, "src"_a, "rows"_a, "cols"_a, "out"_a);
  m.def("int_quantize", [](std::uintptr_t src, const std::string& dtype, std::uint64_t rows, std::uint64_t cols,
                           unsigned bits, std::uint64_t group_size, bool symmetric, std::uintptr_t codes,
                           std::uintptr_t scales, std::uintptr_t zero_points) {
        auto in = matrix(src, dtype, rows, cols);
        q::IntParams p{bits, static_cast<std::size_t>(group_size), symmetric};
        nb::gil_scoped_release release;
        q::int_quantize(in, p, ptr<std::int8_t>(codes), ptr<void>(scales), ptr<std::int8_t>(zero_points));
      }, "src"_a, "dtype"_a, "rows"_a, "cols"_a, "bits"_a, "group_size"_a, "symmetric"_a, "codes"_a, "scales"_a,
      "zero_points"_a);
  m.def("int_dequantize", [](std::uintptr_t codes, std::uintptr_t scales, const std::string& scale_dtype,
                             std::uintptr_t zero_points, std::uint64_t rows, std::uint64_t cols,
                             std::uint64_t group_size, std::uintptr_t out) {
        auto sd = float_dtype(scale_dtype);
        nb::gil_scoped_release release;
        q::int_dequantize(ptr<const std::int8_t>(codes), ptr<const void>(scales), sd,
                          ptr<const std::int8_t>(zero_points), rows, cols, group_size, ptr<float>(out));
      }, "codes"_a, "scales"_a, "scale_dtype"_a, "zero_points"_a, "rows"_a, "cols"_a, "group_size"_a, "out"_a);
  m.def("int_dequantize_packed", [](std::uintptr_t packed, unsigned bits, std::uintptr_t scales,
                                    const std::string& scale_dtype, std::uintptr_t zero_points, std::uint64_t rows,
                                    std::uint64_t cols, std::uint64_t group_size, std::uintptr_t out) {
        auto sd = float_dtype(scale_dtype);
        nb::gil_scoped_release release;
        q::int_dequantize_packed(ptr<const std::int32_t>(packed), bits, ptr<const void>(scales), sd,
                                 ptr<const std::int8_t>(zero_points), rows, cols, group_size, ptr<float>(out));
      }, "packed"_a, "bits"_a, "scales"_a, "scale_dtype"_a, "zero_points"_a, "rows"_a, "cols"_a, "group_size"_a,
      "out"_a);
  m.def("packed_words", [](std::uint64_t cols, unsigned bits) { return q::packed_words(cols, bits); }, "cols"_a, "bits"_a);
  m.def("pack_int32", [](std::uintptr_t codes, std::uint64_t rows, std::uint64_t cols, unsigned bits, std::uintptr_t out) {
        nb::gil_scoped_release release;
        q::pack_int32(ptr<const std::int8_t>(codes), rows, cols, bits, ptr<std::int32_t>(out));
      }, "codes"_a, "rows"_a, "cols"_a, "bits"_a, "out"_a);
  m.def("unpack_int32", [](std::uintptr_t packed, std::uint64_t rows, std::uint64_t cols, unsigned bits, std::uintptr_t out) {
        nb::gil_scoped_release release;
        q::unpack_int32(ptr<const std::int32_t>(packed), rows, cols, bits, ptr<std::int8_t>(out));
      }, "packed"_a, "rows"_a, "cols"_a, "bits"_a, "out"_a);
  m.def("fp8_scale_count", [](const std::string& g, std::uint64_t rows, std::uint64_t cols) {
        return q::fp8_scale_count(fp8_granularity(g), rows, cols);
      }, "granularity"_a, "rows"_a, "cols"_a);
  m.def("fp8_quantize", [](std::uintptr_t src, const std::string& dtype, std::uint64_t rows, std::uint64_t cols,
                           const std::string& g, std::uintptr_t out, std::uintptr_t scales) {
        auto in = matrix(src, dtype, rows, cols);
        auto gran = fp8_granularity(g);
        nb::gil_scoped_release release;
        q::fp8_quantize(in, gran, ptr<std::uint8_t>(out), ptr<void>(scales));
      }, "src"_a, "dtype"_a, "rows"_a, "cols"_a, "granularity"_a, "out"_a, "scales"_a);
  m.def("fp8_dequantize", [](std::uintptr_t src, std::uintptr_t scales, const std::string& scale_dtype,
                             const std::string& g, std::uint64_t rows, std::uint64_t cols, std::uintptr_t out) {
        auto sd = float_dtype(scale_dtype);
        auto gran = fp8_granularity(g);
        nb::gil_scoped_release release;
        q::fp8_dequantize(ptr<const std::uint8_t>(src), ptr<const void>(scales), sd, gran, rows, cols, ptr<float>(out));
      }, "src"_a, "scales"_a, "scale_dtype"_a, "granularity"_a, "rows"_a, "cols"_a, "out"_a);
  m.def("nf4_code_values", []() {
        std::vector<float> v(q::nf4_code_values(), q::nf4_code_values() + 16);
        return v;
      });
  m.def("nf4_quantize", [](std::uintptr_t src, const std::string& dtype, std::uint64_t rows, std::uint64_t cols,
                           std::uintptr_t out, std::uintptr_t absmax) {
        auto in = matrix(src, dtype, rows, cols);
        nb::gil_scoped_release release;
        q::nf4_quantize(in, ptr<std::uint8_t>(out), ptr<float>(absmax));
      }, "src"_a, "dtype"_a, "rows"_a, "cols"_a, "out"_a, "absmax"_a);
  m.def("nf4_dequantize", [](std::uintptr_t src, std::uintptr_t absmax, std::uint64_t n, std::uintptr_t out) {
        nb::gil_scoped_release release;
        q::nf4_dequantize(ptr<const std::uint8_t>(src), ptr<const float>(absmax), n, ptr<float>(out));
      }, "src"_a, "absmax"_a, "n"_a, "out"_a);
  m.def("quality", [](std::uintptr_t ref, const std::string& ref_dtype, std::uintptr_t cand,
                      const std::string& cand_dtype, std::uint64_t n) {
        auto rd = float_dtype(ref_dtype), cd = float_dtype(cand_dtype);
        q::Quality r;
        {
          nb::gil_scoped_release release;
          r = q::quality(ptr<const void>(ref), rd, ptr<const void>(cand), cd, n);
        }
        return nb::make_tuple(r.cosine, r.sqnr_db, r.rmse, r.max_abs_err);
      }, "reference"_a, "ref_dtype"_a, "candidate"_a, "cand_dtype"_a, "n"_a,
      "(cosine, sqnr_db, rmse, max_abs_err) of two equally long float arrays.");
}

using Specs = std::vector<std::tuple<std::string, std::string, std::vector<std::uint64_t>, std::uintptr_t, std::uint64_t>>;
using MetaArg = std::optional<std::vector<std::pair<std::string, std::string>>>;

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "fastensors C++ core (private: import fastensors instead)";
  m.attr("__version__") = FASTENSORS_VERSION;
  m.attr("MAX_HEADER_SIZE") = fst::kMaxHeaderSize;

  nb::register_exception_translator(translate_error);
  m.def("_set_error_classes", [](nb::dict classes) {
        Py_XDECREF(g_error_classes);
        g_error_classes = classes.inc_ref().ptr();
      }, "classes"_a,
        "Install the Python exception class (or factory) for each error code name.");
  m.def("error_codes", []() {
    std::vector<std::string> out;
    for (int c = 0; c <= static_cast<int>(fst::ErrorCode::FileChanged); ++c) {
      out.emplace_back(fst::error_code_name(static_cast<fst::ErrorCode>(c)));
    }
    return out;
  });

  m.def("dtype_names", []() {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < fst::kDtypeCount; ++i) out.emplace_back(fst::dtype_name(fst::all_dtypes()[i]));
    return out;
  }, "All safetensors dtype names, in the writer's sort order (ascending).");
  m.def("dtype_bits", [](const std::string& name) { return fst::dtype_bits(dtype_or_throw(name, {})); }, "name"_a);

  nb::class_<PyFile>(m, "File")
      .def("__init__", [](PyFile* self, const std::string& path, const std::string& backend) {
            fst::Backend b = fst::parse_backend(backend);
            std::shared_ptr<fst::File> f;
            {
              nb::gil_scoped_release release;
              f = fst::File::open(path, b);
            }
            new (self) PyFile{f, nb::none()};
            auto* holder = new std::shared_ptr<fst::File>(f);
            self->owner = nb::capsule(holder, [](void* p) noexcept {
              delete static_cast<std::shared_ptr<fst::File>*>(p);
            });
          }, "path"_a, "backend"_a = "mmap")
      .def_prop_ro("path", [](const PyFile& s) { return s.get().path(); })
      .def_prop_ro("backend", [](const PyFile& s) {
            return std::string(s.get().backend() == fst::Backend::Mmap ? "mmap" : "pread");
          })
      .def_prop_ro("file_size", [](const PyFile& s) { return s.get().file_size(); })
      .def_prop_ro("header_size", [](const PyFile& s) { return s.get().header().header_size; })
      .def_prop_ro("data_start", [](const PyFile& s) { return s.get().header().data_start; })
      .def_prop_ro("closed", [](const PyFile& s) { return !s.file; })
      .def("keys", [](const PyFile& s) { return s.get().keys(); }, "Tensor names, sorted.")
      .def("offset_keys", [](const PyFile& s) { return s.get().offset_keys(); }, "Tensor names in file order.")
      .def("__len__", [](const PyFile& s) { return s.get().header().tensors.size(); })
      .def("__contains__", [](const PyFile& s, const std::string& k) { return s.get().header().find(k) != nullptr; })
      .def("metadata", [](const PyFile& s) { return metadata_dict(s.get().header()); },
           "The __metadata__ dict, or None when the header has none.")
      .def("info", [](const PyFile& s, const std::string& name) { return info_tuple(s.get().info(name)); },
           "name"_a, "(name, dtype, shape, begin, end) of one tensor.")
      .def("infos", [](const PyFile& s) {
            nb::list out;
            for (const auto& t : s.get().header().tensors) out.append(info_tuple(t));
            return out;
          }, "(name, dtype, shape, begin, end) of every tensor, in file order.")
      .def("view", [](const PyFile& s, const std::string& name) {
            const fst::File& f = s.get();
            const auto& t = f.info(name);
            std::uint8_t* p = f.data(t);
            if (p == nullptr) {
              throw fst::Error(fst::ErrorCode::InvalidArgument, "the pread backend has no mapping to view", f.path(), name);
            }
            std::size_t shape[1] = {static_cast<std::size_t>(t.nbytes())};
            return Bytes(p, 1, shape, s.owner);
          }, "name"_a, "A zero-copy uint8 view of a tensor's bytes in the mapping (mmap backend).")
      .def("read_into", [](const PyFile& s, const std::string& name, std::uint64_t offset, OutBytes out) {
            // Hold a reference while the GIL is released: another thread may close the handle.
            std::shared_ptr<fst::File> keep = s.file;
            if (!keep) s.get();  // throws "the file is closed"
            const auto& t = keep->info(name);
            nb::gil_scoped_release release;
            keep->read(t, offset, out.data(), out.shape(0));
          }, "name"_a, "offset"_a, "out"_a, "Copy bytes of a tensor, from `offset`, into `out` (either backend).")
      .def("prefetch", [](const PyFile& s, const std::string& name) {
            const fst::File& f = s.get();
            f.prefetch(f.info(name));
          }, "name"_a)
      .def("release", [](const PyFile& s, const std::string& name) {
            const fst::File& f = s.get();
            f.release(f.info(name));
          }, "name"_a,
          "Drop this process's pages of a tensor (mmap backend): they are read again from the file when "
          "next touched; writes through views of them are lost.")
      .def("close", [](PyFile& s) {
            s.file.reset();
            s.owner = nb::none();
          }, "Release this handle; views already taken stay valid.");

  m.def("parse_buffer", [](nb::bytes data) {
        fst::Header h;
        {
          const auto* p = reinterpret_cast<const std::uint8_t*>(data.c_str());
          std::size_t n = data.size();
          nb::gil_scoped_release release;
          h = fst::parse_buffer(p, n, "<bytes>");
        }
        nb::list infos;
        for (const auto& t : h.tensors) infos.append(info_tuple(t));
        return nb::make_tuple(infos, metadata_dict(h), h.data_start);
      }, "data"_a, "Validate an in-memory file; returns (infos in file order, metadata or None, data_start).");

  m.def("write_file", [](const std::string& path, const Specs& specs, const MetaArg& metadata, bool durable) {
        auto sources = to_sources(specs);
        fst::WriteOptions opts;
        opts.durable = durable;
        nb::gil_scoped_release release;
        fst::write_file(path, sources, metadata.value_or(fst::Metadata{}), metadata.has_value(), opts);
      }, "path"_a, "specs"_a, "metadata"_a.none(), "durable"_a,
      "Write tensors [(name, dtype, shape, data_ptr, nbytes)] atomically. The caller keeps the buffers alive.");

  m.def("write_file_streaming", [](const std::string& path, const Specs& specs, const MetaArg& metadata,
                                   bool durable, nb::object fill, bool keep_order) {
        std::vector<fst::TensorSource> sources = to_sources(specs);  // data pointers unused: fill gives them
        fst::WriteOptions opts;
        opts.durable = durable;
        // Runs on the writing thread: take the GIL, let Ctrl-C cancel.
        fst::TensorFill produce = [&fill](std::size_t index) {
          nb::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) throw nb::python_error();
          auto got = nb::cast<std::pair<std::uintptr_t, std::uint64_t>>(fill(index));
          return std::pair<const void*, std::uint64_t>(reinterpret_cast<const void*>(got.first), got.second);
        };
        nb::gil_scoped_release release;
        fst::write_file_streaming(path, sources, metadata.value_or(fst::Metadata{}), metadata.has_value(),
                                  produce, opts, keep_order);
      }, "path"_a, "specs"_a, "metadata"_a.none(), "durable"_a, "fill"_a, "keep_order"_a = false,
      "Write tensors [(name, dtype, shape, 0, nbytes)] atomically, asking fill(index) -> (data_ptr, nbytes) "
      "for each in file order (the reference order, or the order of specs with keep_order); the buffer must "
      "stay alive until the next call.");

  m.def("serialize", [](const Specs& specs, const MetaArg& metadata) {
        auto sources = to_sources(specs);
        std::string out;
        {
          nb::gil_scoped_release release;
          out = fst::serialize(sources, metadata.value_or(fst::Metadata{}), metadata.has_value());
        }
        return nb::bytes(out.data(), out.size());
      }, "specs"_a, "metadata"_a.none(), "The bytes write_file would produce.");

  m.def("plan_header_in_order", [](const Specs& specs, const MetaArg& metadata) {
        auto sources = to_sources(specs);
        std::string out;
        {
          nb::gil_scoped_release release;
          out = fst::plan_header_in_order(sources, metadata.value_or(fst::Metadata{}), metadata.has_value()).bytes;
        }
        return nb::bytes(out.data(), out.size());
      }, "specs"_a, "metadata"_a.none(),
      "The header (length + JSON + padding) for tensors [(name, dtype, shape, 0, nbytes)] kept in this order.");

  bind_quant(m);

  m.def("default_durable", &fst::WriteOptions::default_durable,
        "True unless FASTENSORS_DURABLE=0 is set in the environment.");

  // -- dtype conversion (docs/dtypes.md) ---------------------------------------
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
  m.def("convert", [](AnyArray src, const std::string& from, OutBytes dst, const std::string& to,
                      const std::optional<std::string>& isa, int threads, const std::optional<bool>& stream) {
        const fst::Dtype f = dtype_or_throw(from, {});
        const fst::Dtype t = dtype_or_throw(to, {});
        if (src.itemsize() * 8 != fst::dtype_bits(f)) {
          throw fst::Error(fst::ErrorCode::InvalidArgument, "the source's item size does not match " + from);
        }
        std::vector<std::int64_t> shape(src.ndim()), strides(src.ndim());
        for (std::size_t i = 0; i < src.ndim(); ++i) {
          shape[i] = static_cast<std::int64_t>(src.shape(i));
          strides[i] = src.stride(i) * static_cast<std::int64_t>(src.itemsize());
        }
        const fst::ConvertOptions opt = convert_options(isa, threads, stream);
        nb::gil_scoped_release release;
        fst::convert_strided(f, src.data(), shape, strides, t, dst.data(), dst.shape(0), opt);
      }, "src"_a, "from_dtype"_a, "dst"_a, "to_dtype"_a, "isa"_a.none() = nb::none(), "threads"_a = 0,
      "stream"_a.none() = nb::none(),
      "Convert `src` (an unsigned-integer view of the source, any strides) into the contiguous bytes `dst`; "
      "stream=False for a freshly allocated `dst`.");

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
        return nb::make_tuple(r.file_size, r.data_size, r.converted, r.copied);
      }, "src"_a, "dst"_a, "targets"_a, "durable"_a, "progress"_a.none(), "chunk_bytes"_a = 0,
      "Write `dst` with the tensors of `src`, those in targets [(name, dtype)] converted; returns "
      "(file_size, data_size, converted, copied).");
}
