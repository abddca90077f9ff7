#!/usr/bin/env bash
# Builds the source distribution and checks that it builds offline: the
# sdist (scikit-build-core's build_sdist), then a wheel from it with pip's
# index switched off, no build isolation (the build requirements must be
# installed already: pyproject's [build-system] requires) and, where the
# kernel allows it, no network at all (a new network namespace). Fails when
# the build would fetch anything: a dependency, a CMake download, a submodule.
#   python/tools/offline_sdist.sh OUTDIR
# Prints the wheel's path last.
set -euo pipefail
out=${1:?usage: offline_sdist.sh OUTDIR}
rm -rf "$out" && mkdir -p "$out/sdist" "$out/wheel"
python - "$out/sdist" <<'PY'
import sys
from scikit_build_core.build import build_sdist
build_sdist(sys.argv[1])
PY
sdist=$(ls "$out"/sdist/fastensors-*.tar.gz)
echo "sdist: $sdist ($(du -h "$sdist" | cut -f1))"
# What it must hold to build: the C++ sources, the CMake files, the bindings.
members=$(tar -tzf "$sdist")
for member in CMakeLists.txt cpp/CMakeLists.txt cpp/include/fastensors/fastensors.h python/src/CMakeLists.txt \
    python/fastensors/__init__.py pyproject.toml; do
  grep -qx "fastensors-[^/]*/$member" <<<"$members" || { echo "the sdist lacks $member" >&2; exit 1; }
done
export PIP_DISABLE_PIP_VERSION_CHECK=1
build=(python -m pip wheel --no-cache-dir --no-index --no-build-isolation --no-deps -w "$out/wheel" "$sdist")
if unshare -rn true 2>/dev/null; then
  echo "building without network (unshare -rn)"
  unshare -rn "${build[@]}"
else
  echo "building with pip's index off (no network namespace here)"
  "${build[@]}"
fi
ls "$out"/wheel/fastensors-*.whl
