"""The C API (fastensors.h) of the shared library the package ships, called
through ctypes: checkpoints written by the reference writer read back
bit-exact (raw, converted as ml_dtypes converts, any box as numpy slices),
the same error kinds as Python's ``open_checkpoint`` for every broken index
or shard, and files written byte-identical to the reference writer."""

from __future__ import annotations

import ctypes
import json
import os

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as ref_np
from hypothesis import HealthCheck, given, settings, strategies as st

import fastensors
from conftest import sample_array

LIB_PATH = os.path.join(os.path.dirname(fastensors.__file__), "lib", "libfastensors.so")
if not os.path.exists(LIB_PATH):
    pytest.skip("this fastensors was built without its shared library (FASTENSORS_SHARED=OFF)",
                allow_module_level=True)

c_u64_p = ctypes.POINTER(ctypes.c_uint64)


class TensorInfo(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("ndim", ctypes.c_size_t), ("shape", c_u64_p),
                ("nbytes", ctypes.c_uint64), ("begin", ctypes.c_uint64), ("end", ctypes.c_uint64)]


class TensorDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_size_t),
                ("shape", c_u64_p), ("data", ctypes.c_void_p), ("nbytes", ctypes.c_uint64)]


def _load():
    lib = ctypes.CDLL(LIB_PATH)
    vp, sz, i, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p
    sig = {
        "fst_status_name": (cp, [i]),
        "fst_last_error": (cp, []),
        "fst_version": (cp, []),
        "fst_dtype_name": (cp, [i]),
        "fst_checkpoint_open": (i, [cp, i, ctypes.POINTER(vp)]),
        "fst_checkpoint_close": (None, [vp]),
        "fst_checkpoint_verify": (i, [vp]),
        "fst_checkpoint_count": (i, [vp, ctypes.POINTER(sz)]),
        "fst_checkpoint_name": (i, [vp, sz, ctypes.POINTER(cp)]),
        "fst_checkpoint_info": (i, [vp, cp, ctypes.POINTER(TensorInfo)]),
        "fst_checkpoint_read": (i, [vp, cp, i, vp, sz]),
        "fst_checkpoint_read_box": (i, [vp, cp, sz, c_u64_p, c_u64_p, i, vp, sz]),
        "fst_checkpoint_read_size": (i, [vp, cp, sz, c_u64_p, c_u64_p, i, ctypes.POINTER(ctypes.c_uint64)]),
        "fst_write_file": (i, [cp, ctypes.POINTER(TensorDesc), sz, ctypes.POINTER(cp), ctypes.POINTER(cp), sz,
                               ctypes.c_uint]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


LIB = _load()
NAMES = {LIB.fst_dtype_name(d).decode(): d for d in range(22)}
STORED = 255


def check(status: int) -> None:
    if status != 0:
        raise AssertionError(f"{LIB.fst_status_name(status).decode()}: {LIB.fst_last_error().decode()}")


class Ckpt:
    def __init__(self, path, backend=0):
        self.h = ctypes.c_void_p()
        check(LIB.fst_checkpoint_open(os.fspath(path).encode(), backend, ctypes.byref(self.h)))

    def close(self):
        LIB.fst_checkpoint_close(self.h)

    def keys(self):
        n = ctypes.c_size_t()
        check(LIB.fst_checkpoint_count(self.h, ctypes.byref(n)))
        out = []
        for i in range(n.value):
            p = ctypes.c_char_p()
            check(LIB.fst_checkpoint_name(self.h, i, ctypes.byref(p)))
            out.append(p.value.decode())
        return out

    def info(self, name):
        info = TensorInfo()
        check(LIB.fst_checkpoint_info(self.h, name.encode(), ctypes.byref(info)))
        return info

    def read(self, name, to=STORED, box=None):
        ndim = 0 if box is None else len(box[0])
        start = None if box is None else (ctypes.c_uint64 * ndim)(*box[0])
        stop = None if box is None else (ctypes.c_uint64 * ndim)(*box[1])
        need = ctypes.c_uint64()
        check(LIB.fst_checkpoint_read_size(self.h, name.encode(), ndim, start, stop, to, ctypes.byref(need)))
        buf = np.empty(need.value, np.uint8)
        check(LIB.fst_checkpoint_read_box(self.h, name.encode(), ndim, start, stop, to,
                                          buf.ctypes.data_as(ctypes.c_void_p), buf.nbytes))
        return buf


def write_sharded(directory, shards, metadata=None):
    os.makedirs(directory, exist_ok=True)
    weight_map = {}
    for fname, tensors in shards.items():
        ref_np.save_file(tensors, os.path.join(directory, fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in tensors})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": metadata or {"total_size": 0}, "weight_map": weight_map}, f)


SHARDS = {
    "model-00001-of-00002.safetensors": {
        "a.weight": sample_array(np.float32, (6, 5), 1),
        "b.weight": sample_array(ml_dtypes.bfloat16, (4, 3, 5), 3),
        "ids": sample_array(np.int64, (7,), 4),
    },
    "model-00002-of-00002.safetensors": {
        "c": sample_array(np.float16, (2, 8, 3), 5),
        "s": np.array(2.5, np.float32),
    },
}
FLAT = {k: v for t in SHARDS.values() for k, v in t.items()}


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("c_api")
    write_sharded(d, SHARDS)
    return d


@pytest.mark.parametrize("backend", [0, 1])
def test_reads_what_the_reference_wrote(ckpt_dir, backend):
    c = Ckpt(ckpt_dir, backend)
    try:
        assert c.keys() == sorted(FLAT)
        for name, want in FLAT.items():
            info = c.info(name)
            assert LIB.fst_dtype_name(info.dtype).decode() == fastensors.safe_open(
                os.path.join(ckpt_dir, [f for f, t in SHARDS.items() if name in t][0]), "np").tensor_info(name).dtype
            assert tuple(info.shape[i] for i in range(info.ndim)) == want.shape
            assert c.read(name).tobytes() == np.ascontiguousarray(want).tobytes()
            if want.dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
                # F32 through the C API is ml_dtypes' astype, bit for bit (NaN payloads too).
                got = c.read(name, NAMES["F32"]).view(np.uint32)
                assert np.array_equal(got, want.astype(np.float32).reshape(-1).view(np.uint32))
                got16 = c.read(name, NAMES["BF16"]).view(np.uint16)
                assert np.array_equal(got16, want.astype(ml_dtypes.bfloat16).reshape(-1).view(np.uint16))
    finally:
        c.close()


@st.composite
def boxes(draw):
    name = draw(st.sampled_from(["a.weight", "b.weight", "c", "ids"]))
    shape = FLAT[name].shape
    start, stop = [], []
    for n in shape:
        lo = draw(st.integers(0, n))
        start.append(lo)
        stop.append(draw(st.integers(lo, n)))
    to = draw(st.sampled_from([STORED, NAMES["F32"]] if name != "ids" else [STORED]))
    return name, start, stop, to


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=boxes())
def test_any_box_is_the_numpy_slice(ckpt_dir, case):
    name, start, stop, to = case
    want = FLAT[name][tuple(slice(a, b) for a, b in zip(start, stop))]
    if to != STORED:
        want = want.astype(np.float32)
    c = Ckpt(ckpt_dir, 1)
    try:
        assert c.read(name, to, (start, stop)).tobytes() == np.ascontiguousarray(want).tobytes()
    finally:
        c.close()


def _status_kind(path) -> str:
    h = ctypes.c_void_p()
    s = LIB.fst_checkpoint_open(os.fspath(path).encode(), 1, ctypes.byref(h))
    if s == 0:
        s = LIB.fst_checkpoint_verify(h)
        LIB.fst_checkpoint_close(h)
    return LIB.fst_status_name(s).decode()


def _python_kind(path) -> str:
    try:
        fastensors.open_checkpoint(path, lazy=False).close()
    except fastensors.SafetensorError as e:
        return "FST_ERR_" + type(e).__name__
    return "FST_OK"


def _index_case(tmp_path, content: bytes):
    write_sharded(tmp_path, {"s.safetensors": {"a": np.zeros(2, np.float32)}})
    (tmp_path / "model.safetensors.index.json").write_bytes(content)


def _shard_case(tmp_path, kind):
    files = {"s1.safetensors": {"a": np.zeros(2, np.float32), "dup": np.ones(2, np.float32)},
             "s2.safetensors": {"b": np.zeros(3, np.float32)}}
    if kind == "two shards":
        files["s2.safetensors"]["dup"] = np.ones(2, np.float32)
    write_sharded(tmp_path, files)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    if kind == "missing shard":
        os.unlink(tmp_path / "s2.safetensors")
    elif kind == "listed but absent":
        index["weight_map"]["ghost"] = "s2.safetensors"
    elif kind == "unlisted":
        del index["weight_map"]["dup"]
    elif kind == "wrong shard":
        index["weight_map"]["a"] = "s2.safetensors"
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe{}", b"[]", b'{"metadata": {}}', b'{"weight_map": []}', b'{"weight_map": {"a": 3}}',
    b'{"weight_map": {"a": "s.safetensors", "a": "s.safetensors"}}', b'{"metadata": [], "weight_map": {}}',
    b'{"weight_map": {"a": "../outside.safetensors"}}', b'{"weight_map": {"a": "/etc/x.safetensors"}}',
    b'{"weight_map": {"a": "C:\\\\x.safetensors"}}', b'{"weight_map": {"a": "pytorch_model.bin"}}',
    b'{"weight_map": {"a": "s.safetensors"}}',
])
def test_index_errors_are_pythons(tmp_path, content):
    _index_case(tmp_path, content)
    assert _status_kind(tmp_path) == _python_kind(tmp_path)


