// Which symbols the library exports. The library is compiled with hidden
// visibility; every public header wraps its declarations in these markers, so
// the shared variant exports exactly the public C++ API (and the C API's
// fst_* functions), never the JSON library or private detail:: code.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define FASTENSORS_EXPORT_BEGIN _Pragma("GCC visibility push(default)")
#define FASTENSORS_EXPORT_END _Pragma("GCC visibility pop")
#define FASTENSORS_API __attribute__((visibility("default")))
#else
#define FASTENSORS_EXPORT_BEGIN
#define FASTENSORS_EXPORT_END
#define FASTENSORS_API
#endif
