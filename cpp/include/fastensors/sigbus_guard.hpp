// The SIGBUS guard: reads the library makes from a file mapping survive the
// file being truncated underneath (FileChanged instead of a killed process;
// docs/security.md). It installs a process-wide SIGBUS handler the first time
// a file is mapped, and passes every fault it does not own to the handler that
// was there before. An engine that owns its signal handlers can turn it off
// (docs/embedding.md, "Signals"): then no handler is ever installed, and a
// read of a mapping whose file shrank ends the process with SIGBUS, as with
// any plain mmap.
#pragma once

#include "fastensors/export.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

// Turns the guard on or off for files mapped from now on. Off before the
// first mapping means the handler is never installed; once installed it stays
// (removing it could drop a handler installed after it), guarding only the
// mappings registered while the guard was on. The default is on, unless the
// library was built with FASTENSORS_SIGBUS_GUARD=OFF or the environment sets
// FASTENSORS_SIGBUS_GUARD=0 (or 1) before the first mapping.
void set_sigbus_guard(bool enabled) noexcept;
bool sigbus_guard_enabled() noexcept;
// Whether this process's SIGBUS handler has been installed by the library.
bool sigbus_guard_installed() noexcept;

}  // namespace fastensors
FASTENSORS_EXPORT_END
