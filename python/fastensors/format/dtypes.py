"""Dtype names: safetensors codes, numpy/ml_dtypes dtypes, and the
framework-style names the reference ``TensorSpec`` accepts."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .. import _core
from ..errors import UnknownDtype

# Every safetensors code, with its storage bits.
BITS: dict[str, int] = {name: _core.dtype_bits(name) for name in _core.dtype_names()}

# Codes whose elements are not whole bytes: packed densely on disk.
SUB_BYTE = frozenset(name for name, bits in BITS.items() if bits % 8)

# safetensors code -> numpy dtype of one element (sub-byte types unpacked).
NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "F4": np.dtype(ml_dtypes.float4_e2m1fn),
    "F6_E2M3": np.dtype(ml_dtypes.float6_e2m3fn),
    "F6_E3M2": np.dtype(ml_dtypes.float6_e3m2fn),
}
assert set(NUMPY) == set(BITS), "every safetensors dtype needs a numpy dtype"

_FROM_NUMPY = {dt: code for code, dt in NUMPY.items()}

# Names the reference TensorSpec takes (numpy / torch spellings), plus our
# codes themselves and ml_dtypes' names for the sub-byte types.
_SPEC_NAMES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16",
    "uint32": "U32", "int32": "I32", "uint64": "U64", "int64": "I64",
    "float16": "F16", "half": "F16", "bfloat16": "BF16", "float32": "F32", "float": "F32",
    "float64": "F64", "double": "F64", "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float4_e2m1fn_x2": "F4", "float4_e2m1fn": "F4",
    "float6_e2m3fn": "F6_E2M3", "float6_e3m2fn": "F6_E3M2",
}
_SPEC_NAMES.update({code: code for code in BITS})

# Storage dtypes that hold two F4 values per element (the shape counts pairs).
PACKED_PAIR_NAMES = frozenset({"float4_e2m1fn_x2"})


def code_from_spec_name(name: str) -> str:
    try:
        return _SPEC_NAMES[name]
    except KeyError:
        supported = ", ".join(sorted(_SPEC_NAMES))
        raise UnknownDtype(f'Unknown dtype "{name}". Supported dtypes: {supported}') from None


def code_from_numpy(dtype: np.dtype) -> str:
    dt = np.dtype(dtype)
    code = _FROM_NUMPY.get(dt.newbyteorder("=")) if dt.byteorder not in "=|" else _FROM_NUMPY.get(dt)
    if code is None:
        raise UnknownDtype(f"numpy dtype {dt} has no safetensors equivalent")
    return code


def nbytes_of(code: str, shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * BITS[code] // 8
