"""Converting while reading: safe_open.get_tensor / get_tensors / get_slice
with ``dtype=``, and load_file(dtype=...) for numpy and torch."""

from __future__ import annotations

import tracemalloc
import warnings

import ml_dtypes
import numpy as np
import pytest

import fastensors
import fastensors.format.cast as convert_module
import fastensors.numpy as fst_np
from conftest import sample_array

BF16 = np.dtype(ml_dtypes.bfloat16)


def astype(a: np.ndarray, dt) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return a.astype(dt)


def bits(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a)
    return a.view(f"u{a.itemsize}").tobytes() if a.dtype.itemsize in (1, 2, 4, 8) else a.tobytes()


@pytest.fixture
def mixed_file(tmp_path):
    tensors = {
        "w_bf16": sample_array(BF16, (64, 33), seed=1),
        "w_f16": sample_array(np.float16, (5, 7, 3), seed=2),
        "w_f32": sample_array(np.float32, (100, 10), seed=3),
        "w_f64": sample_array(np.float64, (9,), seed=4),
        "w_e4m3": sample_array(ml_dtypes.float8_e4m3fn, (4, 16), seed=5),
        "w_e8m0": sample_array(ml_dtypes.float8_e8m0fnu, (12,), seed=6),
        "ids": sample_array(np.int64, (6,), seed=7),
        "mask": sample_array(np.bool_, (3, 3), seed=8),
        "count": sample_array(np.int32, (), seed=9),
        "empty": np.zeros((0, 4), np.float16),
    }
    path = tmp_path / "mixed.safetensors"
    fst_np.save_file(tensors, path)
    return str(path), tensors


@pytest.mark.parametrize("target", ["F32", "bf16", np.float16])
def test_get_tensor_with_dtype(mixed_file, backend, target):
    path, tensors = mixed_file
    want_dt = np.dtype({"F32": np.float32, "bf16": BF16}.get(target, target)) if isinstance(target, str) else np.dtype(target)
    with fastensors.safe_open(path, "np", backend=backend) as f:
        for name, src in tensors.items():
            code = fastensors.format.cast.dtype_code(src.dtype)
            tcode = fastensors.format.cast.dtype_code(want_dt)
            if not fastensors.format.cast.can_convert(code, tcode):
                with pytest.raises(fastensors.UnsupportedConversion, match=name):
                    f.get_tensor(name, dtype=target)
                continue
            got = f.get_tensor(name, dtype=target)
            assert got.dtype == want_dt and got.shape == src.shape
            assert bits(got) == bits(astype(src, want_dt)), name


def test_same_dtype_is_the_zero_copy_view(mixed_file):
    path, tensors = mixed_file
    with fastensors.safe_open(path, "np") as f:
        a = f.get_tensor("w_bf16", dtype="BF16")
        b = f.get_tensor("w_bf16")
    assert np.shares_memory(a, b)  # both views of the one mapping
    assert bits(a) == bits(tensors["w_bf16"])


def test_get_tensors_converts_only_floats(mixed_file, backend):
    path, tensors = mixed_file
    got = fst_np.load_file(path, backend=backend, dtype="f32")
    assert set(got) == set(tensors)
    for name, src in tensors.items():
        if src.dtype.kind in "iub":
            assert got[name].dtype == src.dtype and bits(got[name]) == bits(src), name
        else:
            assert got[name].dtype == np.float32 and bits(got[name]) == bits(astype(src, np.float32)), name


def test_load_file_bf16_keeps_integers(mixed_file):
    path, tensors = mixed_file
    # F64 and FP8 cannot go to BF16 in one rounding: a clear error, not a silent skip.
    with pytest.raises(fastensors.UnsupportedConversion, match="w_e4m3|w_f64"):
        fst_np.load_file(path, dtype="bf16")


