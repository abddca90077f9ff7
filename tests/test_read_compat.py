"""Files written by the reference load the same through fastensors."""

from __future__ import annotations

import gc
import hashlib
import weakref

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy as ref_np

import fastensors
import fastensors.numpy as fst_np
from conftest import NUMPY_CODES, NUMPY_DTYPES, TORCH_DTYPES, same_array, same_tensor, sample_array, torch_sample

try:
    import torch

    import fastensors.torch as fst_pt
    import safetensors.torch as ref_pt
except ImportError:  # the numpy tests still run
    torch = fst_pt = ref_pt = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


@pytest.fixture(scope="module")
def np_file(tmp_path_factory):
    """A reference-written file with every numpy dtype, scalars and empties."""
    tensors = {}
    for i, dt in enumerate(NUMPY_DTYPES):
        tensors[f"{dt.name}.matrix"] = sample_array(dt, (3, 5), seed=i)
        tensors[f"{dt.name}.scalar"] = sample_array(dt, (), seed=50 + i)
        tensors[f"{dt.name}.empty"] = np.zeros((0, 4), dt)
    path = tmp_path_factory.mktemp("read") / "np.safetensors"
    ref_np.save_file(tensors, path, metadata={"format": "np", "note": "ünï"})
    return path, tensors


@pytest.fixture(scope="module")
def pt_file(tmp_path_factory):
    tensors = {}
    for i, name in enumerate(TORCH_DTYPES):
        tensors[f"{name}.w"] = torch_sample(name, (4, 6), seed=i)
        tensors[f"{name}.e"] = torch_sample(name, (0, 2))
        if name != "float4_e2m1fn_x2":
            tensors[f"{name}.s"] = torch_sample(name, (), seed=90 + i)
    path = tmp_path_factory.mktemp("read") / "pt.safetensors"
    ref_pt.save_file(tensors, path)
    return path, tensors


def test_numpy_safe_open_values(np_file, backend):
    path, tensors = np_file
    with fastensors.safe_open(path, framework="np", backend=backend) as f:
        assert f.keys() == sorted(tensors)
        assert f.metadata() == {"format": "np", "note": "ünï"}
        for name, expected in tensors.items():
            got = f.get_tensor(name)
            assert isinstance(got, np.ndarray)
            assert same_array(got, expected), name
            info = f.tensor_info(name)
            assert info.dtype == NUMPY_CODES[expected.dtype.name]
            assert info.shape == expected.shape
            assert info.data_offsets[1] - info.data_offsets[0] == expected.nbytes
            assert info.nbytes == expected.nbytes


def test_keys_offset_keys_match_reference(np_file, backend):
    path, _ = np_file
    with safetensors.safe_open(path, framework="np") as ref, fastensors.safe_open(
        path, framework="np", backend=backend
    ) as ours:
        assert ours.keys() == ref.keys()
        assert ours.offset_keys() == ref.offset_keys()
        assert ours.metadata() == ref.metadata()
        # offset_keys really is file order
        starts = [ours.tensor_info(k).data_offsets for k in ours.offset_keys()]
        assert starts == sorted(starts)


def test_numpy_values_equal_reference_reader(np_file):
    path, _ = np_file
    # The reference numpy reader cannot build ml_dtypes arrays; compare the
    # dtypes it does support.
    with safetensors.safe_open(path, framework="np") as ref, fastensors.safe_open(path, framework="np") as ours:
        for name in ref.keys():
            if name.split(".")[0] in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64",
                                      "int64", "float16", "float32", "float64", "complex64"):
                assert same_array(ours.get_tensor(name), ref.get_tensor(name)), name


def test_numpy_load_file_and_load(np_file, backend):
    path, tensors = np_file
    loaded = fst_np.load_file(path, backend=backend)
    assert set(loaded) == set(tensors)
    for name, expected in tensors.items():
        assert same_array(loaded[name], expected), name
    from_bytes = fst_np.load(path.read_bytes())
    for name, expected in tensors.items():
        assert same_array(from_bytes[name], expected), name


def test_get_tensors_matches(np_file, backend):
    path, tensors = np_file
    with fastensors.safe_open(path, framework="np", backend=backend) as f:
        got = f.get_tensors()
        assert list(got) == f.offset_keys()
    for name, expected in tensors.items():
        assert same_array(got[name], expected)


def test_metadata_none_when_absent(tmp_path, backend):
    p = tmp_path / "x.safetensors"
    ref_np.save_file({"a": np.zeros(2, np.float32)}, p)
    with fastensors.safe_open(p, "np", backend=backend) as f, safetensors.safe_open(p, "np") as r:
        assert f.metadata() is None
        assert r.metadata() is None
    ref_np.save_file({"a": np.zeros(2, np.float32)}, p, metadata={})
    with fastensors.safe_open(p, "np", backend=backend) as f, safetensors.safe_open(p, "np") as r:
        assert f.metadata() == r.metadata() == {}


