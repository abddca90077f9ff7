"""Run the reference package's own test files against fastensors.

    python tests/reference_alias/run.py test_flax_comparison.py [test_tf_comparison.py ...]

Each file runs in its own pytest process (tensorflow and paddle abort when
imported into one process), with this directory's ``safetensors`` alias
package first on ``sys.path`` and, as the working directory, a scratch
directory holding ``tests/data/`` (where the reference's tests write).
The reference tests are found in ``$FASTENSORS_REFERENCE_TESTS``, else in
``../shared/reference-tests/safetensors`` beside the checkout; when they are
absent the runner says so and exits with status 3.

``--deselect NODE`` (repeatable) passes through to pytest; ``--known``
deselects the tests of ``KNOWN``: those that cannot pass on a CPU-only
machine and the deliberate differences documented in docs/format.md.
Exit status: 0 when every file passed, 1 when one failed, 3 when the
reference tests are absent."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Tests that cannot pass on a CPU-only machine, whatever the implementation,
# and the deliberate differences of fastensors (docs/format.md lists them).
KNOWN = {
    "test_paddle_comparison.py::WithOpenCase::test_paddle_tensor_gpu": "needs a GPU",
    "test_paddle_comparison.py::WithOpenCase::test_paddle_slice_gpu": "needs a GPU",
    "test_simple.py::ReadmeTestCase::test_numpy_slice":
        "get_slice indexes as numpy does: slice bounds are clipped and lists index rows, where the reference "
        "rejects both (its integer-index errors, which this test also checks, are matched: "
        "tests/test_fileobj_sources.py compares them with the reference's)",
}


def reference_dir() -> str:
    env = os.environ.get("FASTENSORS_REFERENCE_TESTS")
    return env if env else os.path.join(os.path.dirname(REPO), "shared", "reference-tests", "safetensors")


def run_file(ref: str, name: str, deselect, timeout: int) -> int:
    scratch = tempfile.mkdtemp(prefix="fastensors-reference-")
    os.makedirs(os.path.join(scratch, "tests", "data"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # The alias, not the real package, must be what the tests import.
    probe = subprocess.run([sys.executable, "-c", "import safetensors; assert safetensors.FASTENSORS_ALIAS"],
                           env=env, cwd=scratch, capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        print(f"{name}: the safetensors alias package was not imported:\n{probe.stderr}", flush=True)
        return 1
    args = [sys.executable, "-m", "pytest", os.path.join(ref, name), "-q", "-p", "no:cacheprovider",
            "--rootdir", scratch]
    if deselect:  # by test name: node ids depend on the rootdir
        args += ["-k", " and ".join(f"not {node.split('::')[-1]}" for node in deselect)]
    started = time.monotonic()
    try:
        rc = subprocess.run(args, env=env, cwd=scratch, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout} s", flush=True)
        return 1
    print(f"{name}: pytest exit status {rc} in {time.monotonic() - started:.1f} s", flush=True)
    return rc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="test files of the reference suite, e.g. test_flax_comparison.py")
    parser.add_argument("--deselect", action="append", default=[], help="a test id (FILE::CLASS::TEST) to skip")
    parser.add_argument("--known", action="store_true", help="also deselect the tests in KNOWN (no GPU)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per file")
    args = parser.parse_args(argv)
    ref = reference_dir()
    if not os.path.isdir(ref):
        print(f"the reference package's tests are absent: {ref} is not a directory (set"
              " FASTENSORS_REFERENCE_TESTS to the directory holding test_*.py)", flush=True)
        return 3
    deselect = list(args.deselect)
    if args.known:
        for node, why in KNOWN.items():
            print(f"deselected {node}: {why}", flush=True)
            deselect.append(node)
    failed = []
    for name in args.files:
        if not os.path.isfile(os.path.join(ref, name)):
            print(f"{name}: not in {ref}", flush=True)
            failed.append(name)
            continue
        mine = [d for d in deselect if d.split("::")[0] == name]
        # 5: every test was deselected or skipped (mlx off macOS) -- not a failure
        if run_file(ref, name, mine, args.timeout) not in (0, 5):
            failed.append(name)
    print(f"reference tests through the alias: {len(args.files) - len(failed)} of {len(args.files)} files passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
