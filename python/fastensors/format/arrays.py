"""Turning tensor bytes into framework arrays. One small class per
framework, all fed the same way: the raw bytes (a uint8 numpy array, a
zero-copy view of the mapping when possible), the safetensors code, the shape."""

from __future__ import annotations

import numpy as np

from .dtypes import NUMPY, SUB_BYTE
from ..errors import InvalidArgument, InvalidShape
from .subbyte import unpack

_MAX_DIM = int(np.iinfo(np.intp).max)


_MAX_NDIM = 64  # numpy 2 and torch


def _check_dims(shape) -> None:
    """A header may hold any number of dimensions, each up to 2^64 - 1 (a
    zero-sized tensor may have any other dimension); arrays stop at 64
    dimensions of at most 2^63 - 1."""
    if len(shape) > _MAX_NDIM:
        raise InvalidShape(f"{len(shape)} dimensions: arrays have at most {_MAX_NDIM}")
    for d in shape:
        if d > _MAX_DIM:
            raise InvalidShape(f"dimension {d} of shape {list(shape)} is larger than an array can have (2^63 - 1)")


class NumpyFramework:
    name = "numpy"

    def from_bytes(self, raw: np.ndarray, code: str, shape) -> np.ndarray:
        _check_dims(shape)
        if code in SUB_BYTE:
            return unpack(raw, code, shape)
        return raw.view(NUMPY[code]).reshape(shape)

    def from_numpy(self, arr: np.ndarray, code: str) -> np.ndarray:
        return arr

    def to_device(self, arr, device):
        if device not in (None, "cpu"):
            raise InvalidArgument(f"numpy arrays live on the CPU; device={device!r} is not available")
        return arr


class TorchFramework:
    """Built only from Python-level torch APIs (from_numpy, Tensor.view,
    reshape, to), so torch-compatible stand-ins work too."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        names = {
            "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
            "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
            "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
            "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
            "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
            "F8_E5M2FNUZ": "float8_e5m2fnuz", "F4": "float4_e2m1fn_x2",
        }
        self.dtypes = {code: getattr(torch, n) for code, n in names.items() if hasattr(torch, n)}

    def dtype(self, code: str):
        try:
            return self.dtypes[code]
        except KeyError:
            raise InvalidArgument(f"this torch has no dtype for {code}; load it with framework='numpy'") from None

    def from_bytes(self, raw: np.ndarray, code: str, shape):
        return self.from_uint8(self.torch.from_numpy(raw) if raw.size else None, code, shape)

    def from_uint8(self, t, code: str, shape, device=None):
        """A tensor of ``code`` and ``shape`` over the uint8 tensor ``t`` (any
        device; None when there are no bytes: a new empty tensor on
        ``device``, the CPU by default)."""
        dt = self.dtype(code)
        shape = list(shape)
        _check_dims(shape)
        if code == "F4":  # two values per float4_e2m1fn_x2 element
            if not shape:
                raise InvalidArgument("an F4 scalar cannot be a float4_e2m1fn_x2 tensor")
            if shape[-1] % 2:
                raise InvalidArgument(
                    f"F4 shape {shape}: float4_e2m1fn_x2 needs an even last dimension; load it with framework='numpy'"
                )
            shape[-1] //= 2
        if t is None:  # torch cannot view an empty buffer as a wider type
            if device is None:
                return self.torch.empty(shape, dtype=dt)
            return self.torch.empty(shape, dtype=dt, device=device)
        return t.view(dt).reshape(shape)

    def from_numpy(self, arr: np.ndarray, code: str):
        if code in SUB_BYTE:
            raise InvalidArgument(f"slicing {code} tensors into torch is not supported; use framework='numpy'")
        if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
            arr = arr.copy(order="C")
        raw = arr.reshape(-1).view(np.uint8)
        return self.from_bytes(raw, code, arr.shape)

    def to_device(self, t, device):
        if device in (None, "cpu"):
            return t
        if isinstance(device, int):
            device = f"cuda:{device}"
        return t.to(device)


_ALIASES = {"np": "numpy", "numpy": "numpy", "pt": "torch", "torch": "torch", "pytorch": "torch"}
_CACHE: dict = {}


def get_framework(name: str):
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise InvalidArgument(f"framework {name!r} is not supported (use 'numpy'/'np' or 'pt'/'torch')")
    fw = _CACHE.get(key)
    if fw is None:
        fw = _CACHE[key] = NumpyFramework() if key == "numpy" else TorchFramework()
    return fw