@needs_torch
@pytest.mark.parametrize("framework", ["pt", "torch", "pytorch"])
def test_torch_safe_open_values(pt_file, backend, framework):
    path, tensors = pt_file
    with fastensors.safe_open(path, framework=framework, backend=backend) as ours, safetensors.safe_open(
        path, framework="pt"
    ) as ref:
        assert ours.keys() == ref.keys()
        assert ours.offset_keys() == ref.offset_keys()
        for name, expected in tensors.items():
            got = ours.get_tensor(name)
            assert isinstance(got, torch.Tensor)
            assert same_tensor(got, expected), name
            assert same_tensor(got, ref.get_tensor(name)), name


@needs_torch
def test_torch_load_file_and_load(pt_file, backend):
    path, tensors = pt_file
    loaded = fst_pt.load_file(path, backend=backend)
    ref_loaded = ref_pt.load_file(path)
    assert set(loaded) == set(ref_loaded) == set(tensors)
    for name in tensors:
        assert same_tensor(loaded[name], tensors[name])
        assert same_tensor(loaded[name], ref_loaded[name])
    data = path.read_bytes()
    from_bytes = fst_pt.load(data)
    for name in tensors:
        assert same_tensor(from_bytes[name], tensors[name])
    del data
    gc.collect()
    for name in tensors:  # fastensors.torch.load copies: data may be freed
        assert same_tensor(from_bytes[name], tensors[name])


@needs_torch
def test_torch_load_matches_reference_load():
    # the dtypes the reference's in-memory torch loader supports
    names = [
        "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64",
        "complex64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
        "uint16", "uint32", "uint64",
    ]
    tensors = {n: torch_sample(n, (3, 2), seed=i) for i, n in enumerate(names)}
    tensors["scalar"] = torch_sample("float32", ())
    tensors["empty"] = torch_sample("int64", (0, 3))
    data = ref_pt.save(tensors)
    ours, ref = fst_pt.load(data), ref_pt.load(data)
    assert set(ours) == set(ref)
    for k in ref:
        assert same_tensor(ours[k], ref[k])


@needs_torch
@pytest.mark.parametrize(
    "code,torch_name,ml_name",
    [
        ("BF16", "bfloat16", "bfloat16"),
        ("F8_E4M3", "float8_e4m3fn", "float8_e4m3fn"),
        ("F8_E5M2", "float8_e5m2", "float8_e5m2"),
        ("F8_E4M3FNUZ", "float8_e4m3fnuz", "float8_e4m3fnuz"),
        ("F8_E5M2FNUZ", "float8_e5m2fnuz", "float8_e5m2fnuz"),
        ("F8_E8M0", "float8_e8m0fnu", "float8_e8m0fnu"),
    ],
)
def test_narrow_floats_load_as_ml_dtypes(tmp_path, backend, code, torch_name, ml_name):
    dt = getattr(torch, torch_name)
    values = torch.tensor([0.0, 1.0, -2.5, 3.0, 0.125, 448.0, 1e-3, 57344.0]).abs() if code == "F8_E8M0" else (
        torch.tensor([0.0, 1.0, -2.5, 3.0, 0.125, 240.0, -1e-3, 7.5])
    )
    t = values.to(dt).reshape(2, 4)
    p = tmp_path / "n.safetensors"
    ref_pt.save_file({"t": t}, p)
    with fastensors.safe_open(p, "np", backend=backend) as f:
        got = f.get_tensor("t")
        assert f.tensor_info("t").dtype == code
    ml = np.dtype(getattr(ml_dtypes, ml_name))
    assert got.dtype == ml
    assert got.shape == (2, 4)
    # ml_dtypes' own conversion of torch's float32 values
    expected = t.float().numpy().astype(ml)
    assert got.tobytes() == expected.tobytes()
    np.testing.assert_array_equal(got.astype(np.float32), t.float().numpy())


@needs_torch
def test_float4_loads_unpacked_into_numpy(tmp_path, backend):
    packed = torch.tensor([[0x21, 0x43], [0x8F, 0x70]], dtype=torch.uint8)
    t = packed.view(torch.float4_e2m1fn_x2)
    p = tmp_path / "f4.safetensors"
    ref_pt.save_file({"t": t}, p)
    with fastensors.safe_open(p, "np", backend=backend) as f:
        got = f.get_tensor("t")
        assert f.get_slice("t").get_shape() == [2, 4]
    assert got.dtype == np.dtype(ml_dtypes.float4_e2m1fn)
    assert got.shape == (2, 4)
    # low nibble first (PyTorch's float4_e2m1fn_x2 order)
    codes = np.array([[1, 2, 3, 4], [0xF, 0x8, 0x0, 0x7]], np.uint8)
    np.testing.assert_array_equal(got.view(np.uint8), codes)
    with fastensors.safe_open(p, "pt", backend=backend) as f:
        assert same_tensor(f.get_tensor("t"), t)


