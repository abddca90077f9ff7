// The shared library's own translation unit. Its code comes from the static
// archive, linked whole (cpp/CMakeLists.txt); what it exports is what the
// public headers mark (fastensors/export.hpp).
#include "fastensors/version.hpp"
