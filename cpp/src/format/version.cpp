// The library's own version, fixed when it was compiled.
#include "fastensors/version.hpp"

namespace fastensors {

const char* version() noexcept { return FASTENSORS_VERSION_STRING; }
int version_number() noexcept { return FASTENSORS_VERSION_NUMBER; }

}  // namespace fastensors
