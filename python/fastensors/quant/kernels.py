"""Quantization: GGML block formats, int8/int4/int2, NF4 and FP8 E4M3.

``quantize`` turns an F32, F16 or BF16 numpy array into a
:class:`QuantizedTensor`; the kernels run in C++ (OpenMP, GIL released).
Formulas, layouts and the reference each scheme matches:
docs/quantization.md."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import ml_dtypes
import numpy as np

from .. import _core
from ..format.cast import convert as _copy
from ..errors import InvalidArgument

__all__ = ["QuantizedTensor", "quantize", "dequantize", "quality", "kernel_isa", "SCHEMES"]

GGML_SCHEMES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
INT_SCHEMES = {"int8": 8, "int4": 4, "int2": 2}
SCHEMES = (*GGML_SCHEMES, *INT_SCHEMES, "nf4", "fp8_e4m3")

_INPUT_CODES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
}
_QUALITY_CODES = {**_INPUT_CODES, np.dtype(np.float64): "F64"}
_NUMPY_BY_CODE = {code: dt for dt, code in _QUALITY_CODES.items()}
_DEFAULT_GROUP = {"int4": 128, "int2": 64}
_DEFAULT_SYMMETRIC = {"int8": True, "int4": True, "int2": False}


def _addr(a: np.ndarray) -> int:
    return a.ctypes.data


def _as_rows(array: np.ndarray, scheme: str, allow_1d: bool) -> Tuple[np.ndarray, int, int]:
    """A C-contiguous 2-D view (rows, last axis) of the input, or an error."""
    if array.ndim == 0:
        raise InvalidArgument(f"{scheme}: a scalar cannot be quantized")
    if array.ndim == 1 and not allow_1d:
        raise InvalidArgument(f"{scheme}: needs at least 2 dimensions (rows are output channels), got shape {array.shape}")
    # A strided view is copied by the core's kernel, not numpy's, so that a
    # file truncated under a mapped view raises FileChanged (docs/security.md).
    a = array if array.flags.c_contiguous else _copy(array, array.dtype)
    cols = a.shape[-1]
    rows = a.size // cols if cols else int(np.prod(a.shape[:-1], dtype=np.int64))
    return a, rows, cols


class QuantizedTensor:
    """A quantized array: packed ``data``, its ``scales`` and ``zero_points``,
    and what is needed to restore the original."""

    def __init__(self, scheme: str, shape: Tuple[int, ...], dtype: np.dtype, data: np.ndarray,
                 scales: np.ndarray, zero_points: Optional[np.ndarray], group_size: Optional[int],
                 granularity: Optional[str] = None):
        self.scheme = scheme
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.data = data
        self.scales = scales
        self.zero_points = zero_points
        self.group_size = group_size
        self.granularity = granularity

    def __repr__(self) -> str:
        return (f"QuantizedTensor(scheme={self.scheme!r}, shape={self.shape}, dtype={self.dtype}, "
                f"group_size={self.group_size}, nbytes={self.nbytes})")

    @property
    def _rows_cols(self) -> Tuple[int, int]:
        cols = self.shape[-1] if self.shape else 1
        n = int(np.prod(self.shape, dtype=np.int64))
        return (n // cols if cols else 0), cols

    @property
    def nbytes(self) -> int:
        """Bytes of data, scales and zero points together."""
        total = self.data.nbytes
        if self.scales is not None:
            total += self.scales.nbytes
        if self.zero_points is not None:
            total += self.zero_points.nbytes
        return total

    def compression_ratio(self) -> float:
        """Original bytes / quantized bytes (data, scales and zero points)."""
        original = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        return original / self.nbytes if self.nbytes else float("inf")

    def values(self) -> np.ndarray:
        """The integer codes (int8; NF4: code indices 0..15, GGML: the signed
        or unsigned block codes), or the FP8 values, in the original shape."""
        rows, cols = self._rows_cols
        s = self.scheme
        if s in INT_SCHEMES:
            if s == "int8":
                return self.data.reshape(self.shape)
            codes = np.empty((rows, cols), dtype=np.int8)
            _core.unpack_int32(_addr(self.data), rows, cols, INT_SCHEMES[s], _addr(codes))
            return codes.reshape(self.shape)
        if s == "fp8_e4m3":
            return self.data.view(ml_dtypes.float8_e4m3fn).reshape(self.shape)
        if s == "nf4":
            n = rows * cols
            nib = np.empty(2 * self.data.size, dtype=np.uint8)
            nib[0::2] = self.data >> 4
            nib[1::2] = self.data & 0x0F
            return nib[:n].reshape(self.shape)
        return _ggml_codes(s, self.data, rows, cols).reshape(self.shape)

    def dequantize(self, dtype="F32", *, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The reconstruction, computed in F32 and returned as ``dtype``
        (a safetensors name such as "F32"/"BF16" or a numpy dtype); ``out``
        as in :func:`fastensors.dequantize`."""
        return dequantize(self, dtype, out=out)


