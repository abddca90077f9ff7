"""Checks every framework adapter shares (tests/test_{flax,tensorflow,paddle,
mlx}.py call them with their framework's hooks). The oracle is the
reference ``safetensors`` package's adapter of the same framework, run on
the same files, and the bytes themselves: every tensor is compared by its
bit pattern, so a silent conversion cannot pass.

tensorflow and paddle abort when imported into one process, so each test
file refuses to import its framework when the other is already loaded and
skips with that reason; CI runs each file in its own process."""

from __future__ import annotations

import sys
from typing import Callable, Dict, Iterable

import ml_dtypes
import numpy as np
import pytest

import fastensors
import fastensors.numpy as fnp

# Every code and a numpy dtype holding it (F4/F6 unpacked, one value a byte).
CODE_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16, "U32": np.uint32,
    "I32": np.int32, "U64": np.uint64, "I64": np.int64, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F32": np.float32, "F64": np.float64, "C64": np.complex64, "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2, "F8_E8M0": ml_dtypes.float8_e8m0fnu,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "F4": ml_dtypes.float4_e2m1fn, "F6_E2M3": ml_dtypes.float6_e2m3fn, "F6_E3M2": ml_dtypes.float6_e3m2fn,
}
# What the reference's numpy writer takes (the sub-byte types it cannot).
REFERENCE_WRITES = set(CODE_DTYPES) - {"F4", "F6_E2M3", "F6_E3M2"}


def import_alone(module: str, rivals: Iterable[str]):
    """``module`` imported, or a skip naming why: a rival framework already in
    this process (tensorflow and paddle abort together) or ``module`` missing."""
    loaded = [r for r in rivals if r in sys.modules]
    if loaded:
        pytest.skip(f"{module} cannot share a process with {', '.join(loaded)} (they abort together);"
                    f" run this file in its own pytest process", allow_module_level=True)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[{module.split('.')[0]}]')")


