"""Where the pieces of a row-major tensor lie in its bytes, and the dtype
names torch and safetensors give each other.

A chunk is a box of a tensor (``offsets`` and ``sizes`` per dimension, in
storage elements). Its elements lie in the tensor's bytes as equal runs: one
run per index of the dimensions before the last partial one. Row shards are
one run; column shards of a matrix are one run per row."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

from ..errors import UnknownDtype
from ..format.dtypes import code_from_spec_name

# safetensors code -> torch dtype, for the codes torch has (F6 has none).
_TORCH: dict = {}
for _code, _name in (
    ("BOOL", "bool"), ("U8", "uint8"), ("I8", "int8"), ("U16", "uint16"), ("I16", "int16"),
    ("U32", "uint32"), ("I32", "int32"), ("U64", "uint64"), ("I64", "int64"),
    ("F16", "float16"), ("BF16", "bfloat16"), ("F32", "float32"), ("F64", "float64"), ("C64", "complex64"),
    ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("F8_E8M0", "float8_e8m0fnu"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2FNUZ", "float8_e5m2fnuz"), ("F4", "float4_e2m1fn_x2"),
):
    if hasattr(torch, _name):
        _TORCH[_code] = getattr(torch, _name)

# Stored with two values per byte: torch's shape counts pairs, the header values.
PACKED_PAIRS = frozenset({"F4"})


def code_of(dtype: "torch.dtype") -> str:
    """The safetensors code of a torch dtype (UnknownDtype if there is none)."""
    return code_from_spec_name(str(dtype).split(".")[-1])


def torch_dtype(code: str, tensor: str = "") -> "torch.dtype":
    """The torch dtype of a safetensors code (UnknownDtype if torch has none)."""
    try:
        return _TORCH[code]
    except KeyError:
        where = f" (tensor `{tensor}`)" if tensor else ""
        raise UnknownDtype(f"dtype {code}{where} has no torch equivalent; load it with fastensors.safe_open") from None


def header_shape(code: str, storage_shape: Sequence[int]) -> List[int]:
    """The shape a header records for a tensor of torch (storage) shape."""
    shape = [int(d) for d in storage_shape]
    if code in PACKED_PAIRS and shape:
        shape[-1] *= 2
    return shape


def storage_shape(code: str, header: Sequence[int]) -> List[int]:
    """The torch (storage) shape of a tensor whose header records ``header``."""
    shape = [int(d) for d in header]
    if code in PACKED_PAIRS and shape:
        shape[-1] //= 2
    return shape


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def byte_runs(shape: Sequence[int], itemsize: int, offsets: Sequence[int],
              sizes: Sequence[int]) -> Tuple[np.ndarray, int]:
    """The chunk ``offsets``/``sizes`` of a C-ordered tensor of ``shape``:
    ``(starts, length)``, the byte offset of each run in the tensor and the
    bytes of every run. Run ``i`` holds bytes ``[i*length, (i+1)*length)``
    of the chunk laid out contiguously. No runs for an empty chunk."""
    shape = [int(d) for d in shape]
    offsets = [int(o) for o in offsets]
    sizes = [int(s) for s in sizes]
    if not shape:
        return np.zeros(1, np.int64), itemsize
    if any(s == 0 for s in sizes):
        return np.zeros(0, np.int64), 0
    strides = [itemsize] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    # The last dimension not covered whole: the runs are along it and past it.
    k = len(shape) - 1
    while k > 0 and offsets[k] == 0 and sizes[k] == shape[k]:
        k -= 1
    length = sizes[k] * strides[k]
    starts = np.array([offsets[k] * strides[k]], np.int64)
    for d in range(k - 1, -1, -1):
        axis = (offsets[d] + np.arange(sizes[d], dtype=np.int64)) * strides[d]
        starts = (axis[:, None] + starts[None, :]).reshape(-1)
    return starts, length


def overlap(a_off: Sequence[int], a_size: Sequence[int], b_off: Sequence[int],
            b_size: Sequence[int]) -> Tuple[List[int], List[int]]:
    """The box two boxes share: ``(offsets, sizes)``; some size 0 if none."""
    offs, sizes = [], []
    for ao, asz, bo, bsz in zip(a_off, a_size, b_off, b_size):
        lo = max(int(ao), int(bo))
        hi = min(int(ao) + int(asz), int(bo) + int(bsz))
        offs.append(lo)
        sizes.append(max(0, hi - lo))
    return offs, sizes
