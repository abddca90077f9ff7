// Errors: C++ fastensors::Error codes (and the binding's own argument
// errors) become the Python classes fastensors._errors installs.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "bind_common.h"

namespace fastensors_py {
namespace {

using namespace nb::literals;

// Python exception classes by error code, installed by fastensors._errors.
// A raw reference: a static nb::dict would be built before Python starts.
PyObject* g_error_classes = nullptr;

nb::handle class_for(const char* code, nb::handle fallback) {
  if (g_error_classes != nullptr) {
    if (PyObject* found = PyDict_GetItemString(g_error_classes, code)) return found;
  }
  return fallback;
}

// Messages and paths may hold bytes of a file name that is not UTF-8: they
// become surrogates, as os.fsdecode makes them, rather than a decode failure.
nb::object text(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (o == nullptr) throw nb::python_error();
  return nb::steal(o);
}

void raise(nb::object exc) { PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr()); }

// Checkpoint errors read in Python as they always did: the message alone,
// the tensor and path being attributes (checkpoint/reader.py wrote them so).
bool bare_message(fst::ErrorCode code) {
  switch (code) {
    case fst::ErrorCode::CheckpointNotFound:
    case fst::ErrorCode::AmbiguousCheckpoint:
    case fst::ErrorCode::InvalidIndex:
    case fst::ErrorCode::ShardNotFound:
    case fst::ErrorCode::TensorMissingFromShard:
    case fst::ErrorCode::UnlistedTensor:
    case fst::ErrorCode::TensorInMultipleShards: return true;
    default: return false;
  }
}

void translate_error(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const fst::Error& e) {
    nb::gil_scoped_acquire gil;
    std::string code(fst::error_code_name(e.code()));
    nb::handle cls = class_for(code.c_str(), PyExc_RuntimeError);
    // An entry is an exception class or a factory returning an instance.
    const std::string& message = bare_message(e.code()) ? e.message() : std::string(e.what());
    nb::object exc;
    if (e.errno_value() != 0) {
      // OSError-style arguments so .errno / .filename work.
      exc = cls(e.errno_value(), text(e.what()), e.path().empty() ? nb::none() : text(e.path()));
    } else {
      exc = cls(text(message));
    }
    if (!e.tensor().empty()) nb::setattr(exc, "tensor", text(e.tensor()));
    if (!e.path().empty()) nb::setattr(exc, "path", text(e.path()));
    raise(exc);
  } catch (const ArgumentError& e) {
    nb::gil_scoped_acquire gil;
    nb::handle cls = class_for(e.kind(), class_for("InvalidArgument", PyExc_ValueError));
    raise(cls(std::string(e.what())));
  }
}

}  // namespace

void init_errors(nb::module_& m) {
  nb::register_exception_translator(translate_error);
  m.def("_set_error_classes", [](nb::dict classes) {
        Py_XDECREF(g_error_classes);
        g_error_classes = classes.inc_ref().ptr();
      }, "classes"_a,
        "Install the Python exception class (or factory) for each error code name, and for the binding's "
        "own argument errors (InvalidArgument, InvalidOutput).");
  m.def("error_codes", []() {
    std::vector<std::string> out;
    for (int c = 0; c <= static_cast<int>(fst::kLastErrorCode); ++c) {
      out.emplace_back(fst::error_code_name(static_cast<fst::ErrorCode>(c)));
    }
    return out;
  });
}

}  // namespace fastensors_py
