// Private to the library: checks shared by the kernels that take a level.
#pragma once

#include "fastensors/isa.hpp"

namespace fastensors::detail {

// Throws UnsupportedIsa, naming the usable levels, unless isa_supported(isa).
void require_isa(Isa isa);

}  // namespace fastensors::detail
