"""Numpy arrays as writer input: ``(name, code, shape, data, nbytes)``
specs (``data`` a flat uint8 view) whose buffers the caller keeps alive while
the writer runs."""

from __future__ import annotations

from typing import Dict

import numpy as np

from ..errors import InvalidArgument
from .dtypes import SUB_BYTE, code_from_numpy
from .subbyte import pack
from .writer import byte_view


def numpy_specs(tensor_dict: Dict[str, np.ndarray], keep_alive: list) -> list:
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
