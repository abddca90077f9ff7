"""Writes are byte-identical to the reference ``safetensors`` writer."""

from __future__ import annotations

import ctypes

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy as ref_np

import fastensors
import fastensors.numpy as fst_np
from conftest import (
    NUMPY_CODES,
    NUMPY_DTYPES,
    TORCH_DTYPES,
    sample_array,
    same_up_to_metadata_order,
    split_header,
    torch_sample,
)

SHAPES = [(), (0,), (3,), (2, 3), (2, 0, 4), (1, 1, 1, 2)]


# -- numpy ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
def test_numpy_save_every_dtype(dtype):
    tensors = {f"t{i}": sample_array(dtype, shape, seed=i) for i, shape in enumerate(SHAPES)}
    ours = fst_np.save(tensors)
    assert ours == ref_np.save(tensors)
    header, _ = split_header(ours)
    assert {v["dtype"] for v in header.values()} == {NUMPY_CODES[dtype.name]}


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
def test_numpy_save_file_every_dtype(dtype, tmp_path):
    tensors = {"a": sample_array(dtype, (4, 5)), "b": sample_array(dtype, (7,), seed=2)}
    meta = {"format": "np"}
    fst_np.save_file(tensors, tmp_path / "ours.safetensors", metadata=meta)
    ref_np.save_file(tensors, tmp_path / "ref.safetensors", metadata=meta)
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_numpy_mixed_dtypes_sort_order():
    # The writer orders by dtype alignment (descending) then by name.
    tensors = {}
    for i, dt in enumerate(NUMPY_DTYPES):
        tensors[f"z{i}"] = sample_array(dt, (3,), seed=i)
        tensors[f"a{i}"] = sample_array(dt, (2, 2), seed=100 + i)
    ours = fst_np.save(tensors)
    assert ours == ref_np.save(tensors)


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"format": "pt"}, {"k": ""}, {"ключ": "värde ✓"}, {"q\"uote": "back\\slash\n\t\x01\x1f"}],
    ids=["none", "empty", "one", "empty-value", "unicode", "escapes"],
)
def test_metadata_single_key_identical(metadata):
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert fst_np.save(tensors, metadata=metadata) == ref_np.save(tensors, metadata=metadata)


def test_metadata_none_vs_empty_differ_like_reference():
    tensors = {"w": np.ones(2, np.float32)}
    assert fst_np.save(tensors, metadata=None) != fst_np.save(tensors, metadata={})
    assert b"__metadata__" in fst_np.save(tensors, metadata={})
    assert b"__metadata__" not in fst_np.save(tensors, metadata=None)


def test_metadata_many_keys_equal_up_to_order():
    tensors = {"w": np.ones((3, 3), np.float16), "b": np.zeros(3, np.int64)}
    meta = {f"key{i:02d}": f"value {i}" * (i % 4) for i in range(20)}
    ours = fst_np.save(tensors, metadata=meta)
    ref = ref_np.save(tensors, metadata=meta)
    assert same_up_to_metadata_order(ours, ref)
    # ours keeps insertion order
    header, _ = split_header(ours)
    assert list(header["__metadata__"]) == list(meta)
    assert list(header)[0] == "__metadata__"


def test_empty_dict():
    for meta in (None, {"a": "b"}):
        assert fst_np.save({}, metadata=meta) == ref_np.save({}, metadata=meta)


def test_empty_dict_with_empty_metadata_is_valid_json():
    # The reference writes `{},"__metadata__":{}}` here (invalid JSON that it
    # cannot read back itself); fastensors writes the well-formed header.
    ours = fst_np.save({}, metadata={})
    assert ours == b"\x18" + b"\x00" * 7 + b'{"__metadata__":{}}     '
    assert safetensors.deserialize(ours) == []
    assert fastensors.deserialize(ours) == []
    ref = ref_np.save({}, metadata={})
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(ref)
    with pytest.raises(fastensors.InvalidJson):
        fastensors.deserialize(ref)


