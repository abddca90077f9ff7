"""fastensors' OpenMP kernels and torch's own OpenMP runtime in one process.

A wheel may carry its own copy of the OpenMP runtime (auditwheel bundles
libgomp under a new name) while torch loads another. Both must work in one
process, in either import order: each order runs torch's parallel matrix
product and fastensors' parallel quantization kernels, interleaved, in a
fresh interpreter, and the quantized bytes must be the same as in a process
without torch."""

import hashlib
import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")

_KERNELS = """
import hashlib, json, numpy as np
import fastensors
def kernels():
    x = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)  # 8 MiB: OpenMP threads
    h = hashlib.sha256()
    for scheme in ("q8_0", "q4_1", "int4", "nf4"):
        q = fastensors.quantize(x, scheme)
        h.update(np.ascontiguousarray(q.data).tobytes())
        if q.scales is not None:
            h.update(np.ascontiguousarray(q.scales).tobytes())
    return h.hexdigest()
"""

_TORCH = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
torch_sum = float((a @ a).sum())
"""

_ORDERS = {
    "fastensors only": _KERNELS + "out = [kernels()]\n",
    "torch first": _TORCH + _KERNELS + "out = [kernels()]\n" + _TORCH + "out.append(kernels())\n",
    "fastensors first": _KERNELS + "out = [kernels()]\n" + _TORCH + "out.append(kernels())\n" + _TORCH,
}


def _run(body: str) -> dict:
    body += (
        "maps = open('/proc/self/maps').read().split('\\n')\n"
        "omp = sorted({l.split()[-1].rsplit('/', 1)[-1] for l in maps if 'gomp' in l or 'libomp' in l or 'iomp' in l})\n"
        "print(json.dumps({'digests': out, 'openmp': omp}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_quantization_is_the_same_beside_torch_in_either_order():
    alone = _run(_ORDERS["fastensors only"])
    for order in ("torch first", "fastensors first"):
        got = _run(_ORDERS[order])
        assert got["digests"] == alone["digests"] * 2, (order, got)
        assert got["openmp"], f"{order}: no OpenMP runtime loaded at all"
