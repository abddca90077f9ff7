"""Hostile arguments for the public API: every function and class of the
``fastensors`` façade given wrong, short, huge or negative shapes, wrong
dtypes, non-contiguous and read-only arrays, short scales and zero points,
absurd group sizes, bad ``out=`` arrays, hostile indices, lying tensor specs,
hostile shard sizes and patterns, non-str metadata and keys of odd types.

Each case must succeed with a correct result (checked against an oracle
where there is one: numpy indexing, a plain call without ``out=``, reading
back what was written) or raise a ``fastensors.SafetensorError`` or the
standard exception that is the API's contract; never crash. The cases run in
batches in a subprocess (tests/hostile_worker.py), so a segfault or abort is
a failed test naming the case rather than a dead pytest. Property cases come
from hypothesis, derandomized and bounded; the ``slow`` variants run twenty
times as many. docs/security.md ("Hostile arguments") says how to run them
under AddressSanitizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "hostile_worker.py")

# batch -> [(family, examples)]: one subprocess per batch (importing the
# package costs seconds, so families share a process).
BATCHES = {
    "quantization": [("regressions", 1), ("quantized_tensor", 150), ("quantized_mutated", 150), ("quantize_args", 120),
                     ("quality_args", 60)],
    "conversion": [("convert_out", 150), ("convert_file_args", 60)],
    "reading": [("get_slice_indices", 200), ("safe_open_args", 100), ("read_plans", 80),
                ("checkpoint_read_into", 150)],
    "writing": [("serialize_specs", 120), ("numpy_save", 80), ("save_sharded_args", 80)],
    "tools": [("checkpoint_paths", 55), ("remap_args", 60), ("model_tools", 40)],
    "distributed": [("distributed_args", 80)],
    # the framework adapters: tensorflow and paddle abort in one process
    "frameworks": [("framework_adapters", 120)],
    "paddle": [("paddle_adapter", 60)],
    "sources": [("file_objects_and_urls", 80)],
    "gguf": [("gguf_args", 60)],
}
# Families that run only a few deterministic cases where their frameworks are
# missing (each adapter must then raise FrameworkNotInstalled): their floor.
FEW_CASES = {"framework_adapters": 6, "paddle_adapter": 2}
# Families whose successes have oracles that must have run at least once.
MUST_SUCCEED = {"quantized_tensor", "quantized_mutated", "quantize_args", "quality_args", "convert_out",
                "get_slice_indices", "serialize_specs", "numpy_save", "save_sharded_args", "model_tools",
                "distributed_args", "read_plans", "file_objects_and_urls", "gguf_args",
                "checkpoint_read_into"}


def run_worker(argv, timeout):
    """(returncode, reports, stderr) of one worker process."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=HERE)
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, reports, proc.stderr


def crash_message(rc: int, stderr: str) -> str:
    cases = [line for line in stderr.splitlines() if line.startswith("CASE ")]
    last = cases[-1][5:] if cases else "(before the first case)"
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
    return f"the worker died ({how}) while running: {last}\n{stderr[-3000:]}"


# Batches whose families need a package the core does not: skipped without it.
NEEDS = {"distributed": ["torch"], "gguf": ["gguf", "tokenizers", "torch", "transformers"]}


def check_batch(batch: str, scale: int, timeout: int) -> None:
    for module in NEEDS.get(batch, []):
        pytest.importorskip(module)
    families = [(name, n * scale) for name, n in BATCHES[batch]]
    rc, reports, stderr = run_worker([WORKER, ",".join(f"{name}:{n}" for name, n in families)], timeout)
    assert rc == 0, crash_message(rc, stderr)
    by_name = {r["family"]: r for r in reports}
    assert set(by_name) == {name for name, _ in families}, stderr[-3000:]
    problems = []
    for name, n in families:
        r = by_name[name]
        # hypothesis stops early once a small space is exhausted
        assert r["cases"] >= FEW_CASES.get(name, min(n, 10)), f"{name}: ran only {r['cases']} cases"
        if name in MUST_SUCCEED:
            assert r["succeeded"] > 0, f"{name}: no case succeeded, so no result was checked"
        problems += [f"[{name}] {f['case']}\n    -> {f['error']}" for f in r["failures"]]
    assert not problems, f"{len(problems)} hostile cases broke the contract:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("batch", sorted(BATCHES))
def test_hostile_arguments(batch):
    check_batch(batch, 1, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("batch", sorted(BATCHES))
def test_hostile_arguments_slow(batch):
    check_batch(batch, 20, timeout=3600)


def test_issue_repro_raises_in_a_fresh_process():
    """The report's exact case, alone: it used to kill the interpreter."""
    code = ("import numpy as np, fastensors\n"
            "from fastensors import QuantizedTensor\n"
            "try:\n"
            "    fastensors.dequantize(QuantizedTensor('q4_0', (4096, 4096), np.float32, np.zeros(18, np.uint8),"
            " None, None, 32))\n"
            "except fastensors.InvalidArgument as e:\n"
            "    print('raised:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, crash_message(proc.returncode, proc.stderr)
    assert "raised: data: expected 9437184 bytes for q4_0 4096x4096 (group 32), got 18" in proc.stdout


def test_a_crashing_case_is_reported_not_fatal():
    """The harness itself: a process killed by a signal is a failure that names the case."""
    code = "import sys, ctypes; sys.stderr.write('CASE read address 0\\n'); sys.stderr.flush(); ctypes.string_at(0)"
    rc, _reports, stderr = run_worker(["-c", code], timeout=60)
    assert rc != 0  # a signal, or AddressSanitizer's exit status under python/tools/asan_hostile.sh
    assert "read address 0" in crash_message(rc, stderr)
