"""``get_slice(name)[idx]`` is numpy basic indexing of the full tensor."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastensors
import fastensors.numpy as fst_np
from conftest import BACKENDS, same_array, torch_bytes

try:
    import torch
except ImportError:  # the numpy half still runs
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
FRAMEWORKS = ["np", pytest.param("pt", marks=needs_torch)]

FULL = {
    "a3": np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6),
    "v": np.arange(7, dtype=np.int64) - 3,
    "s": np.array(2.5, np.float64),
    "z": np.zeros((0, 3), np.int16),
    "z2": np.zeros((3, 0, 2), np.uint8),
    "b": (np.arange(12) % 3 == 0).reshape(3, 4),
    "bf": np.linspace(-3, 3, 24, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3, 4),
    "f8": np.linspace(-3, 3, 10, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn).reshape(5, 2),
}

TORCH_OF = {} if torch is None else {
    np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64, np.dtype(np.float64): torch.float64,
    np.dtype(np.int16): torch.int16, np.dtype(np.uint8): torch.uint8, np.dtype(np.bool_): torch.bool,
    np.dtype(ml_dtypes.bfloat16): torch.bfloat16, np.dtype(ml_dtypes.float8_e4m3fn): torch.float8_e4m3fn,
}

s_ = np.s_
INDEXES = [
    s_[:], s_[...], s_[()], s_[0], s_[-1], s_[3], s_[-4],
    s_[1:3], s_[::2], s_[::-1], s_[::-2], s_[3:0:-1], s_[-1:-5:-2], s_[1::-1],
    s_[2:1], s_[5:5], s_[10:20], s_[-10:2], s_[-100:100], s_[:-10], s_[::7], s_[::-100],
    s_[..., 2], s_[..., ::-1], s_[..., -1, :], s_[1, ...], s_[1:3, ..., None],
    s_[None], s_[None, None], s_[:, None, 1], s_[None, ..., None],
    s_[1, 2], s_[1, 2, 3], s_[-1, -1, -1], s_[:, :, 0], s_[:, 1:4:2, ::-3],
    s_[::-2, ::3, -1], s_[0, ::-1, 1:5:3], s_[:, 2:2], s_[3, :0], s_[1:, 1:, 1:],
    s_[slice(None, None, 3), slice(-2, None), slice(None, -4, -1)],
]


@pytest.fixture(scope="module")
def sliced_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("slice") / "s.safetensors"
    fst_np.save_file(FULL, path)
    return path


def _numpy_ok(arr, idx):
    try:
        return arr[idx]
    except IndexError:
        return IndexError


def _check(f, framework, name, idx):
    expected = _numpy_ok(FULL[name], idx)
    sl = f.get_slice(name)
    if expected is IndexError:
        with pytest.raises(IndexError):
            sl[idx]
        return
    got = sl[idx]
    expected = np.asarray(expected)
    if framework == "np":
        assert isinstance(got, np.ndarray)
        assert same_array(got, expected), (name, idx)
    else:
        # torch: the same values as torch.from_numpy of numpy's result
        assert isinstance(got, torch.Tensor)
        assert got.dtype == TORCH_OF[expected.dtype]
        assert tuple(got.shape) == expected.shape, (name, idx)
        assert got.is_contiguous()
        assert torch_bytes(got) == np.ascontiguousarray(expected).tobytes(), (name, idx)
        if expected.dtype in (np.float32, np.int64, np.bool_, np.int16, np.uint8):
            assert torch.equal(got, torch.from_numpy(expected.copy())), (name, idx)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["a3", "v", "b", "bf", "f8", "z", "z2"])
def test_index_table(sliced_file, backend, framework, name):
    with fastensors.safe_open(sliced_file, framework, backend=backend) as f:
        for idx in INDEXES:
            _check(f, framework, name, idx)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_scalar_tensor(sliced_file, backend, framework):
    with fastensors.safe_open(sliced_file, framework, backend=backend) as f:
        sl = f.get_slice("s")
        assert sl.get_shape() == []
        for idx in (s_[()], s_[...], s_[None], s_[None, ...], s_[..., None]):
            _check(f, framework, "s", idx)
        with pytest.raises(IndexError):
            sl[0]
        with pytest.raises(IndexError):
            sl[:]
        with pytest.raises(TypeError):
            len(sl)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_ints(sliced_file, backend):
    with fastensors.safe_open(sliced_file, "np", backend=backend) as f:
        sl = f.get_slice("a3")
        for idx in (4, -5, 100, s_[0, 5], s_[:, -6], s_[..., 6], s_[1, 1, 1, 1]):
            with pytest.raises(IndexError):
                sl[idx]
        zero = f.get_slice("z")
        with pytest.raises(IndexError):
            zero[0]
        assert zero[1:].shape == (0, 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_and_dtype(sliced_file, backend):
    codes = {"a3": "F32", "v": "I64", "s": "F64", "z": "I16", "z2": "U8", "b": "BOOL", "bf": "BF16", "f8": "F8_E4M3"}
    with fastensors.safe_open(sliced_file, "np", backend=backend) as f, safetensors.safe_open(
        sliced_file, "np"
    ) as ref:
        for name, arr in FULL.items():
            sl = f.get_slice(name)
            assert sl.get_shape() == list(arr.shape) == ref.get_slice(name).get_shape()
            assert sl.get_dtype() == codes[name] == ref.get_slice(name).get_dtype()
            assert sl.shape == arr.shape
            assert sl.dtype == codes[name]
            if arr.ndim:
                assert len(sl) == arr.shape[0]


def test_matches_reference_on_what_it_supports(sliced_file):
    # the reference accepts positive steps and in-range slices only (fastensors follows numpy)
    cases = [s_[:], s_[1:3], s_[1], s_[..., 2], s_[:, 1:4, ::2], s_[-1], s_[1:3, ..., 2:5], s_[2:]]
    with fastensors.safe_open(sliced_file, "np") as f, safetensors.safe_open(sliced_file, "np") as ref:
        for idx in cases:
            assert same_array(f.get_slice("a3")[idx], ref.get_slice("a3")[idx]), idx
    if torch is None:
        return
    with fastensors.safe_open(sliced_file, "pt") as f, safetensors.safe_open(sliced_file, "pt") as ref:
        for idx in cases:
            a, b = f.get_slice("a3")[idx], ref.get_slice("a3")[idx]
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), idx


@needs_torch
def test_slices_are_contiguous_torch_tensors(sliced_file):
    with fastensors.safe_open(sliced_file, "pt") as f:
        t = f.get_slice("a3")[::-1, :, ::-2]
    assert t.is_contiguous()
    assert torch.equal(t, torch.from_numpy(np.ascontiguousarray(FULL["a3"][::-1, :, ::-2])))


def test_slicing_sub_byte_numpy(tmp_path, backend):
    codes = (np.arange(48) % 16).astype(np.uint8)
    f4 = codes.view(ml_dtypes.float4_e2m1fn).reshape(6, 8)
    f6 = (np.arange(24) % 64).astype(np.uint8).view(ml_dtypes.float6_e2m3fn).reshape(4, 6)
    p = tmp_path / "sub.safetensors"
    fst_np.save_file({"f4": f4, "f6": f6}, p)
    with fastensors.safe_open(p, "np", backend=backend) as f:
        for idx in (s_[:], s_[1:3], s_[::-1, 1::3], s_[2], s_[..., -1]):
            assert same_array(f.get_slice("f4")[idx], f4[idx]), idx
            assert same_array(f.get_slice("f6")[idx], f6[idx]), idx


# -- generated index expressions ---------------------------------------------------


def _int_or_none(lo, hi):
    return st.one_of(st.none(), st.integers(lo, hi))


def _slice_strategy(n):
    step = st.one_of(st.none(), st.integers(-n - 2, n + 2).filter(lambda s: s != 0))
    return st.builds(slice, _int_or_none(-n - 3, n + 3), _int_or_none(-n - 3, n + 3), step)


def _index_strategy(shape):
    per_axis = [st.one_of(_slice_strategy(n), st.integers(-n - 1, n)) for n in shape]

    @st.composite
    def build(draw):
        k = draw(st.integers(0, len(shape)))
        items = [draw(per_axis[i]) for i in range(k)]
        # sprinkle None and at most one Ellipsis
        for _ in range(draw(st.integers(0, 2))):
            items.insert(draw(st.integers(0, len(items))), None)
        if draw(st.booleans()):
            items.insert(draw(st.integers(0, len(items))), Ellipsis)
        if len(items) == 1 and draw(st.booleans()):
            return items[0]
        return tuple(items)

    return build()


@pytest.fixture(scope="module")
def handles(sliced_file):
    frameworks = ("np",) if torch is None else ("np", "pt")
    opened = {(fw, be): fastensors.safe_open(sliced_file, fw, backend=be) for fw in frameworks for be in BACKENDS}
    yield opened
    for h in opened.values():
        h.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_indexes(handles, data):
    name = data.draw(st.sampled_from(["a3", "v", "bf", "z2"]))
    idx = data.draw(_index_strategy(FULL[name].shape))
    for (fw, _be), f in handles.items():
        _check(f, fw, name, idx)