def test_scalars_and_zero_size():
    tensors = {
        "scalar_f32": np.array(1.5, np.float32),
        "scalar_bool": np.array(True),
        "scalar_i64": np.array(-7, np.int64),
        "empty": np.zeros((0,), np.float32),
        "empty2": np.zeros((3, 0), np.int8),
        "empty3": np.zeros((0, 0, 0), np.float64),
    }
    assert fst_np.save(tensors) == ref_np.save(tensors)


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "naïve.ünïcödé.名前.🚀",
        'with "quotes"',
        "back\\slash",
        "new\nline\ttab\r",
        "ctrl\x00\x01\x07\x08\x0b\x0c\x1b\x1f\x7f",
        "slash/and.dots",
        "\u2028\u2029",
        "a" * 500,
    ],
    ids=lambda s: repr(s)[:20],
)
def test_odd_names(name):
    tensors = {name: np.arange(3, dtype=np.int16), "other": np.ones(2, np.int16)}
    ours = fst_np.save(tensors, metadata={name: name})
    assert ours == ref_np.save(tensors, metadata={name: name})
    assert set(fst_np.load(ours)) == {name, "other"}


def test_many_tensors_sorted_like_reference():
    rng = np.random.default_rng(5)
    names = [f"layer.{i}.weight" for i in range(300)] + [f"layer.{i}.bias" for i in range(300)]
    rng.shuffle(names)
    dts = [np.float32, np.float16, np.int8, np.float64, np.bool_]
    tensors = {n: np.zeros((int(rng.integers(0, 3)), 2), dts[i % len(dts)]) for i, n in enumerate(names)}
    ours = fst_np.save(tensors, metadata={"n": str(len(names))})
    assert ours == ref_np.save(tensors, metadata={"n": str(len(names))})


def test_big_endian_and_non_contiguous_numpy_input():
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    ours = fst_np.save({"a": a})
    assert ours == ref_np.save({"a": a})
    assert fst_np.load(ours)["a"].tolist() == a.tolist()
    # A Fortran-ordered array is saved by value, C-ordered.
    f = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    assert np.array_equal(fst_np.load(fst_np.save({"f": f}))["f"], f)


def test_numpy_save_header_is_padded_to_8():
    for n in range(1, 20):
        content = fst_np.save({"x" * n: np.zeros(1, np.uint8)})
        hlen = int.from_bytes(content[:8], "little")
        assert hlen % 8 == 0
        assert content[8 + hlen - 1 : 8 + hlen] in (b" ", b"}")


def test_metadata_type_errors_match_reference_behaviour():
    tensors = {"a": np.zeros(1, np.float32)}
    with pytest.raises(TypeError):
        fst_np.save(tensors, metadata={"a": 1})
    with pytest.raises(TypeError):
        fst_np.save(tensors, metadata={1: "a"})
    # the reference rejects these too (with some error)
    with pytest.raises(Exception):
        ref_np.save(tensors, metadata={"a": 1})


# -- serialize / TensorSpec ----------------------------------------------------


def _spec_pair(arr: np.ndarray, dtype_name: str, shape=None):
    kwargs = dict(
        dtype=dtype_name,
        shape=list(arr.shape) if shape is None else shape,
        data_ptr=arr.ctypes.data,
        data_len=arr.nbytes,
    )
    return fastensors.TensorSpec(**kwargs), safetensors.TensorSpec(**kwargs)


