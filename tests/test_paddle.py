"""fastensors.paddle against the reference's safetensors.paddle on the same
files (tests/framework_checks.py). paddle tensors share the mapping through
DLPack, at any alignment; the test of that claim fails if one is a copy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import framework_checks as fc

paddle = fc.import_alone("paddle", ("tensorflow",))

import fastensors  # noqa: E402
import fastensors.paddle as fpd  # noqa: E402
from fastensors.format.frameworks import PaddleFramework  # noqa: E402

ref = pytest.importorskip("safetensors.paddle")

# paddle hands bfloat16 and float8 out as same-width integers
_AS = {"bfloat16": ml_dtypes.bfloat16, "float8_e4m3fn": ml_dtypes.float8_e4m3fn, "float8_e5m2": ml_dtypes.float8_e5m2}


def to_numpy(t):
    a = t.numpy()
    name = str(t.dtype).split(".")[-1]
    return a.view(_AS[name]) if name in _AS else a


# The reference's paddle get_slice aborts the interpreter (inside paddle), so
# slices are checked against numpy indexing only.
H = fc.Hooks("paddle", fpd, ref, to_numpy, PaddleFramework.codes, reference_slices=False)


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_every_dtype_loads_bit_exact(tmp_path, backend):
    fc.check_every_dtype_loads_bit_exact(H, tmp_path, backend)


def test_matches_the_reference(tmp_path):
    fc.check_matches_the_reference(H, tmp_path)


def test_save_is_byte_identical(tmp_path):
    arrays = {"w": paddle.arange(12, dtype="float32").reshape([3, 4]),
              "h": paddle.ones([2, 2], dtype="float32").astype(paddle.bfloat16),
              "i": paddle.arange(5, dtype="int64"), "c": paddle.zeros([3], dtype="complex64")}
    fc.check_save_is_byte_identical(H, tmp_path, arrays)


def test_safe_open_and_slices(tmp_path):
    fc.check_safe_open_and_slices(H, tmp_path)


def test_unsupported_dtypes_raise(tmp_path):
    fc.check_unsupported_dtypes_raise(H, tmp_path)


def test_bad_arguments_raise(tmp_path):
    fc.check_bad_arguments_raise(H, tmp_path, np.zeros(3))
    with pytest.raises(fastensors.InvalidArgument, match="not contiguous"):
        fpd.save({"t": paddle.ones([4, 4]).transpose([1, 0])})


def test_tensors_share_the_mapping(tmp_path):
    assert fc.shares_the_mapping(H, tmp_path, aligned=True)
    assert fc.shares_the_mapping(H, tmp_path, aligned=False)


def test_shared_tensors_outlive_the_handle(tmp_path):
    path = tmp_path / "a.safetensors"
    want = np.arange(4096, dtype=np.float32)
    fastensors.numpy.save_file({"t": want}, path)
    with fastensors.safe_open(path, "paddle") as f:
        t = f.get_tensor("t")
    import gc

    gc.collect()
    np.testing.assert_array_equal((t + 1).numpy(), want + 1)


def test_zero_sized_and_scalars(tmp_path):
    fastensors.numpy.save_file({"e": np.zeros((2, 0), np.float32), "s": np.array(3.5, np.float32)},
                               tmp_path / "z.safetensors")
    got = fpd.load_file(tmp_path / "z.safetensors")
    assert list(got["e"].shape) == [2, 0] and list(got["s"].shape) == []
    assert float(got["s"]) == 3.5
    assert fpd.load(fpd.save({"e": got["e"]}))["e"].shape == [2, 0]


def test_layout_round_trip(tmp_path):
    fc.check_round_trip_through_the_layout(H, tmp_path, "flax")


def test_many_slices_freed_do_not_abort(tmp_path):
    """Tensors made with paddle's frombuffer (the reference's route) abort the
    process when some are freed; ours come through DLPack. In a child process,
    so an abort is this test failing rather than pytest dying."""
    import subprocess
    import sys

    path = tmp_path / "s.safetensors"
    fastensors.numpy.save_file({"a": np.arange(50, dtype=np.float32).reshape(10, 5)}, path)
    code = (f"import gc, fastensors, paddle\n"
            f"with fastensors.safe_open({str(path)!r}, 'paddle') as f:\n"
            f"    s = f.get_slice('a')\n"
            f"    for i in range(50):\n"
            f"        t = s[:, : 1 + i % 5]; u = s[i % 10]; del t, u; gc.collect()\n"
            f"print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
