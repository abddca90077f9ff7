// Checkpoints: locating a file, an index or a directory, and the C++
// Checkpoint that parses the index and checks each shard against it
// (fastensors/checkpoint.hpp). The Python Checkpoint (checkpoint/reader.py)
// wraps the shards it hands out in safe_open handles.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "bind_common.h"

namespace fastensors_py {
namespace {

using namespace nb::literals;

// Paths arrive as os.fsencode() bytes and leave as os.fsdecode() strings, so
// names that are not UTF-8 round-trip (surrogateescape) instead of failing.
std::string path_arg(const nb::bytes& path) {
  std::string out(path.c_str(), path.size());
  if (out.find('\0') != std::string::npos) bad_argument("embedded null byte");
  return out;
}

nb::str fs_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeFSDefaultAndSize(s.data(), static_cast<Py_ssize_t>(s.size()));
  if (o == nullptr) throw nb::python_error();
  return nb::steal<nb::str>(o);
}

struct PyCheckpoint {
  std::shared_ptr<fst::Checkpoint> ckpt;
};

}  // namespace

void init_checkpoint(nb::module_& m) {
  m.def("locate_checkpoint", [](const nb::bytes& path) {
        const std::string p = path_arg(path);
        fst::Located where;
        {
          nb::gil_scoped_release release;
          where = fst::locate_checkpoint(p);
        }
        return nb::make_tuple(where.is_index ? "index" : "file", fs_str(where.path));
      }, "path"_a,
      "(\"index\" or \"file\", path) for a file, an index or a directory holding one; CheckpointNotFound, "
      "AmbiguousCheckpoint.");

  nb::class_<PyCheckpoint>(m, "Checkpoint")
      .def("__init__", [](PyCheckpoint* self, const nb::bytes& path, const std::string& backend) {
            const std::string p = path_arg(path);
            const fst::Backend b = fst::parse_backend(backend);
            std::shared_ptr<fst::Checkpoint> c;
            {
              nb::gil_scoped_release release;
              c = fst::Checkpoint::open(p, b);
            }
            new (self) PyCheckpoint{std::move(c)};
          }, "path"_a, "backend"_a = "mmap",
          "Open a file, a directory or an index (os.fsencode()d path); the index is parsed and every entry "
          "checked.")
      .def_prop_ro("path", [](const PyCheckpoint& s) { return fs_str(s.ckpt->path()); })
      .def_prop_ro("directory", [](const PyCheckpoint& s) { return fs_str(s.ckpt->directory()); })
      .def_prop_ro("sharded", [](const PyCheckpoint& s) { return s.ckpt->sharded(); })
      .def_prop_ro("files", [](const PyCheckpoint& s) {
            nb::list out;
            for (const auto& f : s.ckpt->files()) out.append(fs_str(f));
            return out;
          }, "The files holding the tensors, in order of first appearance in the index.")
      .def_prop_ro("index_metadata_json", [](const PyCheckpoint& s) { return s.ckpt->index_metadata_json(); },
          "The index's \"metadata\" object as JSON text (\"{}\" when none).")
      .def("weight_map", [](const PyCheckpoint& s) {
            nb::list files;
            for (const auto& f : s.ckpt->files()) files.append(fs_str(f));
            nb::dict out;
            for (const auto& e : s.ckpt->entries()) out[nb::cast(e.first)] = files[e.second];
            return out;
          }, "{tensor: file} in index order (a single file: header order).")
      .def("shard", [](const PyCheckpoint& s, std::size_t file_index) {
            std::shared_ptr<const fst::File> f;
            {
              nb::gil_scoped_release release;
              f = s.ckpt->shard_file(file_index);
            }
            // A File handle sharing the shard: PyFile only calls const members.
            auto file = std::const_pointer_cast<fst::File>(f);
            auto* holder = new std::shared_ptr<fst::File>(file);
            nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<std::shared_ptr<fst::File>*>(p); });
            return PyFile{std::move(file), std::move(owner)};
          }, "file_index"_a,
          "Shard `file_index` of `files` as a File, opened and checked against the index on first use "
          "(ShardNotFound, UnlistedTensor, TensorMissingFromShard, TensorInMultipleShards).")
      .def("read_into", [](const PyCheckpoint& s, const std::string& name, OutBytes out,
                           const std::optional<std::vector<std::uint64_t>>& start,
                           const std::optional<std::vector<std::uint64_t>>& stop, const std::optional<std::string>& to) {
            std::optional<fst::Dtype> target;
            if (to) target = dtype_or_throw(*to, name);
            void* dst = out.data();
            const std::size_t size = out.shape(0);
            nb::gil_scoped_release release;
            const fst::TensorInfo& t = s.ckpt->info(name);
            fst::Box box = fst::whole_box(t);
            if (start) box.start = *start;
            if (stop) box.stop = *stop;
            const std::uint64_t need = fst::box_bytes(t, box, target);
            s.ckpt->read_box(name, box, need ? dst : nullptr, size, target);
            return need;
          }, "name"_a, nb::arg("out").noconvert(), "start"_a.none() = nb::none(), "stop"_a.none() = nb::none(),
          "to"_a.none() = nb::none(),
          "Read the box [start, stop) of tensor `name` (the whole tensor by default) into the bytes `out`, "
          "converted to dtype `to` when given, through the read engine; returns the bytes written. "
          "TensorNotFound, InvalidArgument (a box outside the tensor), SizeMismatch (`out` too small), "
          "UnsupportedConversion, Io, FileChanged.")
      .def("verify", [](const PyCheckpoint& s) {
            nb::gil_scoped_release release;
            s.ckpt->verify();
          }, "Open every shard and check it against the index.")
      .def("close", [](PyCheckpoint& s) { s.ckpt->close(); },
          "Drop the shards; File handles already given out stay open until closed.");
}

}  // namespace fastensors_py
