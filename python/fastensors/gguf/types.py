"""GGUF tensor types: one table from the lowercase GGUF type name to how we
encode it (a numpy dtype for dense types, a ``_core.GgmlType`` member for
block formats), plus encoding and decoding one tensor.

Block formats are available when the compiled extension has their kernels
(``_core.GgmlType`` members); the K-quants slot in by name once it does."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import ml_dtypes
import numpy as np

from .. import _core
from ..errors import InvalidArgument

# Keys only our files carry: how to read a file back to the checkpoint's names
# (JSON), and the source config.json (as the older HF-names writer stores it).
FORMAT_KEY = "fastensors.gguf_export"
CONFIG_KEY = "hf.config_json"
FORMAT_VERSION = 1

# GGUF type name -> numpy dtype (dense) or None (block format, kernel in _core).
_DENSE = {"f32": np.dtype(np.float32), "f16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
_BLOCK = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
# Inputs the kernels take, by numpy dtype -> the code they are told.
_KERNEL_INPUT = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(ml_dtypes.bfloat16): "BF16"}
_UINT = {2: np.dtype(np.uint16), 4: np.dtype(np.uint32)}


def ggml_member(name: str):
    """The ``_core.GgmlType`` member for block type ``name``, or None for a
    name that is not a GGML block type."""
    return getattr(_core.GgmlType, name, None)


def available_types() -> Tuple[str, ...]:
    """GGUF type names the exporter writes: the dense ones and every GGML
    block format (all have kernels in ``_core``)."""
    return tuple(_DENSE) + _BLOCK


def gguf_type(name: str):
    """``gguf.GGMLQuantizationType`` for a lowercase GGUF type name."""
    import gguf

    return gguf.GGMLQuantizationType[name.upper()]


def block_size(name: str) -> int:
    """Values per block (1 for dense types)."""
    import gguf

    return gguf.GGML_QUANT_SIZES[gguf_type(name)][0]


def can_hold(name: str, shape: Tuple[int, ...]) -> bool:
    """Whether a tensor of numpy-order ``shape`` fits type ``name`` (rows a
    whole number of blocks)."""
    if name in _DENSE:
        return True
    return bool(shape) and shape[-1] % block_size(name) == 0


def nbytes(name: str, shape: Tuple[int, ...]) -> int:
    """Bytes a tensor of numpy-order ``shape`` takes as type ``name``."""
    import gguf

    n_block, size = gguf.GGML_QUANT_SIZES[gguf_type(name)]
    elems = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return elems // n_block * size


def _check(name: str) -> None:
    if name not in available_types():
        raise InvalidArgument(f"GGUF type {name!r} cannot be written; available: {', '.join(available_types())}")


def has_weighted(name: str) -> bool:
    """Whether block type ``name`` quantizes differently with an importance
    matrix (all of them but q8_0, whose weights ggml ignores)."""
    member = ggml_member(name)
    return member is not None and bool(_core.ggml_has_weighted(member))


def encode(array: np.ndarray, name: str, imatrix: Optional[np.ndarray] = None) -> np.ndarray:
    """``array`` (float32, float16 or bfloat16, numpy order) as the bytes of
    GGUF type ``name``: a dense array of the type, or uint8 blocks of shape
    (rows, row bytes). ``imatrix``: float32 weights for a type with
    :func:`has_weighted`, one per column, or ``n`` slices of one per column
    for a tensor of shape (n, rows, cols) (stacked experts, each quantized
    with its slice, as llama-quantize does). Raises InvalidArgument for an
    unknown type, a row length that is not a whole number of blocks, or
    weights that do not fit."""
    _check(name)
    if name in _DENSE:
        target = _DENSE[name]
        a = array if array.dtype == target else array.astype(np.float32).astype(target)
        return np.ascontiguousarray(a)
    if array.dtype not in _KERNEL_INPUT:
        array = array.astype(np.float32)
    if not can_hold(name, array.shape):
        raise InvalidArgument(f"{name} needs rows that are a multiple of {block_size(name)} values, "
                              f"got shape {array.shape}")
    cols = array.shape[-1]
    rows = array.size // cols
    member = ggml_member(name)
    out = np.empty((rows, _core.ggml_row_bytes(member, cols)), dtype=np.uint8)
    a = np.ascontiguousarray(array).reshape(rows, cols)
    if imatrix is None:
        _core.ggml_quantize(member, a.view(_UINT[a.itemsize]), _KERNEL_INPUT[a.dtype], out)
        return out
    w = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    slices = array.shape[-3] if array.ndim >= 3 else 1
    if not has_weighted(name) or slices < 1 or w.size != slices * cols or rows % slices:
        raise InvalidArgument(f"{name}: {w.size} importance weights do not fit a tensor of shape {array.shape}")
    per = rows // slices
    for e in range(slices):
        part = a[e * per:(e + 1) * per]
        _core.ggml_quantize(member, part.view(_UINT[a.itemsize]), _KERNEL_INPUT[a.dtype], out[e * per:(e + 1) * per],
                            w[e * cols:(e + 1) * cols])
    return out


def decode(raw: np.ndarray, name: str, shape: Tuple[int, ...]) -> np.ndarray:
    """The values a GGUF tensor of type ``name`` and numpy-order ``shape``
    holds: float32 for block formats (``_core.ggml_dequantize``), the
    stored dtype for dense ones."""
    raw = np.ascontiguousarray(raw)
    if name in _DENSE:
        return raw.reshape(-1).view(np.uint8).view(_DENSE[name]).reshape(shape)
    member = ggml_member(name)
    if member is None:
        raise InvalidArgument(f"GGUF type {name!r} cannot be read by this build of fastensors")
    cols = shape[-1] if shape else 1
    rows = int(np.prod(shape, dtype=np.int64)) // cols if cols else 0
    out = np.empty((rows, cols), dtype=np.float32)
    _core.ggml_dequantize(member, raw.reshape(-1).view(np.uint8).reshape(rows, -1), out)
    return out.reshape(shape)


def type_name_of(qtype) -> Optional[str]:
    """Lowercase name of a ``gguf.GGMLQuantizationType`` we know, else None."""
    n = qtype.name.lower()
    return n if n in _DENSE or n in _BLOCK else None


# Uniform recipes -> llama.cpp's file type name (gguf.LlamaFileType member).
UNIFORM_FILE_TYPES: Dict[str, str] = {
    "f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
    "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1", "q5_0": "MOSTLY_Q5_0", "q5_1": "MOSTLY_Q5_1",
}
