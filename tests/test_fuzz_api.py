"""Fuzzing the Python API with hypothesis: ``deserialize`` on arbitrary
bytes and on mutated valid files, ``safe_open`` on such files (both
backends), ``get_slice`` with arbitrary index expressions, and ``.bin``
conversion of pickles that would run code.

Only SafetensorError (and its documented subclasses), IndexError, TypeError
and ValueError may escape; never a crash or another exception. Where an
oracle exists the results are compared with it: the reference
``safetensors`` package for parsing, numpy indexing of the full tensor for
slices.

Profiles: ``fuzz-ci`` (derandomized, a bounded number of examples) in the
default run; ``fuzz-slow`` (random, many more) for the tests marked
``slow``."""

from __future__ import annotations

import os
import pickle
import pickletools
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest
import safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastensors
from fastensors.numpy import save as np_save

settings.register_profile("fuzz-ci", derandomize=True, max_examples=120, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("fuzz-slow", max_examples=4000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CI = settings.get_profile("fuzz-ci")
SLOW = settings.get_profile("fuzz-slow")

ALLOWED = (fastensors.SafetensorError, IndexError, TypeError, ValueError)


def both(*args, **kwargs):
    """The property as two tests: the CI profile, and the slow one."""
    def deco(fn):
        ci = settings(CI)(given(*args, **kwargs)(fn))
        slow = pytest.mark.slow(settings(SLOW)(given(*args, **kwargs)(fn)))
        return ci, slow
    return deco


# -- valid files and their mutations -------------------------------------------------------

DTYPES = [np.float32, np.float16, np.int8, np.uint8, np.int64, np.bool_, ml_dtypes.bfloat16,
          ml_dtypes.float8_e4m3fn, np.float64, np.int32]


@st.composite
def valid_files(draw) -> bytes:
    n = draw(st.integers(0, 4))
    tensors = {}
    for i in range(n):
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        size = int(np.prod(shape)) if shape else 1
        raw = draw(st.binary(min_size=size * dtype.itemsize, max_size=size * dtype.itemsize))
        tensors[draw(st.sampled_from(["w", "b", "layer.0", "é", "x" * 3])) + str(i)] = (
            np.frombuffer(raw, dtype=dtype).reshape(shape).copy())
    meta = draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)))
    return np_save(tensors, metadata=meta)


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(draw(valid_files()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "length", "digit"]))
        if op == "length":  # rewrite the header length field
            n = draw(st.one_of(st.integers(0, len(data) + 16), st.sampled_from([2**63, 2**64 - 1, 100_000_001])))
            data[:8] = struct.pack("<Q", n)
            continue
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from(list(b'{}[],:"0123456789-e. \\\x00\xff')))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        else:  # a digit of the header made larger: offsets and shapes
            digits = [j for j in range(8, len(data)) if 48 <= data[j] <= 57]
            if digits:
                j = digits[draw(st.integers(0, len(digits) - 1))]
                data[j:j + 1] = draw(st.sampled_from([b"9", b"99999999999", b"18446744073709551616", b"-1"]))
    return bytes(data)


def reference(content: bytes):
    try:
        return {n: (t["dtype"], list(t["shape"]), bytes(t["data"])) for n, t in safetensors.deserialize(content)}
    except Exception:  # the reference's errors are its own types
        return None


def check_deserialize(content: bytes) -> None:
    try:
        ours = {n: (t["dtype"], list(t["shape"]), t["data"]) for n, t in fastensors.deserialize(content)}
    except ALLOWED:
        return
    # fastensors is at least as strict as the reference: what it accepts,
    # the reference accepts with the same tensors.
    assert reference(content) == ours


def check_safe_open(path: str) -> None:
    for backend in ("mmap", "pread"):
        try:
            f = fastensors.safe_open(path, "np", backend=backend)
        except ALLOWED:
            continue
        with f:
            f.metadata()
            for name in f.keys():
                info = f.tensor_info(name)
                arr = f.get_tensor(name)
                assert list(arr.shape) == list(info.shape)
                sl = f.get_slice(name)
                if sl.get_shape():
                    np.asarray(sl[::-1])
                try:
                    f.get_tensor(name, dtype="f32")
                except ALLOWED:
                    pass


@both(st.binary(max_size=200))
def _deserialize_bytes(content):
    check_deserialize(content)


test_deserialize_arbitrary_bytes, test_deserialize_arbitrary_bytes_many = _deserialize_bytes


@both(st.binary(min_size=8, max_size=8).map(lambda b: struct.pack("<Q", struct.unpack("<Q", b)[0] % 64)),
      st.binary(max_size=120))
def _deserialize_length_prefixed(prefix, rest):
    check_deserialize(prefix + rest)  # a plausible length, then anything


