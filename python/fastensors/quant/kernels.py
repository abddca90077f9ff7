"""Quantization: GGML block formats (with the K-quants), int8/int4/int2, NF4
and FP8 E4M3.

``quantize`` turns an F32, F16 or BF16 numpy array into a
:class:`QuantizedTensor`; the kernels run in C++ (OpenMP, GIL released).
Formulas, layouts and the reference each scheme matches:
docs/quantization.md."""

from __future__ import annotations

import math
import operator
from typing import Dict, Optional, Tuple

import ml_dtypes
import numpy as np

from .. import _core
from ..errors import InvalidArgument, InvalidOutput
from ..format.cast import convert as _copy

__all__ = ["QuantizedTensor", "quantize", "dequantize", "quality", "kernel_isa", "SCHEMES"]

GGML_SCHEMES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
# ggml's K-quants: super-blocks of 256 values, byte-identical with ggml.
KQUANT_SCHEMES = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
INT_SCHEMES = {"int8": 8, "int4": 4, "int2": 2}
SCHEMES = (*GGML_SCHEMES, *KQUANT_SCHEMES, *INT_SCHEMES, "nf4", "fp8_e4m3")

_INPUT_CODES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(ml_dtypes.bfloat16): "BF16",
}
_QUALITY_CODES = {**_INPUT_CODES, np.dtype(np.float64): "F64"}
_NUMPY_BY_CODE = {code: dt for dt, code in _QUALITY_CODES.items()}
_DEFAULT_GROUP = {"int4": 128, "int2": 64}
_DEFAULT_SYMMETRIC = {"int8": True, "int4": True, "int2": False}
_GGML_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24,
                     "q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210}
_GGML_BLOCK = {**{s: 32 for s in GGML_SCHEMES}, **{s: 256 for s in KQUANT_SCHEMES}}
_FP8_TILE = 128
GRANULARITIES = ("tensor", "channel", "block")
# Unsigned views of float values: the kernels take bit patterns of the dtype named.
_UINT = {2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}


def _raw(a: np.ndarray) -> np.ndarray:
    """A C-contiguous float array as the unsigned integers of its bits."""
    return a.view(_UINT[a.itemsize])


def _words(cols: int, bits: int) -> int:
    """int32 words per row of ``cols`` packed ``bits``-bit codes."""
    return (cols * bits + 31) // 32


def _rows_cols_of(shape: Tuple[int, ...]) -> Tuple[int, int]:
    cols = shape[-1] if shape else 1
    rows = math.prod(shape) // cols if cols else math.prod(shape[:-1])
    return rows, cols


def _check_array(name: str, a, dtypes, count: int, unit: str, context: str) -> None:
    """``a`` is a C-contiguous numpy array of one of ``dtypes`` holding
    exactly ``count`` elements; else an InvalidArgument naming it."""
    if not isinstance(a, np.ndarray):
        raise InvalidArgument(f"{name}: expected a numpy array for {context}, got {type(a).__name__}")
    if a.dtype not in dtypes:
        names = " or ".join(str(np.dtype(d)) for d in dtypes)
        raise InvalidArgument(f"{name}: expected {names} values for {context}, got {a.dtype}")
    if a.size != count:
        raise InvalidArgument(f"{name}: expected {count} {unit} for {context}, got {a.size}")
    if not a.flags.c_contiguous:
        raise InvalidArgument(f"{name}: must be C-contiguous (numpy.ascontiguousarray) for {context}")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _fixed_group(group_size, value: int) -> bool:
    """group_size is None or the format's fixed ``value``."""
    return group_size is None or (_is_int(group_size) and group_size == value)


def _check_none(name: str, a, scheme: str) -> None:
    if a is not None:
        raise InvalidArgument(f"{name}: {scheme} has none, got {type(a).__name__}")


