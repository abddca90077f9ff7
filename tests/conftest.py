"""Shared helpers for the fastensors test suite.

The oracles are independent implementations: the reference ``safetensors``
package (writer and reader), ``ml_dtypes`` and ``torch``."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from typing import Dict, Iterable, List, Optional, Tuple, Union

import ml_dtypes
import numpy as np
import pytest

BACKENDS = ("mmap", "pread")

# numpy dtypes both writers accept (the reference takes ml_dtypes' 8- and
# 16-bit floats too, but not the sub-byte ones).
NUMPY_DTYPES = [
    np.dtype(np.bool_),
    np.dtype(np.uint8),
    np.dtype(np.int8),
    np.dtype(np.uint16),
    np.dtype(np.int16),
    np.dtype(np.uint32),
    np.dtype(np.int32),
    np.dtype(np.uint64),
    np.dtype(np.int64),
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.complex64),
    np.dtype(ml_dtypes.bfloat16),
    np.dtype(ml_dtypes.float8_e4m3fn),
    np.dtype(ml_dtypes.float8_e5m2),
    np.dtype(ml_dtypes.float8_e4m3fnuz),
    np.dtype(ml_dtypes.float8_e5m2fnuz),
    np.dtype(ml_dtypes.float8_e8m0fnu),
]

# safetensors code of each numpy dtype above, as the reference writes it.
NUMPY_CODES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16",
    "uint32": "U32", "int32": "I32", "uint64": "U64", "int64": "I64", "float16": "F16",
    "float32": "F32", "float64": "F64", "complex64": "C64", "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0",
}

# torch dtype names (attribute of the torch module) and their codes.
TORCH_DTYPES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16",
    "uint32": "U32", "int32": "I32", "uint64": "U64", "int64": "I64",
    "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64",
    "complex64": "C64", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0", "float4_e2m1fn_x2": "F4",
}


def sample_array(dtype, shape, seed: int = 0) -> np.ndarray:
    """Deterministic, varied values of ``dtype`` (bit patterns for the
    narrow floats, so NaNs and odd encodings are included)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if dtype == np.bool_:
        return rng.integers(0, 2, n).astype(np.bool_).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True).reshape(shape)
    if dtype.kind == "c":
        return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype).reshape(shape)
    if dtype.itemsize == 1 or dtype == np.dtype(ml_dtypes.bfloat16):
        # every bit pattern is some value of these formats
        raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
        return raw.view(dtype).reshape(shape)
    return (rng.standard_normal(n) * 100).astype(dtype).reshape(shape)


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (so NaNs compare equal)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def torch_bytes(t) -> bytes:
    """The raw bytes of a CPU torch tensor (any dtype)."""
    import torch

    t = t.contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def torch_sample(name: str, shape, seed: int = 0):
    """A CPU torch tensor of dtype ``torch.<name>`` with varied values (raw
    bit patterns for bfloat16 / float8 / float4)."""
    import torch

    dt = getattr(torch, name)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if n == 0:
        return torch.empty(shape, dtype=dt)
    if name in ("bool", "float16", "float32", "float64", "complex64") or name.startswith(("int", "uint")):
        return torch.from_numpy(sample_array(np.dtype(name), shape, seed)).clone()
    itemsize = torch.empty((), dtype=dt).element_size()
    raw = sample_array(np.uint8, (n * itemsize,), seed)
    return torch.from_numpy(raw).view(dt).reshape(shape).clone()


def same_tensor(a, b) -> bool:
    """Equal dtype, shape and bytes of two torch tensors."""
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and torch_bytes(a) == torch_bytes(b)


def raw_file(header: Union[str, bytes, dict], data: bytes = b"", *, length: Optional[int] = None) -> bytes:
    """The bytes of a safetensors file: 8-byte little-endian header length,
    the header (a dict is dumped compactly) and the data, unchecked."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + data


def write_bytes(path, content: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(content)
    return os.fspath(path)


def split_header(content: bytes) -> Tuple[dict, bytes]:
    """Parse a file's header (as JSON) and return it with the data section."""
    (n,) = struct.unpack("<Q", content[:8])
    return json.loads(content[8 : 8 + n]), content[8 + n :]


def same_up_to_metadata_order(ours: bytes, ref: bytes) -> bool:
    """Files equal except for the order of ``__metadata__`` keys (the
    reference orders them arbitrarily; fastensors keeps insertion order)."""
    if len(ours) != len(ref):
        return False
    h1, d1 = split_header(ours)
    h2, d2 = split_header(ref)
    if d1 != d2 or h1 != h2:
        return False
    # Tensor entries must be in the same order too.
    return [k for k in h1 if k != "__metadata__"] == [k for k in h2 if k != "__metadata__"]


def run_python(code: str, *, env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; fail the test with its output if it fails."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"subprocess failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_file(tmp_path):
    """make_file(header, data=b"", length=None, name=...) -> path of a raw file."""
    counter = iter(range(1_000_000))

    def make(header, data: bytes = b"", *, length: Optional[int] = None, name: Optional[str] = None) -> str:
        path = tmp_path / (name or f"f{next(counter)}.safetensors")
        return write_bytes(path, raw_file(header, data, length=length))

    return make


def tensors_in(names: Iterable[str], shape=(2, 3), dtype=np.float32) -> Dict[str, np.ndarray]:
    return {n: sample_array(dtype, shape, seed=i) for i, n in enumerate(names)}


__all__: List[str] = [
    "BACKENDS", "NUMPY_DTYPES", "NUMPY_CODES", "TORCH_DTYPES", "sample_array", "same_array",
    "torch_bytes", "torch_sample", "same_tensor", "raw_file", "write_bytes", "split_header",
    "same_up_to_metadata_order", "run_python", "tensors_in",
]


@pytest.fixture(scope="session")
def fault_shim(tmp_path_factory) -> str:
    """The LD_PRELOAD fault shim (tests/faultinject/faultinject.c), compiled
    once per session with the system compiler."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = str(tmp_path_factory.mktemp("faultinject") / "faultinject.so")
    src = os.path.join(here, "faultinject", "faultinject.c")
    proc = subprocess.run(["cc", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", out, src,
                           "-ldl", "-lpthread"], capture_output=True, text=True)
    assert proc.returncode == 0, f"the fault shim does not compile:\n{proc.stderr}"
    return out
