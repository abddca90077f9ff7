"""ggml itself, as built by llama-cpp-python, called through ctypes: the
oracle for the GGML block formats. ``load()`` returns None when
llama-cpp-python is not installed."""

from __future__ import annotations

import ctypes
import os
from typing import Optional

import numpy as np

# ggml's type numbers (enum ggml_type in ggml.h).
GGML_TYPE = {"q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
             "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14}


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h)
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class Ggml:
    """ggml_quantize_chunk and the types' to_float, over numpy arrays."""

    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

    def row_size(self, scheme: str, cols: int) -> int:
        return int(self._lib.ggml_row_size(GGML_TYPE[scheme], cols))

    def quantize(self, scheme: str, x: np.ndarray, imatrix: Optional[np.ndarray] = None) -> np.ndarray:
        """ggml_quantize_chunk of a 2-D float32 array: (rows, row bytes) uint8."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, cols = x.shape
        out = np.zeros((rows, self.row_size(scheme, cols)), np.uint8)
        w = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
        n = self._lib.ggml_quantize_chunk(GGML_TYPE[scheme], x.ctypes.data, out.ctypes.data, 0, rows, cols,
                                          None if w is None else w.ctypes.data)
        assert n == out.size
        return out

    def dequantize(self, scheme: str, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
        """The type's to_float over rows * cols values: float32 (rows, cols)."""
        data = np.ascontiguousarray(data, dtype=np.uint8)
        assert data.size == rows * self.row_size(scheme, cols)
        out = np.empty((rows, cols), np.float32)
        fn = _TO_FLOAT(self._lib.ggml_get_type_traits(GGML_TYPE[scheme]).contents.to_float)
        fn(data.ctypes.data, out.ctypes.data, rows * cols)
        return out


def load() -> Optional[Ggml]:
    try:
        import llama_cpp
    except ImportError:
        return None
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        path = os.path.join(lib_dir, name)
        if os.path.exists(path):
            return Ggml(ctypes.CDLL(path))
    return None
