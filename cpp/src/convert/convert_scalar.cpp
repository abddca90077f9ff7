// The scalar reference level: every supported pair, in plain C++.
#include <cstring>

#include "convert/convert_internal.h"
#include "convert/convert_scalar_internal.h"

namespace fastensors::detail {
namespace {

using u8 = std::uint8_t;
using u16 = std::uint16_t;
using u32 = std::uint32_t;
using u64 = std::uint64_t;

template <std::size_t Bytes>
void copy_kernel(const void* src, void* dst, std::size_t n, bool /*stream*/) noexcept {
  if (n != 0 && src != dst) std::memcpy(dst, src, n * Bytes);
}

}  // namespace

void add_scalar_kernels(KernelTable& t) {
  set_copy_kernels(t, {copy_kernel<1>, copy_kernel<2>, copy_kernel<4>, copy_kernel<8>});

  t.at(Dtype::BF16, Dtype::F32) = scalar_kernel<u16, u32, bf16_to_f32>;
  t.at(Dtype::F32, Dtype::BF16) = scalar_kernel<u32, u16, f32_to_bf16>;
  t.at(Dtype::F16, Dtype::F32) = scalar_kernel<u16, u32, f16_to_f32>;
  t.at(Dtype::F32, Dtype::F16) = scalar_kernel<u32, u16, f32_to_f16>;
  t.at(Dtype::F16, Dtype::BF16) = scalar_kernel<u16, u16, f16_to_bf16>;
  t.at(Dtype::BF16, Dtype::F16) = scalar_kernel<u16, u16, bf16_to_f16>;

  t.at(Dtype::F8_E4M3, Dtype::F32) = scalar_kernel<u8, u32, fp8_to_f32<E4M3>>;
  t.at(Dtype::F8_E5M2, Dtype::F32) = scalar_kernel<u8, u32, fp8_to_f32<E5M2>>;
  t.at(Dtype::F8_E4M3FNUZ, Dtype::F32) = scalar_kernel<u8, u32, fp8_to_f32<E4M3Fnuz>>;
  t.at(Dtype::F8_E5M2FNUZ, Dtype::F32) = scalar_kernel<u8, u32, fp8_to_f32<E5M2Fnuz>>;
  t.at(Dtype::F8_E8M0, Dtype::F32) = scalar_kernel<u8, u32, e8m0_to_f32>;
  t.at(Dtype::F32, Dtype::F8_E4M3) = scalar_kernel<u32, u8, f32_to_fp8<E4M3>>;
  t.at(Dtype::F32, Dtype::F8_E5M2) = scalar_kernel<u32, u8, f32_to_fp8<E5M2>>;
  t.at(Dtype::F32, Dtype::F8_E4M3FNUZ) = scalar_kernel<u32, u8, f32_to_fp8<E4M3Fnuz>>;
  t.at(Dtype::F32, Dtype::F8_E5M2FNUZ) = scalar_kernel<u32, u8, f32_to_fp8<E5M2Fnuz>>;
  t.at(Dtype::F32, Dtype::F8_E8M0) = scalar_kernel<u32, u8, f32_to_e8m0>;

  t.at(Dtype::F64, Dtype::F32) = scalar_kernel<u64, u32, f64_to_f32>;
  t.at(Dtype::F32, Dtype::F64) = scalar_kernel<u32, u64, f32_to_f64>;

  t.at(Dtype::BOOL, Dtype::F32) = scalar_kernel<u8, u32, bool_to_f32>;
  t.at(Dtype::U8, Dtype::F32) = scalar_kernel<u8, u32, int_to_f32<std::uint8_t>>;
  t.at(Dtype::I8, Dtype::F32) = scalar_kernel<std::int8_t, u32, int_to_f32<std::int8_t>>;
  t.at(Dtype::U16, Dtype::F32) = scalar_kernel<u16, u32, int_to_f32<std::uint16_t>>;
  t.at(Dtype::I16, Dtype::F32) = scalar_kernel<std::int16_t, u32, int_to_f32<std::int16_t>>;
  t.at(Dtype::U32, Dtype::F32) = scalar_kernel<u32, u32, int_to_f32<std::uint32_t>>;
  t.at(Dtype::I32, Dtype::F32) = scalar_kernel<std::int32_t, u32, int_to_f32<std::int32_t>>;
  t.at(Dtype::U64, Dtype::F32) = scalar_kernel<u64, u32, int_to_f32<std::uint64_t>>;
  t.at(Dtype::I64, Dtype::F32) = scalar_kernel<std::int64_t, u32, int_to_f32<std::int64_t>>;
}

}  // namespace fastensors::detail
