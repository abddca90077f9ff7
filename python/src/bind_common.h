// Shared by the binding's translation units (private: not installed).
//
// The binding converts arguments, checks that every array is as large as the
// kernel will read or write, releases the GIL, calls the C++ library and
// converts results. No raw address crosses it: arrays arrive as typed,
// C-contiguous CPU nb::ndarray objects whose sizes are checked here, before
// any kernel runs.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "fastensors/fastensors.hpp"

namespace fastensors_py {

namespace nb = nanobind;
namespace fst = fastensors;

// A caller error the binding finds itself. `kind` names the Python class in
// the table fastensors._errors installs ("InvalidArgument", "InvalidOutput").
class ArgumentError : public std::exception {
 public:
  ArgumentError(const char* kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  const char* kind() const noexcept { return kind_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  const char* kind_;
  std::string message_;
};

[[noreturn]] inline void bad_argument(std::string message) {
  throw ArgumentError("InvalidArgument", std::move(message));
}
[[noreturn]] inline void bad_output(std::string message) { throw ArgumentError("InvalidOutput", std::move(message)); }

// a * b, or an InvalidArgument naming `what` when it does not fit 64 bits.
inline std::uint64_t mul(std::uint64_t a, std::uint64_t b, const std::string& what) {
  std::uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) bad_argument(what + ": the size overflows 64 bits");
  return r;
}

// Typed, C-contiguous CPU arrays: inputs (read-only accepted) and outputs.
template <typename T, typename... Extra>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu, Extra...>;
template <typename T, typename... Extra>
using Out = nb::ndarray<T, nb::c_contig, nb::device::cpu, Extra...>;
using Bytes = In<std::uint8_t>;
using OutBytes = Out<std::uint8_t, nb::ndim<1>>;

// Raw bit patterns of a float dtype the call names (F32 as uint32, F16/BF16
// as uint16, F64 as uint64): the item size must match that dtype.
using RawIn = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
using RawOut = nb::ndarray<nb::c_contig, nb::device::cpu>;

// One open file (fastensors._core.File). Views of the mapping hold `owner`
// (a capsule with its own reference to the File), so closing the handle
// never invalidates them.
struct PyFile {
  std::shared_ptr<fst::File> file;
  nb::object owner;

  const fst::File& get() const {
    if (!file) throw fst::Error(fst::ErrorCode::InvalidArgument, "the file is closed");
    return *file;
  }
};

fst::Dtype dtype_or_throw(const std::string& name, const std::string& tensor);

// Element count of `a` must be `expected`; else an InvalidArgument (or
// InvalidOutput for outputs) such as "scales: expected 131072 F16 values for
// int4 4096x4096 (group 32), got 12".
template <typename A>
void expect_size(const A& a, const char* name, std::uint64_t expected, const std::string& unit,
                 const std::string& context, bool output = false) {
  const std::uint64_t got = a.size();
  if (got == expected) return;
  std::string msg = std::string(name) + ": expected " + std::to_string(expected) + " " + unit + " for " + context +
                    ", got " + std::to_string(got);
  if (output) bad_output(msg);
  bad_argument(msg);
}

// The item size of a raw float array must be that of `dtype`.
template <typename A>
void expect_width(const A& a, const char* name, fst::Dtype dtype, bool output = false) {
  const std::size_t bits = fst::dtype_bits(dtype);
  if (a.itemsize() * 8 == bits) return;
  std::string msg = std::string(name) + ": " + std::string(fst::dtype_name(dtype)) + " values are " +
                    std::to_string(bits / 8) + "-byte items, the array has " + std::to_string(a.itemsize()) +
                    "-byte items";
  if (output) bad_output(msg);
  bad_argument(msg);
}

void init_errors(nb::module_& m);
void init_dtypes(nb::module_& m);
void init_file(nb::module_& m);
void init_writer(nb::module_& m);
void init_convert(nb::module_& m);
void init_quant(nb::module_& m);
void init_read(nb::module_& m);
void init_checkpoint(nb::module_& m);

}  // namespace fastensors_py