def test_deserialize_matches_reference(np_file):
    path, _ = np_file
    data = path.read_bytes()
    ours = fastensors.deserialize(data)
    ref = safetensors.deserialize(data)
    assert dict(ours) == dict(ref)
    assert len(ours) == len(ref)
    # ours is in file order
    with fastensors.safe_open(path, "np") as f:
        assert [n for n, _ in ours] == f.offset_keys()
    assert fastensors.deserialize(bytearray(data)) == ours
    assert fastensors.deserialize(memoryview(data)) == ours


# -- zero-copy views -------------------------------------------------------------


def _make(tmp_path, arr, name="a"):
    p = tmp_path / "zc.safetensors"
    fst_np.save_file({name: arr}, p)
    return p


def test_mmap_views_survive_handle(tmp_path):
    expected = np.arange(4096, dtype=np.float32).reshape(64, 64)
    p = _make(tmp_path, expected)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    with fastensors.safe_open(p, "np") as f:
        arr = f.get_tensor("a")
        sl = f.get_slice("a")[3:9]
    assert not arr.flags.owndata  # a view, not a copy
    handle_ref = weakref.ref(f)
    del f
    gc.collect()
    assert handle_ref() is None
    np.testing.assert_array_equal(arr, expected)
    np.testing.assert_array_equal(sl, expected[3:9])
    # writable, copy-on-write
    assert arr.flags.writeable
    arr[:] = -1
    assert (arr == -1).all()
    assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
    with fastensors.safe_open(p, "np") as g:
        np.testing.assert_array_equal(g.get_tensor("a"), expected)
    del arr, sl
    gc.collect()


def test_mmap_view_is_zero_copy_of_the_mapping(tmp_path):
    p = _make(tmp_path, np.arange(1000, dtype=np.int64))
    with fastensors.safe_open(p, "np") as f:
        a = f.get_tensor("a")
        b = f.get_tensor("a")
    # two views of one mapping: their addresses coincide (no copy was made)
    assert a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    # views of the same copy-on-write mapping see each other's writes
    a[0] = 12345
    assert b[0] == 12345


def test_load_file_views_outlive_everything(tmp_path):
    expected = {f"t{i}": sample_array(np.float16, (i + 1, 3), seed=i) for i in range(8)}
    p = tmp_path / "m.safetensors"
    fst_np.save_file(expected, p)
    loaded = fst_np.load_file(p)
    gc.collect()
    for k, v in expected.items():
        assert same_array(loaded[k], v)
        loaded[k][...] = 0  # writable
    assert fst_np.load_file(p)["t3"].tolist() == expected["t3"].tolist()


def test_pread_arrays_own_their_memory(tmp_path):
    p = _make(tmp_path, np.arange(10, dtype=np.float32))
    with fastensors.safe_open(p, "np", backend="pread") as f:
        a = f.get_tensor("a")
    np.testing.assert_array_equal(a, np.arange(10, dtype=np.float32))
    a[0] = 42
    with fastensors.safe_open(p, "np", backend="pread") as f:
        assert f.get_tensor("a")[0] == 0


@needs_torch
def test_torch_tensors_from_mmap_survive_and_are_cow(tmp_path):
    expected = torch.arange(100, dtype=torch.float32)
    p = tmp_path / "t.safetensors"
    fst_pt.save_file({"t": expected}, p)
    before = p.read_bytes()
    t = fst_pt.load_file(p)["t"]
    gc.collect()
    assert torch.equal(t, expected)
    t += 1
    assert p.read_bytes() == before


def test_closed_handle_raises(tmp_path):
    p = _make(tmp_path, np.zeros(3, np.float32))
    f = fastensors.safe_open(p, "np")
    f.close()
    with pytest.raises(fastensors.SafetensorError):
        f.get_tensor("a")


def test_tensor_not_found(tmp_path, backend):
    p = _make(tmp_path, np.zeros(3, np.float32))
    with fastensors.safe_open(p, "np", backend=backend) as f:
        with pytest.raises(fastensors.TensorNotFound):
            f.get_tensor("b")
        with pytest.raises(fastensors.SafetensorError):
            f.get_slice("b")
        with pytest.raises(fastensors.SafetensorError):
            f.tensor_info("b")
    with safetensors.safe_open(p, "np") as r:
        with pytest.raises(safetensors.SafetensorError):
            r.get_tensor("b")


def test_bad_framework_and_backend(tmp_path):
    p = _make(tmp_path, np.zeros(3, np.float32))
    with pytest.raises(fastensors.SafetensorError):  # ("jax" is a framework now: tests/test_flax.py)
        fastensors.safe_open(p, "caffe")
    with pytest.raises(fastensors.SafetensorError):
        fastensors.safe_open(p, "np", backend="carrier-pigeon")


def test_pathlike_and_str(tmp_path):
    p = _make(tmp_path, np.ones(2, np.int8))
    for arg in (p, str(p)):
        with fastensors.safe_open(arg, "np") as f:
            assert f.get_tensor("a").tolist() == [1, 1]
