"""numpy adapter: the reference ``safetensors.numpy`` verbs. BF16 and FP8
load as ml_dtypes dtypes; arrays from files are zero-copy views."""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

import numpy as np

from . import _core
from ._dtypes import SUB_BYTE, code_from_numpy
from ._errors import InvalidArgument
from ._frameworks import get_framework
from ._open import safe_open
from ._serialize import byte_view, serialize_specs, write_specs
from ._subbyte import pack
from .remap import apply as remap_apply


def _specs(tensor_dict: Dict[str, np.ndarray], keep_alive: list) -> list:
    if not isinstance(tensor_dict, dict):
        raise InvalidArgument(f"expected a dict of str to numpy.ndarray, not {type(tensor_dict).__name__}")
    specs = []
    for name, arr in tensor_dict.items():
        if not isinstance(arr, np.ndarray):
            raise InvalidArgument(f"tensor `{name}` must be a numpy.ndarray, not {type(arr).__name__}")
        code = code_from_numpy(arr.dtype)
        shape = list(arr.shape)
        if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
            arr = arr.astype(arr.dtype.newbyteorder("<"))  # the format is little-endian
        if code in SUB_BYTE:
            arr = pack(arr, code)
        elif not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        keep_alive.append(arr)
        specs.append((name, code, shape, byte_view(arr), arr.nbytes))
    return specs


def save(tensor_dict: Dict[str, np.ndarray], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensor_dict``."""
    keep_alive: list = []
    return serialize_specs(_specs(tensor_dict, keep_alive), metadata)


def save_file(
    tensor_dict: Dict[str, np.ndarray],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
    *,
    durable: Optional[bool] = None,
    remap=None,
) -> None:
    """Write ``tensor_dict`` to ``filename`` atomically; ``durable=False``
    skips the fsyncs (``FASTENSORS_DURABLE=0`` does for the whole process).
    ``remap`` renames the tensors on the way (``fastensors.remap``)."""
    if remap is not None:
        tensor_dict = remap_apply(tensor_dict, remap)
    keep_alive: list = []
    write_specs(_specs(tensor_dict, keep_alive), filename, metadata, durable)


def load(data: bytes) -> Dict[str, np.ndarray]:
    """Tensors of an in-memory file; arrays are read-only views of ``data``."""
    if not isinstance(data, bytes):
        data = bytes(data)
    infos, _meta, start = _core.parse_buffer(data)
    fw = get_framework("numpy")
    out = {}
    for name, dtype, shape, b, e in infos:
        raw = np.frombuffer(data, np.uint8, count=e - b, offset=start + b)
        out[name] = fw.from_bytes(raw, dtype, shape)
    return out


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap", dtype=None,
              **select) -> Dict[str, np.ndarray]:
    """All tensors of ``filename``; zero-copy views with the mmap backend.

    ``dtype`` ("bf16", "F32", ``np.float16``, ...): float tensors are
    converted to it while reading, bit-exact with ml_dtypes
    (docs/dtypes.md); integer, BOOL and complex tensors are never converted.
    ``remap``, ``include``, ``exclude`` and ``prefix`` choose and rename
    tensors as in ``safe_open``."""
    with safe_open(filename, framework="np", backend=backend, **select) as f:
        return f.get_tensors(dtype=dtype)


__all__ = ["save", "save_file", "load", "load_file"]