SPEC_DTYPES = [
    ("bool", np.bool_), ("uint8", np.uint8), ("int8", np.int8), ("uint16", np.uint16),
    ("int16", np.int16), ("uint32", np.uint32), ("int32", np.int32), ("uint64", np.uint64),
    ("int64", np.int64), ("float16", np.float16), ("bfloat16", ml_dtypes.bfloat16),
    ("float32", np.float32), ("float64", np.float64), ("complex64", np.complex64),
    ("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("float8_e5m2", ml_dtypes.float8_e5m2),
    ("float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz), ("float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz),
    ("float8_e8m0fnu", ml_dtypes.float8_e8m0fnu),
]


@pytest.mark.parametrize("name,np_dtype", SPEC_DTYPES, ids=[n for n, _ in SPEC_DTYPES])
def test_serialize_tensorspec_matches_reference(name, np_dtype, tmp_path):
    a = sample_array(np_dtype, (3, 4), seed=1)
    b = sample_array(np_dtype, (), seed=2)
    z = np.zeros((0, 4), np_dtype)
    ours, ref = {}, {}
    for key, arr in (("a", a), ("b", b), ("z", z)):
        ours[key], ref[key] = _spec_pair(arr, name)
        assert ours[key].dtype == ref[key].dtype
        assert ours[key].shape == ref[key].shape
        assert ours[key].data_len == ref[key].data_len
    assert fastensors.serialize(ours) == safetensors.serialize(ref)
    assert fastensors.serialize(ours, metadata={"m": "1"}) == safetensors.serialize(ref, metadata={"m": "1"})
    fastensors.serialize_file(ours, tmp_path / "o.safetensors", metadata={"m": "x"})
    safetensors.serialize_file(ref, tmp_path / "r.safetensors", metadata={"m": "x"})
    assert (tmp_path / "o.safetensors").read_bytes() == (tmp_path / "r.safetensors").read_bytes()


def test_tensorspec_float4_x2_doubles_last_dim():
    raw = np.arange(6, dtype=np.uint8)
    ours, ref = _spec_pair(raw, "float4_e2m1fn_x2", shape=[2, 3])
    assert ours.shape == ref.shape == [2, 6]
    assert ours.dtype == ref.dtype == "F4"
    assert fastensors.serialize({"f": ours}) == safetensors.serialize({"f": ref})


def test_tensorspec_unknown_dtype():
    with pytest.raises(fastensors.UnknownDtype):
        fastensors.TensorSpec(dtype="float128", shape=[1], data_ptr=0, data_len=16)
    with pytest.raises(safetensors.SafetensorError):
        safetensors.TensorSpec(dtype="float128", shape=[1], data_ptr=0, data_len=16)


def test_serialize_size_mismatch_rejected():
    a = np.zeros(4, np.float32)
    spec = fastensors.TensorSpec(dtype="float32", shape=[5], data_ptr=a.ctypes.data, data_len=a.nbytes)
    with pytest.raises(fastensors.SizeMismatch) as ei:
        fastensors.serialize({"a": spec})
    assert ei.value.tensor == "a"
    ref = safetensors.TensorSpec(dtype="float32", shape=[5], data_ptr=a.ctypes.data, data_len=a.nbytes)
    with pytest.raises(Exception):
        safetensors.serialize({"a": ref})


def test_serialize_reads_exactly_the_pointed_bytes():
    buf = (ctypes.c_uint8 * 16)(*range(16))
    addr = ctypes.addressof(buf)
    spec = fastensors.TensorSpec(dtype="U8", shape=[4], data_ptr=addr + 4, data_len=4)
    out = fastensors.serialize({"x": spec})
    assert out.endswith(bytes([4, 5, 6, 7]))
    assert fastensors.deserialize(out)[0][1]["data"] == bytes([4, 5, 6, 7])


# -- torch ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_torch_save_every_dtype(name, tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch as ref_pt

    import fastensors.torch as fst_pt

    shapes = [(2, 3), (4,), (0, 2), (1, 2, 2)]
    if name != "float4_e2m1fn_x2":
        shapes.append(())
    tensors = {f"t{i}": torch_sample(name, s) for i, s in enumerate(shapes)}
    assert fst_pt.save(tensors) == ref_pt.save(tensors)
    meta = {"format": "pt"}
    assert fst_pt.save(tensors, metadata=meta) == ref_pt.save(tensors, metadata=meta)
    fst_pt.save_file(tensors, tmp_path / "o.safetensors", metadata=meta)
    ref_pt.save_file(tensors, tmp_path / "r.safetensors", metadata=meta)
    assert (tmp_path / "o.safetensors").read_bytes() == (tmp_path / "r.safetensors").read_bytes()
    header, _ = split_header((tmp_path / "o.safetensors").read_bytes())
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {TORCH_DTYPES[name]}


def test_torch_mixed_dtypes_and_metadata():
    torch = pytest.importorskip("torch")
    import safetensors.torch as ref_pt

    import fastensors.torch as fst_pt

    tensors = {}
    for i, name in enumerate(TORCH_DTYPES):
        tensors[f"{name}.w"] = torch_sample(name, (2, 4))
        tensors[f"{i}"] = torch_sample(name, (4,))
    meta = {"b": "2", "a": "1", "c": "3"}
    assert same_up_to_metadata_order(fst_pt.save(tensors, metadata=meta), ref_pt.save(tensors, metadata=meta))
    for m in (None, {}, {"only": "one"}):
        assert fst_pt.save(tensors, metadata=m) == ref_pt.save(tensors, metadata=m)
    assert fst_pt.save({}) == ref_pt.save({})


def test_torch_non_contiguous_source_after_contiguous():
    torch = pytest.importorskip("torch")
    import safetensors.torch as ref_pt

    import fastensors.torch as fst_pt

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {"t": base.t().contiguous(), "s": base[1:3].clone()}
    assert fst_pt.save(tensors) == ref_pt.save(tensors)