def _ggml_codes(scheme: str, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Unpack GGML blocks into their integer codes (Q8_0 signed, others 0..15/31)."""
    nb = rows * cols // 32
    blocks = data.reshape(nb, -1)
    if scheme == "q8_0":
        return blocks[:, 2:].view(np.int8).reshape(rows, cols).copy()
    head = {"q4_0": 2, "q4_1": 4, "q5_0": 6, "q5_1": 8}[scheme]
    qs = blocks[:, head:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)
    if scheme in ("q5_0", "q5_1"):
        qh = blocks[:, head - 4:head].copy().view("<u4").reshape(nb, 1)
        bits = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
        q = q | (bits << 4)
    return q.reshape(rows, cols)


def _out_dtype(dtype) -> np.dtype:
    if isinstance(dtype, str) and dtype in _NUMPY_BY_CODE:
        return _NUMPY_BY_CODE[dtype]
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise InvalidArgument(f"unknown output dtype {dtype!r}") from exc


def kernel_isa() -> str:
    """The instruction set the quantization kernels run with: ``"avx512"``,
    ``"avx2"`` or ``"scalar"``. It follows ``fastensors.isa()`` (chosen once
    per process, forced with ``FASTENSORS_ISA``; ``avx512bf16`` runs the
    AVX-512 kernels). Every level gives bit-identical results."""
    return _core.kernel_isa()


def quantize(array, scheme: str, *, group_size: Optional[int] = None, symmetric: Optional[bool] = None,
             granularity: Optional[str] = None) -> QuantizedTensor:
    """Quantize an F32/F16/BF16 array; the last axis is quantized.

    schemes: "q8_0", "q4_0", "q4_1", "q5_0", "q5_1" (GGML, bit-exact with the
    gguf package), "int8" (per channel, symmetric), "int4"/"int2" (group-wise;
    ``group_size`` 128/64, ``symmetric`` True/False by default), "nf4"
    (bitsandbytes blocks of 64), "fp8_e4m3" (``granularity`` "tensor",
    "channel" or "block")."""
    array = np.asarray(array)
    code = _INPUT_CODES.get(array.dtype)
    if code is None:
        raise InvalidArgument(f"quantize takes float32, float16 or bfloat16 arrays, not {array.dtype}")
    if scheme not in SCHEMES:
        raise InvalidArgument(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if scheme not in INT_SCHEMES and (group_size is not None or symmetric is not None):
        if not (scheme in ("nf4",) + GGML_SCHEMES and group_size in (None, 64 if scheme == "nf4" else 32)
                and symmetric is None):
            raise InvalidArgument(f"{scheme}: group_size and symmetric are fixed by the format")
    if scheme != "fp8_e4m3" and granularity is not None:
        raise InvalidArgument(f"{scheme}: granularity applies to fp8_e4m3 only")

    if scheme in GGML_SCHEMES:
        a, rows, cols = _as_rows(array, scheme, allow_1d=True)
        row_bytes = _core.ggml_row_bytes(scheme, cols)
        out = np.empty((rows, row_bytes), dtype=np.uint8)
        _core.ggml_quantize(scheme, _addr(a), code, rows, cols, _addr(out))
        return QuantizedTensor(scheme, array.shape, array.dtype, out, None, None, 32)

    if scheme in INT_SCHEMES:
        bits = INT_SCHEMES[scheme]
        a, rows, cols = _as_rows(array, scheme, allow_1d=False)
        if scheme == "int8":
            if group_size is not None and group_size != cols:
                raise InvalidArgument("int8 is per channel: group_size must be None or the row length")
            group_size = cols
        elif group_size is None:
            group_size = _DEFAULT_GROUP[scheme]
        if symmetric is None:
            symmetric = _DEFAULT_SYMMETRIC[scheme]
        group_size = int(group_size)
        if group_size <= 0 or (cols and cols % group_size):
            raise InvalidArgument(f"{scheme}: row length {cols} is not a multiple of the group size {group_size}")
        ngroups = cols // group_size if group_size else 0
        codes = np.empty((rows, cols), dtype=np.int8)
        scales = np.empty((rows, ngroups), dtype=array.dtype)
        zps = None if symmetric else np.zeros((rows, ngroups), dtype=np.int8)
        _core.int_quantize(_addr(a), code, rows, cols, bits, group_size, bool(symmetric), _addr(codes),
                           _addr(scales), _addr(zps) if zps is not None else 0)
        if bits == 8:
            data = codes
        else:
            data = np.empty((rows, _core.packed_words(cols, bits)), dtype=np.int32)
            _core.pack_int32(_addr(codes), rows, cols, bits, _addr(data))
        return QuantizedTensor(scheme, array.shape, array.dtype, data, scales, zps, group_size)

    if scheme == "nf4":
        a, rows, cols = _as_rows(array, scheme, allow_1d=True)
        n = rows * cols
        out = np.empty((n + 1) // 2, dtype=np.uint8)
        absmax = np.empty((n + 63) // 64, dtype=np.float32)
        _core.nf4_quantize(_addr(a), code, rows, cols, _addr(out), _addr(absmax))
        return QuantizedTensor(scheme, array.shape, array.dtype, out, absmax, None, 64)

    # fp8_e4m3
    granularity = "tensor" if granularity is None else granularity
    a, rows, cols = _as_rows(array, scheme, allow_1d=(granularity == "tensor"))
    count = _core.fp8_scale_count(granularity, rows, cols)
    out = np.empty((rows, cols), dtype=np.uint8)
    scales = np.empty(count, dtype=array.dtype)
    _core.fp8_quantize(_addr(a), code, rows, cols, granularity, _addr(out), _addr(scales))
    if granularity == "channel":
        scales = scales.reshape(rows, 1)
    elif granularity == "block":
        scales = scales.reshape(-(-rows // 128), -(-cols // 128))
    return QuantizedTensor(scheme, array.shape, array.dtype, out, scales, None, None, granularity)


def _aligned_f32(rows: int, cols: int) -> np.ndarray:
    """A fresh F32 (rows, cols) array starting on a 64-byte boundary, so the
    kernels can use streaming stores (numpy only guarantees 16 bytes)."""
    n = rows * cols
    raw = np.empty(4 * n + 64, dtype=np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + 4 * n].view(np.float32).reshape(rows, cols)


def _check_out(out, qt: QuantizedTensor) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise InvalidArgument(f"dequantize: out must be a numpy array, not {type(out).__name__}")
    if out.dtype != np.float32:
        raise InvalidArgument(f"dequantize: out must be float32, not {out.dtype}")
    if out.shape != tuple(qt.shape):
        raise InvalidArgument(f"dequantize: out has shape {out.shape}, the tensor has shape {tuple(qt.shape)}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidArgument("dequantize: out must be C-contiguous and writeable")
    return out


def dequantize(qt: QuantizedTensor, dtype="F32", *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Reconstruct a :class:`QuantizedTensor` (computed in F32, returned as ``dtype``).

    ``out``: a C-contiguous float32 array of the tensor's shape to write into
    (``dtype`` must then be F32); reusing one across calls skips allocating
    and first-touching a fresh output, which costs more than the kernels."""
    rows, cols = qt._rows_cols
    target = _out_dtype(dtype)
    if out is not None:
        if target != np.float32:
            raise InvalidArgument(f"dequantize: out= is float32, but dtype={dtype!r} was asked for")
        res = _check_out(out, qt).reshape(rows, cols)
    else:
        res = _aligned_f32(rows, cols)
    s = qt.scheme
    if s in GGML_SCHEMES:
        _core.ggml_dequantize(s, _addr(qt.data), rows, cols, _addr(res))
    elif s in INT_SCHEMES:
        sd = _INPUT_CODES[np.dtype(qt.scales.dtype)]
        zp = _addr(qt.zero_points) if qt.zero_points is not None else 0
        if s == "int8":
            codes = np.ascontiguousarray(qt.data.reshape(rows, cols))
            _core.int_dequantize(_addr(codes), _addr(qt.scales), sd, zp, rows, cols, qt.group_size, _addr(res))
        else:  # packed int32 words, unpacked row by row in the kernel
            packed = np.ascontiguousarray(qt.data)  # a name keeps a copy alive through the call
            _core.int_dequantize_packed(_addr(packed), INT_SCHEMES[s], _addr(qt.scales), sd, zp, rows, cols,
                                        qt.group_size, _addr(res))
    elif s == "nf4":
        _core.nf4_dequantize(_addr(qt.data), _addr(qt.scales), rows * cols, _addr(res))
    elif s == "fp8_e4m3":
        sd = _INPUT_CODES[np.dtype(qt.scales.dtype)]
        _core.fp8_dequantize(_addr(qt.data), _addr(np.ascontiguousarray(qt.scales)), sd, qt.granularity,
                             rows, cols, _addr(res))
    else:
        raise InvalidArgument(f"unknown scheme {s!r}")
    if out is not None:
        return out
    res = res.reshape(qt.shape)
    if target == np.float32:
        return res
    if target in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float64)):
        return _copy(res, target)  # the SIMD converter, bit-exact with numpy / ml_dtypes
    return res.astype(target)


def quality(reference, candidate) -> Dict[str, float]:
    """cosine, sqnr_db, rmse and max_abs_err of ``candidate`` against
    ``reference`` (same number of elements; float64/32/16 or bfloat16),
    computed in C++ in one pass, in double. C-contiguous inputs are not copied."""
    ref = np.asarray(reference)
    cand = np.asarray(candidate)
    if ref.size != cand.size:
        raise InvalidArgument(f"quality: {ref.size} reference elements but {cand.size} candidate elements")
    codes = []
    for name, a in (("reference", ref), ("candidate", cand)):
        c = _QUALITY_CODES.get(a.dtype)
        if c is None:
            raise InvalidArgument(f"quality: the {name} must be float64, float32, float16 or bfloat16, not {a.dtype}")
        codes.append(c)
    ref = np.ascontiguousarray(ref)
    cand = np.ascontiguousarray(cand)
    cos, sqnr, rmse, mx = _core.quality(_addr(ref), codes[0], _addr(cand), codes[1], ref.size)
    return {"cosine": cos, "sqnr_db": sqnr, "rmse": rmse, "max_abs_err": mx}
