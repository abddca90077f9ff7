"""Packing of sub-byte dtypes (docs/format.md, "Sub-byte types").

F4 holds two values per byte, the first in the low nibble (as PyTorch's
float4_e2m1fn_x2 does). F6_* hold four values in three bytes as a
little-endian bit stream: value i occupies bits 6i .. 6i+5.
numpy has no sub-byte arrays, so these unpack to one ml_dtypes element per
value on read and pack on write."""

from __future__ import annotations

import numpy as np

from .dtypes import NUMPY


def unpack(raw: np.ndarray, code: str, shape) -> np.ndarray:
    """uint8 bytes -> an array of ``shape`` in the code's ml_dtypes dtype."""
    b = raw.astype(np.uint8, copy=False).reshape(-1)
    if code == "F4":
        codes = np.empty(b.size * 2, np.uint8)
        codes[0::2] = b & 0x0F
        codes[1::2] = b >> 4
    else:
        t = b.reshape(-1, 3).astype(np.uint32)
        word = t[:, 0] | (t[:, 1] << 8) | (t[:, 2] << 16)
        codes = np.empty((t.shape[0], 4), np.uint8)
        for i in range(4):
            codes[:, i] = (word >> (6 * i)) & 0x3F
        codes = codes.reshape(-1)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    return codes[:n].view(NUMPY[code]).reshape(shape)


def pack(arr: np.ndarray, code: str) -> np.ndarray:
    """An ml_dtypes sub-byte array -> its packed uint8 bytes."""
    codes = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    if code == "F4":
        if codes.size % 2:
            raise ValueError("F4 tensors need an even number of elements to fill whole bytes")
        return (codes[0::2] & 0x0F) | (codes[1::2] << 4)
    if codes.size % 4:
        raise ValueError(f"{code} tensors need a multiple of 4 elements to fill whole bytes")
    q = codes.reshape(-1, 4).astype(np.uint32) & 0x3F
    word = q[:, 0] | (q[:, 1] << 6) | (q[:, 2] << 12) | (q[:, 3] << 18)
    out = np.empty((q.shape[0], 3), np.uint8)
    out[:, 0] = word & 0xFF
    out[:, 1] = (word >> 8) & 0xFF
    out[:, 2] = (word >> 16) & 0xFF
    return out.reshape(-1)
