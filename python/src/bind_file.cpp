// Reading: the File handle (mmap or pread backend) and parse_buffer.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <string>

#include "bind_common.h"

namespace fastensors_py {
namespace {

using namespace nb::literals;

using View = nb::ndarray<nb::numpy, std::uint8_t, nb::ndim<1>>;

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

}  // namespace

void init_file(nb::module_& m) {
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
            return View(p, 1, shape, s.owner);
          }, "name"_a, "A zero-copy uint8 view of a tensor's bytes in the mapping (mmap backend).")
      .def("read_into", [](const PyFile& s, const std::string& name, std::uint64_t offset, OutBytes out) {
            // Hold a reference while the GIL is released: another thread may close the handle.
            std::shared_ptr<fst::File> keep = s.file;
            if (!keep) s.get();  // throws "the file is closed"
            const auto& t = keep->info(name);
            nb::gil_scoped_release release;
            keep->read(t, offset, out.data(), out.shape(0));  // checks offset + size against the tensor
          }, "name"_a, "offset"_a, nb::arg("out").noconvert(),
          "Copy bytes of a tensor, from `offset`, into `out` (either backend).")
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

  // For sources read by ranges (file objects, URLs): the header is fetched
  // piecewise, so its two steps are bound apart.
  m.def("header_length", [](nb::bytes first8, std::uint64_t file_size, const std::string& label) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(first8.c_str());
        return fst::parse_header_length(p, first8.size(), file_size, label);
      }, "first8"_a, "file_size"_a, "label"_a,
      "The header length N from a file's first bytes (up to 8), checked against the file size.");
  m.def("parse_header", [](nb::bytes json, std::uint64_t file_size, const std::string& label) {
        fst::Header h;
        {
          const auto* p = reinterpret_cast<const std::uint8_t*>(json.c_str());
          std::size_t n = json.size();
          nb::gil_scoped_release release;
          h = fst::parse_header(p, n, file_size, label);
        }
        nb::list infos;
        for (const auto& t : h.tensors) infos.append(info_tuple(t));
        return nb::make_tuple(infos, metadata_dict(h), h.data_start);
      }, "json"_a, "file_size"_a, "label"_a,
      "Validate the N header bytes of a file of `file_size` bytes; returns (infos in file order, metadata or "
      "None, data_start).");
}

}  // namespace fastensors_py
