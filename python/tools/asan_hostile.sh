#!/usr/bin/env bash
# Build fastensors._core with AddressSanitizer and UBSan and run the
# hostile-argument and quantization tests against it (docs/security.md,
# "Hostile arguments"). Extra arguments go to pytest.
#
#   python/tools/asan_hostile.sh                 # tests/test_hostile_api.py tests/test_quant.py
#   python/tools/asan_hostile.sh -m slow tests/test_hostile_api.py
#
# PYTHON (default python3) must have the test dependencies installed; the
# instrumented extension is loaded from build/asan-py/pkg, never installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=$(command -v "${PYTHON:-python3}")
build=${BUILD_DIR:-$root/build/asan-py}
jobs=${JOBS:-2}

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
[ -f "$build/CMakeCache.txt" ] && generator=()
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASTENSORS_BUILD_PYTHON=ON \
  -DFASTENSORS_SANITIZE=ON -DFASTENSORS_INSTALL=OFF -DPython_EXECUTABLE="$py" >/dev/null
# Only the module: generating its stub would import it without the ASan runtime.
cmake --build "$build" --target _core -j "$jobs"

# A package directory: the Python sources with the instrumented extension.
pkg="$build/pkg"
rm -rf "$pkg"
mkdir -p "$pkg"
cp -r "$root/python/fastensors" "$pkg/fastensors"
find "$pkg/fastensors" -name '_core*.so' -delete
cp "$build"/python/src/_core*.so "$pkg/fastensors/"

# Python itself is not instrumented, so the runtime must be loaded first, and
# libstdc++ with it (ASan finds the real __cxa_throw when it starts; without
# it the first C++ exception aborts). Leaks are not checked (the interpreter
# keeps memory at exit); an allocation too large for ASan returns NULL (a
# MemoryError) rather than aborting.
cxx=${CXX:-c++}
export LD_PRELOAD="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=0:exitcode=99${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
"$py" -c "import fastensors, sys; assert fastensors.__file__.startswith('$pkg'), fastensors.__file__"
[ $# -gt 0 ] || set -- tests/test_hostile_api.py tests/test_quant.py
exec "$py" -m pytest -q -p no:cacheprovider "$@"