def _validate(scheme, shape, dtype, data, scales, zero_points, group_size, granularity):
    """Check every part of a quantized tensor against its scheme and shape,
    before any kernel reads it. Returns (shape, dtype, group_size,
    granularity) normalised; raises InvalidArgument naming the argument."""
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise InvalidArgument(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")
    try:
        shape = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise InvalidArgument(f"shape: expected a sequence of integers, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"shape: negative dimension in {shape}")
    if math.prod(max(d, 1) for d in shape) >= 2**63:
        raise InvalidArgument(f"shape: {shape} is too large for an array")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise InvalidArgument(f"dtype: expected float32, float16 or bfloat16, got {dtype!r}") from None
    if dtype not in _INPUT_CODES:
        raise InvalidArgument(f"dtype: expected float32, float16 or bfloat16, got {dtype}")
    rows, cols = _rows_cols_of(shape)
    n = rows * cols
    where = f"{scheme} {rows}x{cols}"
    floats = tuple(_INPUT_CODES)
    if granularity is not None and scheme != "fp8_e4m3":
        raise InvalidArgument(f"granularity: applies to fp8_e4m3 only, got {granularity!r} for {scheme}")

    if scheme in _GGML_BLOCK:
        block = _GGML_BLOCK[scheme]
        if not _fixed_group(group_size, block):
            raise InvalidArgument(f"group_size: {scheme} blocks are {block} values, got {group_size!r}")
        if cols % block:
            raise InvalidArgument(f"shape: {scheme} needs a row length that is a multiple of {block}, got {shape}")
        _check_array("data", data, (np.uint8,), rows * (cols // block) * _GGML_BLOCK_BYTES[scheme], "bytes",
                     where + f" (group {block})")
        _check_none("scales", scales, scheme)
        _check_none("zero_points", zero_points, scheme)
        return shape, dtype, block, None

    if scheme in INT_SCHEMES:
        bits = INT_SCHEMES[scheme]
        if not _is_int(group_size):
            raise InvalidArgument(f"group_size: {scheme} needs a positive integer, got {group_size!r}")
        group_size = int(group_size)
        if group_size <= 0 or cols % group_size:
            raise InvalidArgument(f"group_size: {group_size} does not divide the row length {cols} of {where}")
        where += f" (group {group_size})"
        groups = rows * (cols // group_size)
        if bits == 8:
            _check_array("data", data, (np.int8,), n, "int8 codes", where)
        else:
            _check_array("data", data, (np.int32,), rows * _words(cols, bits), "int32 words", where)
        _check_array("scales", scales, floats, groups, "scale values", where)
        if zero_points is not None:
            _check_array("zero_points", zero_points, (np.int8,), groups, "int8 values", where)
        return shape, dtype, group_size, None

    if scheme == "nf4":
        if not _fixed_group(group_size, 64):
            raise InvalidArgument(f"group_size: nf4 blocks are 64 values, got {group_size!r}")
        where = f"nf4 {shape}"
        _check_array("data", data, (np.uint8,), (n + 1) // 2, "bytes", where)
        _check_array("scales", scales, (np.float32,), -(-n // 64), "float32 absmax values", where)
        _check_none("zero_points", zero_points, scheme)
        return shape, dtype, 64, None

    # fp8_e4m3
    if not (isinstance(granularity, str) and granularity in GRANULARITIES):
        raise InvalidArgument(f"granularity: expected one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if group_size is not None:
        raise InvalidArgument(f"group_size: fp8_e4m3 has none (see granularity), got {group_size!r}")
    count = {"tensor": 1, "channel": rows,
             "block": -(-rows // _FP8_TILE) * -(-cols // _FP8_TILE)}[granularity]
    where += f" ({granularity})"
    _check_array("data", data, (np.uint8, ml_dtypes.float8_e4m3fn), n, "bytes", where)
    _check_array("scales", scales, floats, count, "scale values", where)
    _check_none("zero_points", zero_points, scheme)
    return shape, dtype, None, granularity


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
        shape, dtype, group_size, granularity = _validate(scheme, shape, dtype, data, scales, zero_points,
                                                          group_size, granularity)
        self.scheme = scheme
        self.shape = shape
        self.dtype = dtype
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
        return _rows_cols_of(tuple(self.shape))

    def _check(self) -> None:
        """Validate the parts again: attributes may have been reassigned."""
        _validate(self.scheme, self.shape, self.dtype, self.data, self.scales, self.zero_points, self.group_size,
                  self.granularity)

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
        original = math.prod(self.shape) * self.dtype.itemsize
        return original / self.nbytes if self.nbytes else float("inf")

    def values(self) -> np.ndarray:
        """The integer codes (int8; NF4: code indices 0..15, GGML: the signed
        or unsigned block codes), or the FP8 values, in the original shape."""
        self._check()
        rows, cols = self._rows_cols
        s = self.scheme
        if s in INT_SCHEMES:
            if s == "int8":
                return self.data.reshape(self.shape)
            codes = np.empty((rows, cols), dtype=np.int8)
            _core.unpack_int32(self.data, INT_SCHEMES[s], codes)
            return codes.reshape(self.shape)
        if s == "fp8_e4m3":
            return self.data.view(np.uint8).view(ml_dtypes.float8_e4m3fn).reshape(self.shape)
        if s == "nf4":
            n = rows * cols
            nib = np.empty(2 * self.data.size, dtype=np.uint8)
            nib[0::2] = self.data >> 4
            nib[1::2] = self.data & 0x0F
            return nib[:n].reshape(self.shape)
        if s in KQUANT_SCHEMES:
            raise InvalidArgument(f"values(): {s} keeps its levels relative to per-sub-block scales and mins; "
                                  "use dequantize() for its values")
        return _ggml_codes(s, self.data, rows, cols).reshape(self.shape)

    def dequantize(self, dtype="F32", *, out: Optional[np.ndarray] = None) -> np.ndarray:
        """The reconstruction, computed in F32 and returned as ``dtype``
        (a safetensors name such as "F32"/"BF16" or a numpy dtype); ``out``
        as in :func:`fastensors.dequantize`."""
        return dequantize(self, dtype, out=out)


def _ggml_codes(scheme: str, data: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Unpack GGML blocks into their integer codes (Q8_0 signed, others 0..15/31)."""
    nb = rows * cols // 32
    if nb == 0:
        return np.zeros((rows, cols), np.int8 if scheme == "q8_0" else np.uint8)
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


def _check_imatrix(imatrix, scheme: str, cols: int) -> np.ndarray:
    """The importance matrix as the kernel takes it: a 1-D float32 array of
    one weight per column, for a scheme with a weighted form."""
    if scheme not in _GGML_BLOCK or not _core.ggml_has_weighted(getattr(_core.GgmlType, scheme)):
        weighted = ", ".join(s for s in (*GGML_SCHEMES, *KQUANT_SCHEMES) if s != "q8_0")
        raise InvalidArgument(f"{scheme}: has no importance-matrix form (imatrix applies to {weighted})")
    if not isinstance(imatrix, np.ndarray):
        raise InvalidArgument(f"{scheme}: imatrix must be a numpy float32 array, not {type(imatrix).__name__}")
    if imatrix.dtype != np.float32:
        raise InvalidArgument(f"{scheme}: imatrix must be float32, not {imatrix.dtype}")
    if imatrix.ndim != 1 or imatrix.shape[0] != cols:
        raise InvalidArgument(f"{scheme}: imatrix must hold one weight per column ({cols},), "
                              f"got shape {imatrix.shape}")
    return np.ascontiguousarray(imatrix)


def quantize(array, scheme: str, *, group_size: Optional[int] = None, symmetric: Optional[bool] = None,
             granularity: Optional[str] = None, imatrix: Optional[np.ndarray] = None) -> QuantizedTensor:
    """Quantize an F32/F16/BF16 array; the last axis is quantized.

    schemes: "q8_0", "q4_0", "q4_1", "q5_0", "q5_1" (GGML, bit-exact with the
    gguf package), "q2_k", "q3_k", "q4_k", "q5_k", "q6_k" (GGML K-quants, rows
    a multiple of 256, byte-identical with ggml's reference quantizers), "int8" (per channel, symmetric), "int4"/"int2" (group-wise;
    ``group_size`` 128/64, ``symmetric`` True/False by default), "nf4"
    (bitsandbytes blocks of 64), "fp8_e4m3" (``granularity`` "tensor",
    "channel" or "block").

    ``imatrix``: an importance matrix for the GGML schemes but q8_0, one
    float32 weight >= 0 per column (last axis), applied to every row; the
    bytes are then ggml's weighted quantizers' (llama-quantize --imatrix).
    See :func:`fastensors.gguf.read_imatrix` for llama.cpp's imatrix files.
    Raises InvalidArgument for a wrong length or dtype, negative or
    non-finite weights, or a scheme without a weighted form."""
    array = np.asarray(array)
    code = _INPUT_CODES.get(array.dtype)
    if code is None:
        raise InvalidArgument(f"quantize takes float32, float16 or bfloat16 arrays, not {array.dtype}")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise InvalidArgument(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if scheme not in INT_SCHEMES and (group_size is not None or symmetric is not None):
        if not (scheme in ("nf4",) + GGML_SCHEMES + KQUANT_SCHEMES
                and _fixed_group(group_size, 64 if scheme == "nf4" else _GGML_BLOCK[scheme]) and symmetric is None):
            raise InvalidArgument(f"{scheme}: group_size and symmetric are fixed by the format")
    if scheme != "fp8_e4m3" and granularity is not None:
        raise InvalidArgument(f"{scheme}: granularity applies to fp8_e4m3 only")
    if imatrix is not None and scheme not in _GGML_BLOCK:
        _check_imatrix(imatrix, scheme, 0)

    if scheme in _GGML_BLOCK:
        a, rows, cols = _as_rows(array, scheme, allow_1d=True)
        ggml = getattr(_core.GgmlType, scheme)
        row_bytes = _core.ggml_row_bytes(ggml, cols)
        w = None if imatrix is None else _check_imatrix(imatrix, scheme, cols)
        out = np.empty((rows, row_bytes), dtype=np.uint8)
        _core.ggml_quantize(ggml, _raw(a.reshape(rows, cols)), code, out, w)
        return QuantizedTensor(scheme, array.shape, array.dtype, out, None, None, _GGML_BLOCK[scheme])

    if scheme in INT_SCHEMES:
        bits = INT_SCHEMES[scheme]
        a, rows, cols = _as_rows(array, scheme, allow_1d=False)
        if scheme == "int8":
            if not _fixed_group(group_size, cols):
                raise InvalidArgument("int8 is per channel: group_size must be None or the row length")
            group_size = cols
        elif group_size is None:
            group_size = _DEFAULT_GROUP[scheme]
        if symmetric is None:
            symmetric = _DEFAULT_SYMMETRIC[scheme]
        try:
            group_size = operator.index(group_size)
        except TypeError:
            raise InvalidArgument(f"{scheme}: group_size must be an integer, not {group_size!r}") from None
        if group_size <= 0 or (cols and cols % group_size):
            raise InvalidArgument(f"{scheme}: row length {cols} is not a multiple of the group size {group_size}")
        ngroups = cols // group_size if group_size else 0
        codes = np.empty((rows, cols), dtype=np.int8)
        scales = np.empty((rows, ngroups), dtype=array.dtype)
        zps = None if symmetric else np.zeros((rows, ngroups), dtype=np.int8)
        _core.int_quantize(_raw(a.reshape(rows, cols)), code, bits, group_size, bool(symmetric), codes,
                           _raw(scales), zps)
        if bits == 8:
            data = codes
        else:
            data = np.empty((rows, _core.packed_words(cols, bits)), dtype=np.int32)
            _core.pack_int32(codes, bits, data)
        return QuantizedTensor(scheme, array.shape, array.dtype, data, scales, zps, group_size)

    if scheme == "nf4":
        a, rows, cols = _as_rows(array, scheme, allow_1d=True)
        n = rows * cols
        out = np.empty((n + 1) // 2, dtype=np.uint8)
        absmax = np.empty((n + 63) // 64, dtype=np.float32)
        _core.nf4_quantize(_raw(a.reshape(rows, cols)), code, out, absmax)
        return QuantizedTensor(scheme, array.shape, array.dtype, out, absmax, None, 64)

    # fp8_e4m3
    granularity = "tensor" if granularity is None else granularity
    if not (isinstance(granularity, str) and granularity in GRANULARITIES):
        raise InvalidArgument(f"fp8_e4m3: granularity must be one of {', '.join(GRANULARITIES)}, not {granularity!r}")
    a, rows, cols = _as_rows(array, scheme, allow_1d=(granularity == "tensor"))
    gran = getattr(_core.Fp8Granularity, granularity)
    count = _core.fp8_scale_count(gran, rows, cols)
    out = np.empty((rows, cols), dtype=np.uint8)
    scales = np.empty(count, dtype=array.dtype)
    _core.fp8_quantize(_raw(a.reshape(rows, cols)), code, gran, out, _raw(scales))
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
        raise InvalidOutput(f"dequantize: out must be a numpy array, not {type(out).__name__}")
    if out.dtype != np.float32:
        raise InvalidOutput(f"dequantize: out must be float32, not {out.dtype}")
    if out.shape != tuple(qt.shape):
        raise InvalidOutput(f"dequantize: out has shape {out.shape}, the tensor has shape {tuple(qt.shape)}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidOutput("dequantize: out must be C-contiguous and writeable")
    for name in ("data", "scales", "zero_points"):
        part = getattr(qt, name)
        if part is not None and out.size and np.may_share_memory(out, part):
            raise InvalidOutput(f"dequantize: out overlaps the tensor's {name}")
    return out


def dequantize(qt: QuantizedTensor, dtype="F32", *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Reconstruct a :class:`QuantizedTensor` (computed in F32, returned as ``dtype``).

    ``out``: a C-contiguous float32 array of the tensor's shape to write into
    (``dtype`` must then be F32); reusing one across calls skips allocating
    and first-touching a fresh output, which costs more than the kernels."""
    if not isinstance(qt, QuantizedTensor):
        raise InvalidArgument(f"dequantize: expected a QuantizedTensor, got {type(qt).__name__}")
    qt._check()
    rows, cols = qt._rows_cols
    target = _out_dtype(dtype)
    if out is not None:
        if target != np.float32:
            raise InvalidArgument(f"dequantize: out= is float32, but dtype={dtype!r} was asked for")
        res = _check_out(out, qt).reshape(rows, cols)
    else:
        res = _aligned_f32(rows, cols)
    s = qt.scheme
    if s in _GGML_BLOCK:
        _core.ggml_dequantize(getattr(_core.GgmlType, s), qt.data, res)
    elif s in INT_SCHEMES:
        sd = _INPUT_CODES[np.dtype(qt.scales.dtype)]
        if s == "int8":
            _core.int_dequantize(qt.data, _raw(qt.scales), sd, qt.zero_points, qt.group_size, res)
        else:  # packed int32 words, unpacked row by row in the kernel
            _core.int_dequantize_packed(qt.data, INT_SCHEMES[s], _raw(qt.scales), sd, qt.zero_points,
                                        qt.group_size, res)
    elif s == "nf4":
        _core.nf4_dequantize(qt.data, qt.scales, res)
    else:  # fp8_e4m3 (_check knows the schemes)
        sd = _INPUT_CODES[np.dtype(qt.scales.dtype)]
        _core.fp8_dequantize(qt.data.view(np.uint8), _raw(qt.scales), sd,
                             getattr(_core.Fp8Granularity, qt.granularity), res)
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
    ref = _raw(np.ascontiguousarray(ref).reshape(-1))
    cand = _raw(np.ascontiguousarray(cand).reshape(-1))
    r = _core.quality(ref, codes[0], cand, codes[1])
    return {"cosine": r.cosine, "sqnr_db": r.sqnr_db, "rmse": r.rmse, "max_abs_err": r.max_abs_err}
