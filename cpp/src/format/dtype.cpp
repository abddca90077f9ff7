#include "fastensors/dtype.hpp"

#include <array>

namespace fastensors {
namespace {

struct DtypeRow {
  Dtype dtype;
  std::string_view name;
  unsigned bits;
  bool is_float;
};

// Indexed by the enum value.
constexpr std::array<DtypeRow, kDtypeCount> kTable{{
    {Dtype::BOOL, "BOOL", 8, false},
    {Dtype::F4, "F4", 4, true},
    {Dtype::F6_E2M3, "F6_E2M3", 6, true},
    {Dtype::F6_E3M2, "F6_E3M2", 6, true},
    {Dtype::U8, "U8", 8, false},
    {Dtype::I8, "I8", 8, false},
    {Dtype::F8_E5M2, "F8_E5M2", 8, true},
    {Dtype::F8_E4M3, "F8_E4M3", 8, true},
    {Dtype::F8_E8M0, "F8_E8M0", 8, true},
    {Dtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8, true},
    {Dtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8, true},
    {Dtype::I16, "I16", 16, false},
    {Dtype::U16, "U16", 16, false},
    {Dtype::F16, "F16", 16, true},
    {Dtype::BF16, "BF16", 16, true},
    {Dtype::I32, "I32", 32, false},
    {Dtype::U32, "U32", 32, false},
    {Dtype::F32, "F32", 32, true},
    {Dtype::C64, "C64", 64, false},
    {Dtype::F64, "F64", 64, true},
    {Dtype::I64, "I64", 64, false},
    {Dtype::U64, "U64", 64, false},
}};

constexpr bool table_in_enum_order() {
  for (std::size_t i = 0; i < kTable.size(); ++i) {
    if (static_cast<std::size_t>(kTable[i].dtype) != i) return false;
  }
  return true;
}
static_assert(table_in_enum_order(), "kTable must follow the Dtype declaration order");

constexpr std::array<Dtype, kDtypeCount> make_all() {
  std::array<Dtype, kDtypeCount> out{};
  for (std::size_t i = 0; i < kTable.size(); ++i) out[i] = kTable[i].dtype;
  return out;
}
constexpr std::array<Dtype, kDtypeCount> kAll = make_all();

}  // namespace

std::string_view dtype_name(Dtype dtype) noexcept { return kTable[static_cast<std::size_t>(dtype)].name; }

unsigned dtype_bits(Dtype dtype) noexcept { return kTable[static_cast<std::size_t>(dtype)].bits; }

bool dtype_is_float(Dtype dtype) noexcept { return kTable[static_cast<std::size_t>(dtype)].is_float; }

std::optional<Dtype> parse_dtype(std::string_view name) noexcept {
  for (const auto& row : kTable) {
    if (row.name == name) return row.dtype;
  }
  return std::nullopt;
}

const Dtype* all_dtypes() noexcept { return kAll.data(); }

}  // namespace fastensors
