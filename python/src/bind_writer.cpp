// Writing: write_file, write_file_streaming, serialize, plan_header_in_order,
// and write_runs (positioned writes of a distributed save's pieces).
//
// A tensor's bytes arrive as a C-contiguous uint8 array (or None for a
// tensor without data); its size must be the spec's nbytes, which the
// library checks against dtype and shape. The arrays are held until the
// write is over.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bind_common.h"

namespace fastensors_py {
namespace {

using namespace nb::literals;

// [(name, dtype, shape, data: uint8 array | None, nbytes), ...]
using Spec = std::tuple<std::string, std::string, std::vector<std::uint64_t>, nb::object, std::uint64_t>;
using Specs = std::vector<Spec>;
using MetaArg = std::optional<std::vector<std::pair<std::string, std::string>>>;

// `data` as a byte array, without conversion: a copy of another dtype would
// hold other bytes. None gives an empty optional.
std::optional<Bytes> byte_array(nb::handle data, const std::string& what) {
  if (data.is_none()) return std::nullopt;
  Bytes out;
  if (!nb::try_cast<Bytes>(data, out, /*convert=*/false)) {
    bad_argument(what + ": the data must be a C-contiguous uint8 array on the CPU (or None), not " +
                 nb::cast<std::string>(nb::str(data.type())));
  }
  return out;
}

// Sources for the library; `held` keeps each array alive for the write. A
// tensor without data and nbytes > 0 is refused by the library where the
// bytes are read from the sources (write_file, serialize).
std::vector<fst::TensorSource> to_sources(const Specs& specs, std::vector<Bytes>& held) {
  std::vector<fst::TensorSource> out;
  out.reserve(specs.size());
  held.reserve(specs.size());
  for (const auto& s : specs) {
    fst::TensorSource t;
    t.name = std::get<0>(s);
    t.dtype = dtype_or_throw(std::get<1>(s), t.name);
    t.shape = std::get<2>(s);
    t.nbytes = std::get<4>(s);
    const std::string what = "tensor '" + t.name + "'";
    std::optional<Bytes> data = byte_array(std::get<3>(s), what);
    if (data) {
      if (data->size() != t.nbytes) {
        bad_argument(what + ": the data holds " + std::to_string(data->size()) + " bytes, the spec says " +
                     std::to_string(t.nbytes));
      }
      t.data = data->data();
      held.push_back(std::move(*data));
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

void init_writer(nb::module_& m) {
  m.def("default_durable", &fst::WriteOptions::default_durable,
        "True unless FASTENSORS_DURABLE=0 is set in the environment.");

  m.def("write_file", [](const std::string& path, const Specs& specs, const MetaArg& metadata, bool durable) {
        std::vector<Bytes> held;
        auto sources = to_sources(specs, held);
        fst::WriteOptions opts;
        opts.durable = durable;
        nb::gil_scoped_release release;
        fst::write_file(path, sources, metadata.value_or(fst::Metadata{}), metadata.has_value(), opts);
      }, "path"_a, "specs"_a, "metadata"_a.none(), "durable"_a,
      "Write tensors [(name, dtype, shape, data, nbytes)] atomically; data: a C-contiguous uint8 array of "
      "nbytes bytes (None when nbytes is 0).");

  m.def("write_file_streaming", [](const std::string& path, const Specs& specs, const MetaArg& metadata,
                                   bool durable, nb::object fill, bool keep_order) {
        std::vector<Bytes> held;
        std::vector<fst::TensorSource> sources = to_sources(specs, held);  // fill gives the bytes
        fst::WriteOptions opts;
        opts.durable = durable;
        // The array fill returned last: the writer reads it until the next call.
        std::optional<Bytes> current;
        // Runs on the writing thread: take the GIL, let Ctrl-C cancel.
        fst::TensorFill produce = [&fill, &current, &sources](std::size_t index) {
          nb::gil_scoped_acquire gil;
          if (PyErr_CheckSignals() != 0) throw nb::python_error();
          current.reset();
          current = byte_array(fill(index), "tensor '" + sources[index].name + "' (from fill)");
          if (!current) return std::pair<const void*, std::uint64_t>(nullptr, 0);
          return std::pair<const void*, std::uint64_t>(current->data(), current->size());
        };
        {
          nb::gil_scoped_release release;
          fst::write_file_streaming(path, sources, metadata.value_or(fst::Metadata{}), metadata.has_value(),
                                    produce, opts, keep_order);
        }
      }, "path"_a, "specs"_a, "metadata"_a.none(), "durable"_a, "fill"_a, "keep_order"_a = false,
      "Write tensors [(name, dtype, shape, None, nbytes)] atomically, asking fill(index) -> a C-contiguous "
      "uint8 array (None for no bytes) for each in file order (the reference order, or the order of specs "
      "with keep_order); the array is held until the next call.");

  m.def("serialize", [](const Specs& specs, const MetaArg& metadata) {
        std::vector<Bytes> held;
        auto sources = to_sources(specs, held);
        std::string out;
        {
          nb::gil_scoped_release release;
          out = fst::serialize(sources, metadata.value_or(fst::Metadata{}), metadata.has_value());
        }
        return nb::bytes(out.data(), out.size());
      }, "specs"_a, "metadata"_a.none(), "The bytes write_file would produce.");

  m.def("write_runs", [](int fd, std::uint64_t base, In<std::int64_t, nb::ndim<1>> starts, std::uint64_t length,
                         In<std::uint8_t, nb::ndim<1>> src) {
        const std::size_t n = starts.shape(0);
        std::uint64_t total = 0;
        if (fd < 0) bad_argument("fd must be an open file descriptor");
        if (mul(n, length, "runs") != src.shape(0)) {
          bad_argument(std::to_string(n) + " runs of " + std::to_string(length) + " bytes do not fill " +
                       std::to_string(src.shape(0)) + " bytes");
        }
        const std::int64_t* at = starts.data();
        constexpr std::uint64_t kMaxOffset = std::uint64_t{1} << 62;  // far below off_t's limit
        if (base > kMaxOffset || length > kMaxOffset - base) bad_argument("base and length lie outside a file");
        for (std::size_t i = 0; i < n; ++i) {
          if (at[i] < 0 || static_cast<std::uint64_t>(at[i]) > kMaxOffset - base - length) {
            bad_argument("run " + std::to_string(i) + " starts at " + std::to_string(at[i]) + ", outside a file");
          }
        }
        const auto* p = src.data();
        nb::gil_scoped_release release;
        // One syscall per run, no interpreter in between: a column piece of
        // a matrix is one short run per row.
        for (std::size_t i = 0; i < n; ++i) {
          std::uint64_t done = 0;
          while (done < length) {
            const ssize_t w = ::pwrite(fd, p + i * length + done, static_cast<std::size_t>(length - done),
                                       static_cast<off_t>(base + static_cast<std::uint64_t>(at[i]) + done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
              const int e = w < 0 ? errno : EIO;
              throw fst::Error(fst::ErrorCode::Io, std::string("pwrite failed: ") + std::strerror(e), {}, {}, e);
            }
            done += static_cast<std::uint64_t>(w);
          }
          total += length;
        }
        return total;
      }, "fd"_a, "base"_a, "starts"_a, "length"_a, "src"_a,
      "Write `src` (the runs back to back) at file offsets base + starts[i], `length` bytes each, by "
      "positioned writes with the GIL released; returns the bytes written. Io (with errno) on failure.");

  m.def("plan_header_in_order", [](const Specs& specs, const MetaArg& metadata) {
        std::vector<Bytes> held;
        auto sources = to_sources(specs, held);
        std::string out;
        {
          nb::gil_scoped_release release;
          out = fst::plan_header_in_order(sources, metadata.value_or(fst::Metadata{}), metadata.has_value()).bytes;
        }
        return nb::bytes(out.data(), out.size());
      }, "specs"_a, "metadata"_a.none(),
      "The header (length + JSON + padding) for tensors [(name, dtype, shape, None, nbytes)] kept in this order.");
}

}  // namespace fastensors_py