test_deserialize_length_prefixed, test_deserialize_length_prefixed_many = _deserialize_length_prefixed


@both(mutated_files())
def _deserialize_mutated(content):
    check_deserialize(content)


test_deserialize_mutated_files, test_deserialize_mutated_files_many = _deserialize_mutated


@both(content=mutated_files())
def _safe_open_mutated(tmp_path_factory, content):
    path = str(tmp_path_factory.mktemp("fuzz") / "f.safetensors")
    with open(path, "wb") as f:
        f.write(content)
    check_safe_open(path)


test_safe_open_mutated_files, test_safe_open_mutated_files_many = _safe_open_mutated


# -- get_slice with arbitrary index expressions ------------------------------------------------

FULL = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3) * 1.5 - 7


@pytest.fixture(scope="module")
def slice_handles(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("slices") / "s.safetensors")
    fastensors.numpy.save_file({"t": FULL, "v": FULL[0, :, 0].copy(), "s": np.array(3.5, np.float32)}, path)
    handles = {be: fastensors.safe_open(path, "np", backend=be) for be in ("mmap", "pread")}
    yield handles
    for h in handles.values():
        h.close()


INTS = st.one_of(st.integers(-7, 7), st.sampled_from([2**31, -(2**63), 2**70, -(2**70)]),
                 st.integers(-7, 7).map(np.int64))
ITEMS = st.one_of(
    INTS,
    st.builds(slice, st.one_of(st.none(), INTS), st.one_of(st.none(), INTS), st.one_of(st.none(), INTS)),
    st.just(Ellipsis),
    st.none(),
    st.lists(st.integers(-6, 6), max_size=4),
    st.lists(st.booleans(), min_size=0, max_size=6).map(lambda b: np.array(b, dtype=bool)),
    st.integers(-5, 5).map(lambda i: np.array([i, 0])),
    st.sampled_from([1.5, "a", b"x", True, False, object(), [[0, 1], [1, 0]], [1.0], slice("a", None)]),
)
INDEXES = st.one_of(ITEMS, st.lists(ITEMS, max_size=5).map(tuple))


def _expected(full: np.ndarray, index):
    try:
        return full[index], None
    except Exception as e:  # noqa: BLE001 - numpy's verdict, any kind
        return None, e


@both(name=st.sampled_from(["t", "v", "s"]), index=INDEXES)
def _get_slice(slice_handles, name, index):
    full = {"t": FULL, "v": FULL[0, :, 0], "s": np.array(3.5, np.float32)}[name]
    want, refused = _expected(full, index)
    for backend, f in slice_handles.items():
        try:
            got = f.get_slice(name)[index]
        except ALLOWED as e:
            assert refused is not None, f"{backend}: {index!r} refused ({e!r}) but numpy gives {want!r}"
            continue
        assert refused is None, f"{backend}: {index!r} accepted but numpy refuses it ({refused!r})"
        want_arr = np.asarray(want)
        assert got.shape == want_arr.shape and got.dtype == want_arr.dtype, (backend, index)
        assert got.tobytes() == np.ascontiguousarray(want_arr).tobytes(), (backend, index)


test_get_slice_arbitrary_indexes, test_get_slice_arbitrary_indexes_many = _get_slice


# -- .bin conversion of pickles that would run code --------------------------------------------

def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def payload(kind: str, sentinel: str) -> bytes:
    """Pickle opcodes that, unpickled, create ``sentinel`` (protocol 2 text
    opcodes: GLOBAL, then REDUCE on an argument tuple)."""
    touch = f"open({sentinel!r}, 'w').close()"
    if kind == "os.system":
        return _global("os", "system") + b"(" + _str(f"touch {sentinel}") + b"tR"
    if kind == "posix.system":
        return _global("posix", "system") + b"(" + _str(f"touch {sentinel}") + b"tR"
    if kind == "eval":
        return _global("builtins", "eval") + b"(" + _str(touch) + b"tR"
    if kind == "exec":
        return _global("builtins", "exec") + b"(" + _str(touch) + b"tR"
    if kind == "subprocess":
        return _global("subprocess", "call") + b"((" + _str("touch") + _str(sentinel) + b"ltR"
    if kind == "open":
        return _global("builtins", "open") + b"(" + _str(sentinel) + _str("w") + b"tR"
    if kind == "getattr":  # builtins lookups: getattr(__import__('os'), 'system')('touch ...')
        imp = _global("builtins", "__import__") + b"(" + _str("os") + b"tR"
        system = _global("builtins", "getattr") + b"(" + imp + _str("system") + b"tR"
        return system + b"(" + _str(f"touch {sentinel}") + b"tR"
    if kind == "torch-internal":  # a torch global outside the weights-only allowlist
        return _global("torch.serialization", "_load") + b"(" + _str(sentinel) + b"tR"
    raise ValueError(kind)