@pytest.mark.parametrize("kind", ["missing shard", "listed but absent", "unlisted", "two shards", "wrong shard",
                                  "consistent"])
def test_shard_errors_are_pythons(tmp_path, kind):
    _shard_case(tmp_path, kind)
    want = _python_kind(tmp_path)
    assert _status_kind(tmp_path) == want
    assert (want == "FST_OK") == (kind == "consistent")


def test_locating_errors_are_pythons(tmp_path):
    assert _status_kind(tmp_path / "none") == _python_kind(tmp_path / "none") == "FST_ERR_CheckpointNotFound"
    assert _status_kind(tmp_path) == _python_kind(tmp_path) == "FST_ERR_CheckpointNotFound"
    for n in ("x", "y"):
        ref_np.save_file({"v": np.zeros(1, np.float32)}, tmp_path / f"{n}.safetensors")
    assert _status_kind(tmp_path) == _python_kind(tmp_path) == "FST_ERR_AmbiguousCheckpoint"


def test_write_file_is_byte_identical_to_the_reference(tmp_path):
    tensors = {"w": sample_array(np.float32, (3, 4), 7), "b": sample_array(np.float16, (5,), 8),
               "ids": sample_array(np.int32, (2, 2), 9), "empty": np.zeros((0, 3), np.float32)}
    meta = {"format": "pt"}  # one key: the reference orders several arbitrarily (docs/format.md)
    descs, keep = (TensorDesc * len(tensors))(), []
    for i, (name, arr) in enumerate(tensors.items()):
        arr = np.ascontiguousarray(arr)
        shape = (ctypes.c_uint64 * arr.ndim)(*arr.shape)
        keep += [arr, shape]
        descs[i] = TensorDesc(name.encode(), NAMES[{"float32": "F32", "float16": "F16", "int32": "I32"}[arr.dtype.name]],
                              arr.ndim, shape, arr.ctypes.data, arr.nbytes)
    keys = (ctypes.c_char_p * len(meta))(*[k.encode() for k in meta])
    values = (ctypes.c_char_p * len(meta))(*[v.encode() for v in meta.values()])
    out = tmp_path / "c.safetensors"
    check(LIB.fst_write_file(os.fspath(out).encode(), descs, len(tensors), keys, values, len(meta), 1))
    assert out.read_bytes() == ref_np.save(tensors, metadata=meta)
    assert LIB.fst_version().decode() == fastensors.__version__
