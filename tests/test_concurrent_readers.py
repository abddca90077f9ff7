"""Many threads reading, converting and quantizing from one open file at once,
and a file replaced by rename (by another process) while threads open and
read it: every reader sees exactly the data of the file it opened."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastensors as fst
import fastensors.numpy as fnp
import fastensors.quant as fq
from conftest import BACKENDS


def generation(g: int) -> np.ndarray:
    """Every value encodes g, so a reader can tell which file it read."""
    return ((g * 1000 + np.arange(64 * 256) % 512) * 0.5).astype(np.float32).reshape(64, 256)


def check_handle(f, g: int) -> None:
    want = generation(g)
    assert np.array_equal(f.get_tensor("w"), want)
    assert np.array_equal(f.get_tensor("w", dtype="bf16"), fst.convert(want, "bf16"))
    assert np.array_equal(f.get_slice("w", dtype="f16")[::3, 1::2], want[::3, 1::2].astype(np.float16))
    got, ref = fq.quantize(f.get_tensor("w"), "q8_0"), fq.quantize(want, "q8_0")
    assert np.array_equal(got.data, ref.data)


def run_threads(n: int, body) -> None:
    errors = []

    def wrapped(k):
        try:
            body(k)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_share_one_handle(tmp_path, backend):
    path = tmp_path / "shared.safetensors"
    fnp.save_file({"w": generation(3)}, path)
    with fst.safe_open(path, "np", backend=backend) as f:
        run_threads(8, lambda k: [check_handle(f, 3) for _ in range(10)])


WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import fastensors.numpy as fnp
    path, n = sys.argv[1], int(sys.argv[2])
    for g in range(1, n + 1):
        w = ((g * 1000 + np.arange(64 * 256) % 512) * 0.5).astype(np.float32).reshape(64, 256)
        fnp.save_file({"w": w}, path, durable=False)
        time.sleep(0.003)
""")


def test_readers_keep_their_file_while_another_process_replaces_it(tmp_path):
    path = tmp_path / "model.safetensors"
    fnp.save_file({"w": generation(0)}, path)
    generations = 25
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(generations)])
    seen = set()

    def reader(k):
        backend = BACKENDS[k % len(BACKENDS)]
        while writer.poll() is None:
            with fst.safe_open(path, "np", backend=backend) as f:
                g = int(f.get_slice("w")[0, 0] * 2) // 1000
                seen.add(g)
                check_handle(f, g)

    run_threads(4, reader)
    assert writer.wait() == 0
    assert len(seen) > 1  # the readers did overlap the replacements
    with fst.safe_open(path, "np") as f:
        check_handle(f, generations)