KINDS = ["os.system", "posix.system", "eval", "exec", "subprocess", "open", "getattr", "torch-internal"]


def malicious_pickle(kind: str, where: str, sentinel: str) -> bytes:
    """A protocol-2 pickle of a dict holding the payload: as a value, nested
    in a list or dict, as a key, or as the whole object."""
    p = payload(kind, sentinel)
    if where == "value":
        body = b"}(" + _str("weight") + p + b"u"
    elif where == "nested":
        body = b"}(" + _str("layers") + b"(" + b"}(" + _str("w") + p + b"u" + b"l" + b"u"
    elif where == "key":
        body = b"}(" + p + _str("v") + b"u"
    else:
        body = p
    return b"\x80\x02" + body + b"."


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "torch-internal"])
def test_payloads_would_run(tmp_path, kind):
    """The oracle for the next test: unpickled by the unrestricted pickle
    module, each payload does create the sentinel (so the pickles are real).
    (The torch-internal one only loads a file: it is there to be refused.)"""
    sentinel = str(tmp_path / "ran")
    data = malicious_pickle(kind, "value", sentinel)
    pickletools.dis(data, out=open(os.devnull, "w"))  # well-formed
    try:
        pickle.loads(data)  # noqa: S301 - the point: this runs the payload
    except Exception:  # noqa: BLE001 - e.g. a dict value that is an int; the side effect counts
        pass
    assert os.path.exists(sentinel)


def _as_zip(pkl: bytes, path: str) -> None:
    """A torch zip archive whose data.pkl is ``pkl``."""
    import torch

    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {i.filename: z.read(i.filename) for i in z.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, blob in entries.items():
            z.writestr(name, pkl if name.endswith("/data.pkl") else blob)


@st.composite
def malicious_cases(draw):
    return (draw(st.sampled_from(KINDS)), draw(st.sampled_from(["value", "nested", "key", "whole"])),
            draw(st.sampled_from(["raw", "zip"])))


@both(case=malicious_cases())
def _malicious_pickles(tmp_path_factory, case):
    torch = pytest.importorskip("torch")  # noqa: F841
    from fastensors.torch import convert_pytorch_to_safetensors

    kind, where, container = case
    d = tmp_path_factory.mktemp("pickle")
    sentinel = str(d / "ran")
    pkl = malicious_pickle(kind, where, sentinel)
    src = str(d / "pytorch_model.bin")
    if container == "zip":
        _as_zip(pkl, src)
    else:
        with open(src, "wb") as f:
            f.write(pkl)
    out = d / "out.safetensors"
    with pytest.raises(fastensors.UnsafePickle):
        convert_pytorch_to_safetensors(src, out)
    assert not os.path.exists(sentinel), f"{kind} ran"
    assert not out.exists()


test_convert_bin_refuses_malicious_pickles, test_convert_bin_refuses_malicious_pickles_many = _malicious_pickles


# -- GGUF files: read_gguf and is_export on mutated files --------------------------------------

def _gguf_file() -> bytes:
    """A small GGUF file of several tensor types, written by the gguf package."""
    import tempfile

    from gguf_files import write_small_gguf

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.gguf")
        write_small_gguf(path)
        with open(path, "rb") as fh:
            return fh.read()


GGUF_FILE = _gguf_file() if __import__("importlib").util.find_spec("gguf") else b""


@st.composite
def mutated_gguf(draw) -> bytes:
    data = bytearray(GGUF_FILE)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "count"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if not data:
            break
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "truncate":
            del data[i:]
        else:  # the tensor or key count (bytes 8..24) made huge or small
            at = draw(st.sampled_from([8, 16]))
            if len(data) >= at + 8:
                data[at:at + 8] = struct.pack("<Q", draw(st.sampled_from([0, 1, 2**31, 2**63, 2**64 - 1])))
    return bytes(data)


@both(content=mutated_gguf())
def _read_gguf_mutated(tmp_path_factory, content):
    import fastensors.gguf as fg

    path = os.path.join(str(tmp_path_factory.mktemp("gguf")), "m.gguf")
    with open(path, "wb") as fh:
        fh.write(content)
    assert fg.is_export(path) in (True, False)
    try:
        model = fg.read_gguf(path)
    except ALLOWED + (OSError,):
        return
    for name in list(model.tensors):
        try:
            np.asarray(model.get(name), dtype=np.float64).sum()  # f64: no overflow warnings
        except ALLOWED:
            pass


_needs_gguf = pytest.mark.skipif(not GGUF_FILE, reason="the gguf package is not installed")
test_read_gguf_mutated_files, test_read_gguf_mutated_files_many = map(_needs_gguf, _read_gguf_mutated)