def random_array(code: str, shape, seed: int = 0) -> np.ndarray:
    """Values of every bit pattern the code has (NaNs included), or for
    BOOL 0/1; F4/F6 patterns within their bits."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(CODE_DTYPES[code])
    n = int(np.prod(shape))
    if code == "BOOL":
        return rng.integers(0, 2, n).astype(np.bool_).reshape(shape)
    if code in ("F4", "F6_E2M3", "F6_E3M2"):
        bits = 4 if code == "F4" else 6
        return rng.integers(0, 1 << bits, n, dtype=np.uint8).view(dt).reshape(shape)
    raw = rng.integers(0, 256, n * dt.itemsize, dtype=np.uint8)
    return raw.view(dt).reshape(shape)


def bits(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr).tobytes()


def write_all(path, codes, shape=(3, 4)) -> Dict[str, np.ndarray]:
    tensors = {f"t_{c}": random_array(c, shape, i) for i, c in enumerate(codes)}
    fnp.save_file(tensors, path)
    return tensors


class Hooks:
    """One framework, as the shared checks see it.

    ``name``: the framework argument ("flax", "tf", ...); ``module``: our
    adapter; ``reference``: the reference's adapter; ``to_numpy``: an array
    of ours back to numpy with the safetensors dtype (bit-exact);
    ``codes``: what it holds exactly; ``narrowed``: codes the framework
    turns into a narrower type by its own rule ({code: numpy dtype});
    ``load_kwargs``: passed to every load."""

    def __init__(self, name: str, module, reference, to_numpy: Callable, codes, narrowed=None,
                 load_kwargs=None, reference_slices: bool = True):
        self.name = name
        self.module = module
        self.reference = reference
        self.to_numpy = to_numpy
        self.codes = set(codes)
        self.narrowed = dict(narrowed or {})
        self.load_kwargs = dict(load_kwargs or {})
        # False where the reference's get_slice kills the process (paddle):
        # slices are then checked against numpy indexing alone.
        self.reference_slices = reference_slices


def check_every_dtype_loads_bit_exact(h: Hooks, tmp_path, backend: str) -> None:
    path = tmp_path / "all.safetensors"
    held = sorted(h.codes - set(h.narrowed))
    tensors = write_all(path, held)
    got = h.module.load_file(path, backend=backend, **h.load_kwargs)
    assert sorted(got) == sorted(tensors)
    for name, want in tensors.items():
        arr = h.to_numpy(got[name])
        assert arr.dtype == want.dtype, (name, arr.dtype, want.dtype)
        assert arr.shape == want.shape, name
        assert bits(arr) == bits(want), f"{name}: the bits changed on the way into {h.name}"


def check_matches_the_reference(h: Hooks, tmp_path) -> None:
    """Same file, both adapters: same names, dtypes, shapes and bits, for every
    dtype both can load (the reference raises for some: those are skipped)."""
    codes = sorted(h.codes & REFERENCE_WRITES)
    compared = 0
    for code in codes:
        path = tmp_path / f"{code}.safetensors"
        write_all(path, [code])
        ours = h.module.load_file(path, **h.load_kwargs)
        try:
            theirs = h.reference.load_file(path, **h.load_kwargs)
        except Exception:  # the reference cannot load this dtype into the framework
            continue
        (k, a), = ours.items()
        (k2, b), = theirs.items()
        assert k == k2
        assert str(a.dtype) == str(b.dtype), (code, a.dtype, b.dtype)
        assert tuple(a.shape) == tuple(b.shape)
        assert bits(h.to_numpy(a)) == bits(h.to_numpy(b)), code
        compared += 1
    assert compared >= 5, f"only {compared} dtypes could be compared with the reference"


def check_save_is_byte_identical(h: Hooks, tmp_path, arrays: Dict[str, object]) -> None:
    """Our save/save_file and the reference's make the same bytes, from the same
    framework arrays; the input dict is left as it was."""
    before = dict(arrays)
    ours = h.module.save(arrays, metadata={"format": h.name})
    assert list(arrays) == list(before) and all(arrays[k] is before[k] for k in before)
    theirs = h.reference.save(dict(arrays), metadata={"format": h.name})
    assert ours == theirs
    h.module.save_file(arrays, tmp_path / "ours.safetensors", metadata={"format": h.name})
    h.reference.save_file(dict(arrays), tmp_path / "theirs.safetensors", metadata={"format": h.name})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()
    back = h.module.load(ours)
    assert sorted(back) == sorted(arrays)
    for k in arrays:
        assert bits(h.to_numpy(back[k])) == bits(h.to_numpy(arrays[k]))


def check_safe_open_and_slices(h: Hooks, tmp_path) -> None:
    """get_tensor and get_slice through safe_open(framework=...), against the
    reference's, with the indexes the reference's own tests use."""
    import safetensors

    path = tmp_path / "s.safetensors"
    a = random_array("F32", (10, 5), 3)
    fnp.save_file({"a": a, "b": random_array("I32", (4, 3, 2), 4)}, path)
    indexes = [slice(None), (), slice(None, 2), (slice(None), slice(None, 2)), (0, slice(None, 2)),
               (slice(2, None), 0), (slice(2, None), -1), (slice(1, 9, 3),), (Ellipsis, 1)]
    for backend in ("mmap", "pread"):
        with fastensors.safe_open(path, framework=h.name, backend=backend, **h.load_kwargs) as f, \
                safetensors.safe_open(path, framework=h.name, **h.load_kwargs) as r:
            assert f.keys() == r.keys()
            for k in f.keys():
                assert bits(h.to_numpy(f.get_tensor(k))) == bits(h.to_numpy(r.get_tensor(k)))
            s = f.get_slice("a")
            assert s.get_shape() == [10, 5] and s.get_dtype() == "F32"
            want_type = type(f.get_tensor("a"))
            rs = r.get_slice("a") if h.reference_slices else None
            if rs is not None:
                assert s.get_shape() == rs.get_shape() and s.get_dtype() == rs.get_dtype()
            for idx in indexes:
                got = s[idx]
                assert type(got) is want_type, idx
                assert tuple(got.shape) == a[idx].shape, idx
                assert bits(h.to_numpy(got)) == bits(a[idx]), idx
                if rs is not None:
                    want = rs[idx]
                    assert type(got) is type(want) and tuple(got.shape) == tuple(want.shape), idx
                    assert bits(h.to_numpy(got)) == bits(h.to_numpy(want)), idx


def check_unsupported_dtypes_raise(h: Hooks, tmp_path) -> None:
    """Each dtype the framework lacks: a typed error naming the tensor and the
    dtype, from load_file, load, get_tensor and get_slice."""
    missing = sorted(set(CODE_DTYPES) - h.codes - set(h.narrowed))
    assert missing, "every dtype is supported: nothing to check"
    for code in missing:
        path = tmp_path / f"x_{code}.safetensors"
        fnp.save_file({"fine": np.zeros(2, np.float32), f"bad_{code}": random_array(code, (2, 2))}, path)
        for call in (lambda: h.module.load_file(path, **h.load_kwargs),
                     lambda: h.module.load(path.read_bytes()),
                     lambda: fastensors.safe_open(path, h.name, **h.load_kwargs).get_tensor(f"bad_{code}"),
                     lambda: fastensors.safe_open(path, h.name, **h.load_kwargs).get_slice(f"bad_{code}")):
            with pytest.raises(fastensors.DtypeNotInFramework) as e:
                call()
            assert f"bad_{code}" in str(e.value) and code in str(e.value)
        # the tensors it can hold still load from that file
        with fastensors.safe_open(path, h.name, **h.load_kwargs) as f:
            assert bits(h.to_numpy(f.get_tensor("fine"))) == bits(np.zeros(2, np.float32))


def check_bad_arguments_raise(h: Hooks, tmp_path, not_an_array) -> None:
    with pytest.raises(fastensors.InvalidArgument, match="must be"):
        h.module.save({"x": not_an_array})
    with pytest.raises(fastensors.InvalidArgument):
        h.module.save([("x", 1)])
    with pytest.raises(fastensors.SafetensorError):
        h.module.load(b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk!!")
    with pytest.raises(fastensors.FileNotFound):
        h.module.load_file(tmp_path / "missing.safetensors")


def shares_the_mapping(h: Hooks, tmp_path, aligned: bool) -> bool:
    """Whether a tensor loaded with the mmap backend sees a later in-place
    write to the file: only a view of the mapping can (the mapping is
    MAP_PRIVATE, whose untouched pages show the file's current bytes on
    Linux). ``aligned`` puts the tensor at a 64-byte file offset or off it."""
    import json
    import struct

    n = 1024
    header = {"t": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    if not aligned:
        header = {"pad": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                  "t": {"dtype": "F32", "shape": [n], "data_offsets": [8, 8 + 4 * n]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-(8 + len(text))) % 64)  # data section at a 64-byte offset
    end = max(v["data_offsets"][1] for v in header.values())
    path = tmp_path / f"share_{aligned}.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x00" * end)
    start = 8 + len(text) + header["t"]["data_offsets"][0]
    t = h.module.load_file(path, **h.load_kwargs)["t"]
    assert float(h.to_numpy(t)[5]) == 0.0
    with open(path, "r+b") as fh:
        fh.seek(start + 4 * 5)
        fh.write(np.float32(7.0).tobytes())
    return float(h.to_numpy(t)[5]) == 7.0


def check_round_trip_through_the_layout(h: Hooks, tmp_path, dst: str) -> None:
    """A PyTorch-layout checkpoint loads into ``dst``'s conventions in one call
    (as this framework's arrays) and converts back to the original bytes."""
    from fastensors import layout

    rng = np.random.default_rng(0)
    sd = {
        "embed.weight": rng.standard_normal((11, 4)).astype(np.float32),
        "layers.0.fc.weight": rng.standard_normal((6, 4)).astype(np.float32),
        "layers.0.fc.bias": rng.standard_normal(6).astype(np.float32),
        "layers.0.norm.weight": rng.standard_normal(6).astype(np.float32),
        "layers.0.norm.bias": rng.standard_normal(6).astype(np.float32),
        "conv.weight": rng.standard_normal((5, 3, 2, 2)).astype(np.float32),
    }
    path = tmp_path / "pt.safetensors"
    fnp.save_file(sd, path)
    params = layout.load(path, dst, framework=h.name)
    arrays = {k: h.to_numpy(v) for k, v in params.items()}
    assert all(type(v).__module__.split(".")[0] != "numpy" for v in params.values())
    kernel = "layers.0.fc.kernel"
    np.testing.assert_array_equal(arrays[kernel], sd["layers.0.fc.weight"].T)
    np.testing.assert_array_equal(arrays["conv.kernel"], sd["conv.weight"].transpose(2, 3, 1, 0))
    back = layout.convert(params, dst, "pytorch")
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        assert bits(h.to_numpy(back[k])) == bits(v), k
    # and saved back through the adapter, the file is the original's bytes
    h.module.save_file({k: back[k] for k in sd}, tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == path.read_bytes()
