// Dtypes: the safetensors dtype table.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "bind_common.h"

namespace fastensors_py {

using namespace nb::literals;

fst::Dtype dtype_or_throw(const std::string& name, const std::string& tensor) {
  auto dt = fst::parse_dtype(name);
  if (!dt) throw fst::Error(fst::ErrorCode::UnknownDtype, "unknown dtype '" + name + "'", {}, tensor);
  return *dt;
}

void init_dtypes(nb::module_& m) {
  m.def("dtype_names", []() {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < fst::kDtypeCount; ++i) out.emplace_back(fst::dtype_name(fst::all_dtypes()[i]));
    return out;
  }, "All safetensors dtype names, in the writer's sort order (ascending).");
  m.def("dtype_bits", [](const std::string& name) { return fst::dtype_bits(dtype_or_throw(name, {})); }, "name"_a);
}

}  // namespace fastensors_py