@pytest.mark.parametrize(
    "index",
    [np.s_[:], np.s_[3], np.s_[::-2], np.s_[5:40:3, ::4], np.s_[..., 7], np.s_[-1, -1], np.s_[10:10], np.s_[None, 2:9]],
)
def test_get_slice_with_dtype(mixed_file, backend, index):
    path, tensors = mixed_file
    with fastensors.safe_open(path, "np", backend=backend) as f:
        sl = f.get_slice("w_bf16", dtype="f32")
        got = sl[index]
        assert sl.get_dtype() == "BF16"  # the stored dtype, as the reference reports it
    want = astype(np.asarray(tensors["w_bf16"][index]), np.float32)
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    assert bits(got) == bits(want)


def test_get_slice_unsupported_pair_fails_early(mixed_file):
    path, _ = mixed_file
    with fastensors.safe_open(path, "np") as f:
        with pytest.raises(fastensors.UnsupportedConversion, match="w_bf16"):
            f.get_slice("w_bf16", dtype="fp8_e4m3")
        with pytest.raises(fastensors.UnknownDtypeName):
            f.get_tensor("w_bf16", dtype="bf15")


def test_pread_converts_in_chunks(mixed_file, monkeypatch):
    path, tensors = mixed_file
    monkeypatch.setattr(convert_module, "_PREAD_CHUNK", 100)  # 50 BF16 elements per read
    with fastensors.safe_open(path, "np", backend="pread") as f:
        got = f.get_tensor("w_bf16", dtype="F32")
    assert bits(got) == bits(astype(tensors["w_bf16"], np.float32))


def test_conversion_reads_straight_from_the_mapping(tmp_path):
    # numpy reports its allocations to tracemalloc: converting a 16 MiB BF16
    # tensor to F32 allocates the 32 MiB result and nothing of the source's size.
    src = np.arange(8 << 20, dtype=np.float32).astype(BF16)
    path = tmp_path / "big.safetensors"
    fst_np.save_file({"w": src, "v": src.reshape(4096, 2048)}, path)
    with fastensors.safe_open(path, "np") as f:
        tracemalloc.start()
        try:
            a = f.get_tensor("w", dtype="F32")
            whole_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            b = f.get_slice("v", dtype="F32")[::2, 1::3]
            slice_peak = tracemalloc.get_traced_memory()[1] - a.nbytes
        finally:
            tracemalloc.stop()
    assert whole_peak < a.nbytes + (1 << 20)
    assert slice_peak < b.nbytes + (1 << 20)
    assert bits(b) == bits(astype(src.reshape(4096, 2048)[::2, 1::3], np.float32))


# -- torch -----------------------------------------------------------------------------


def test_torch_load_file_with_dtype(mixed_file, backend):
    torch = pytest.importorskip("torch")
    import fastensors.torch as fst_torch

    path, tensors = mixed_file
    got = fst_torch.load_file(path, backend=backend, dtype=torch.float32)
    for name, src in tensors.items():
        t = got[name]
        assert tuple(t.shape) == src.shape
        if src.dtype.kind in "iub":
            assert t.numpy().dtype == src.dtype and t.numpy().tobytes() == src.tobytes()
        else:
            assert t.dtype == torch.float32
            assert t.numpy().view(np.uint32).tobytes() == bits(astype(src, np.float32)), name


def test_torch_get_tensor_and_slice_bf16(mixed_file):
    torch = pytest.importorskip("torch")
    path, tensors = mixed_file
    with fastensors.safe_open(path, "pt") as f:
        t = f.get_tensor("w_f32", dtype=torch.bfloat16)
        s = f.get_slice("w_f32", dtype="bf16")[::3, 2:]
    assert t.dtype == torch.bfloat16 and s.dtype == torch.bfloat16
    want = astype(tensors["w_f32"], BF16)
    assert t.view(torch.int16).numpy().view(np.uint16).tobytes() == bits(want)
    assert s.view(torch.int16).numpy().view(np.uint16).tobytes() == bits(want[::3, 2:])
