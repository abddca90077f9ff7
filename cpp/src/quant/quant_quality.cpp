// Quality of a reconstruction against its reference: cosine similarity,
// signal-to-quantization-noise ratio, RMSE and the largest absolute error,
// in one pass over both arrays, accumulated in double.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "fastensors/error.hpp"
#include "fastensors/quant.hpp"
#include "io/mapping_guard_internal.h"
#include "quant/quant_internal.h"

namespace fastensors::quant {

using namespace quant_detail;

namespace {

inline double load(const void* p, Dtype d, std::size_t i) {
  switch (d) {
    case Dtype::F64: return static_cast<const double*>(p)[i];
    case Dtype::F32: return static_cast<const float*>(p)[i];
    case Dtype::F16: return f16_bits_to_f32(static_cast<const std::uint16_t*>(p)[i]);
    default: return bf16_bits_to_f32(static_cast<const std::uint16_t*>(p)[i]);
  }
}

void check(Dtype d, const char* which) {
  if (d != Dtype::F64 && d != Dtype::F32 && d != Dtype::F16 && d != Dtype::BF16) {
    throw Error(ErrorCode::InvalidArgument, std::string("quality: the ") + which +
                                                " must be F64, F32, F16 or BF16, not " + std::string(dtype_name(d)));
  }
}

}  // namespace

Quality quality(const void* reference, Dtype ref_dtype, const void* candidate, Dtype cand_dtype, std::size_t n) {
  const detail::GuardedInputs guard{reference, candidate};
  check(ref_dtype, "reference");
  check(cand_dtype, "candidate");
  double dot = 0, rr = 0, cc = 0, ee = 0, emax = 0;
#pragma omp parallel for schedule(static) reduction(+ : dot, rr, cc, ee) reduction(max : emax) if (n > (1u << 16))
  for (std::int64_t i = 0; i < to_i64(n); ++i) {
    const double a = load(reference, ref_dtype, static_cast<std::size_t>(i));
    const double b = load(candidate, cand_dtype, static_cast<std::size_t>(i));
    const double e = a - b;
    dot += a * b;
    rr += a * a;
    cc += b * b;
    ee += e * e;
    emax = std::max(emax, std::fabs(e));
  }
  Quality q;
  const double inf = std::numeric_limits<double>::infinity();
  if (rr > 0 && cc > 0) {
    q.cosine = dot / (std::sqrt(rr) * std::sqrt(cc));
  } else {
    q.cosine = (rr == 0 && cc == 0) ? 1.0 : 0.0;  // two zero vectors agree; one zero vector has no direction
  }
  if (ee == 0) {
    q.sqnr_db = inf;
  } else {
    q.sqnr_db = rr == 0 ? -inf : 10.0 * std::log10(rr / ee);
  }
  q.rmse = n ? std::sqrt(ee / static_cast<double>(n)) : 0.0;
  q.max_abs_err = emax;
  return q;
}

}  // namespace fastensors::quant
