"""Run the reference package's own Python tests against fastensors.

The tests (``safetensors`` 0.8, ``bindings/python/tests``) import the name
``safetensors``; ``alias/`` is a package of that name whose modules forward
every attribute to ``fastensors``, ``fastensors.numpy`` and
``fastensors.torch``. Each test file runs in its own process (the reference
notes that some frameworks cannot share one), from a scratch directory with
the ``tests/data/`` folder the tests write into.

Where the tests are: ``$FASTENSORS_REFERENCE_TESTS``, else
``../shared/reference-tests/safetensors`` beside the repository. When they
are absent this says so and exits 0, or 2 with ``--require``.

Deliberate differences (docs/format.md, "Differences from the reference")
are deselected below, each with its reason; everything else must pass.

Usage: python tests/reference_suite/run.py [--require] [FILE ...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The non-framework files; the framework comparisons run elsewhere.
FILES = [
    "test_simple.py", "test_handle.py", "test_pt_comparison.py", "test_pt_model.py",
    "test_pread_backend.py", "test_threadable.py", "test_multithreaded.py",
]

# test id -> why fastensors deliberately differs (docs/format.md lists them).
DESELECTED = {
    "test_simple.py::ReadmeTestCase::test_numpy_slice":
        "get_slice indexes as numpy does: slice bounds are clipped and lists index rows, where the reference "
        "rejects both (its integer-index errors, which this test also checks, are matched: "
        "tests/test_fileobj_sources.py compares them with the reference's)",
}

TIMEOUT_S = 600  # per file


def find_tests() -> str | None:
    env = os.environ.get("FASTENSORS_REFERENCE_TESTS")
    candidates = [env] if env else [os.path.join(os.path.dirname(REPO), "shared", "reference-tests", "safetensors")]
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "test_simple.py")):
            return c
    return None


def run_file(src: str, name: str, work: str) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(HERE, "alias"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", work,
            os.path.join(work, name)]
    for test_id in DESELECTED:
        if test_id.startswith(name + "::"):
            args += ["--deselect", test_id]  # node ids are relative to --rootdir
    print(f"---- {name}", flush=True)
    try:
        return subprocess.run(args, cwd=work, env=env, timeout=TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        print(f"{name}: still running after {TIMEOUT_S} s; stopped", flush=True)
        return 124


def main(argv: list) -> int:
    require = "--require" in argv
    names = [a for a in argv if not a.startswith("--")] or FILES
    src = find_tests()
    if src is None:
        print("reference tests ABSENT: set FASTENSORS_REFERENCE_TESTS to the folder of the reference "
              "package's bindings/python/tests; nothing was run", flush=True)
        return 2 if require else 0
    print(f"reference tests from {src}; deliberate differences deselected: {len(DESELECTED)}")
    for test_id, why in DESELECTED.items():
        print(f"  {test_id}: {why}")
    failed = []
    with tempfile.TemporaryDirectory(prefix="fastensors-reference-") as work:
        for name in os.listdir(src):
            if name.endswith(".py"):
                shutil.copy(os.path.join(src, name), work)
        os.makedirs(os.path.join(work, "tests", "data"), exist_ok=True)
        for name in names:
            rc = run_file(src, name, work)
            if rc not in (0,):
                failed.append(f"{name} (exit {rc})")
    if failed:
        print("reference tests FAILED: " + ", ".join(failed), flush=True)
        return 1
    print(f"reference tests passed: {len(names)} files", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
