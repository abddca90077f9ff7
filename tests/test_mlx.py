"""fastensors.mlx against the reference's safetensors.mlx on the same files
(tests/framework_checks.py), in both directions: files written by each are
read by the other. The reference's own mlx tests skip off macOS; these run
wherever the mlx wheel installs (Linux has a CPU one)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import framework_checks as fc

mx = fc.import_alone("mlx.core", ())

import fastensors.mlx as fmx  # noqa: E402
from fastensors.format.frameworks import MlxFramework  # noqa: E402

ref = pytest.importorskip("safetensors.mlx")


def to_numpy(a):
    if a.dtype == mx.bfloat16:  # numpy's buffer protocol has no bfloat16
        return np.asarray(a.view(mx.uint16)).view(ml_dtypes.bfloat16)
    return np.asarray(a)


H = fc.Hooks("mlx", fmx, ref, to_numpy, MlxFramework.codes, narrowed={"F64": np.float32})


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_every_dtype_loads_bit_exact(tmp_path, backend):
    fc.check_every_dtype_loads_bit_exact(H, tmp_path, backend)


def test_f64_narrows_as_mx_array_does(tmp_path):
    tensors = fc.write_all(tmp_path / "d.safetensors", ["F64"])
    got = fmx.load_file(tmp_path / "d.safetensors")
    for name, want in tensors.items():
        assert got[name].dtype == mx.array(want).dtype
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(mx.array(want)))


def test_matches_the_reference(tmp_path):
    fc.check_matches_the_reference(H, tmp_path)


def test_both_directions_with_the_reference(tmp_path):
    arrays = {"w": mx.arange(12, dtype=mx.float32).reshape(3, 4), "i": mx.arange(5, dtype=mx.int32),
              "u": mx.arange(7, dtype=mx.uint16), "c": mx.zeros((3,), mx.complex64), "b": mx.array([True, False])}
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    fmx.save_file(arrays, ours)
    ref.save_file(dict(arrays), theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    pairs = [(fmx.load_file(theirs), ref.load_file(ours)), (fmx.load(theirs.read_bytes()), ref.load(ours.read_bytes()))]
    for a, b in pairs:
        assert sorted(a) == sorted(b) == sorted(arrays)
        for k in arrays:
            assert a[k].dtype == b[k].dtype == arrays[k].dtype
            assert fc.bits(to_numpy(a[k])) == fc.bits(to_numpy(b[k])) == fc.bits(to_numpy(arrays[k]))


def test_bfloat16_round_trips(tmp_path):
    """The reference cannot save mlx bfloat16 (numpy has no bfloat16 buffer
    format); ours does, bit-exact, and reads the reference's numpy-written bf16."""
    a = mx.random.uniform(shape=(8, 8)).astype(mx.bfloat16)
    back = fmx.load(fmx.save({"a": a}))["a"]
    assert back.dtype == mx.bfloat16 and fc.bits(to_numpy(back)) == fc.bits(to_numpy(a))


def test_safe_open_and_slices(tmp_path):
    fc.check_safe_open_and_slices(H, tmp_path)


def test_unsupported_dtypes_raise(tmp_path):
    fc.check_unsupported_dtypes_raise(H, tmp_path)


def test_bad_arguments_raise(tmp_path):
    fc.check_bad_arguments_raise(H, tmp_path, np.zeros(3))


def test_arrays_are_copies(tmp_path):
    assert not fc.shares_the_mapping(H, tmp_path, aligned=True)


def test_layout_round_trip(tmp_path):
    fc.check_round_trip_through_the_layout(H, tmp_path, "flax")
