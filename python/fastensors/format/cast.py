"""Dtype conversion for numpy arrays and for tensors read from files.

``convert`` is numpy in, numpy out; ``isa`` names the kernel level in use.
The semantics of every pair (rounding, NaN, overflow, and where PyTorch
differs) are in docs/dtypes.md; the work is done by the C++ kernels with the
GIL released."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .. import _core
from .dtypes import _SPEC_NAMES, BITS, NUMPY, code_from_numpy
from ..errors import InvalidOutput, UnknownDtype, UnknownDtypeName, UnsupportedConversion

# Unsigned views of each width: the kernels see bit patterns, never values.
_UINT = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}

# Short names accepted for ``dtype`` arguments, on top of the safetensors
# codes ("BF16") and the numpy / torch spellings ("bfloat16",
# "float8_e4m3fn"). Matching ignores case.
_SHORT = {
    "u8": "U8", "i8": "I8", "u16": "U16", "i16": "I16", "u32": "U32", "i32": "I32", "u64": "U64", "i64": "I64",
    "f16": "F16", "fp16": "F16", "bf16": "BF16", "f32": "F32", "fp32": "F32", "f64": "F64", "fp64": "F64",
    "fp8_e4m3": "F8_E4M3", "fp8_e4m3fn": "F8_E4M3", "e4m3": "F8_E4M3", "e4m3fn": "F8_E4M3",
    "fp8_e5m2": "F8_E5M2", "e5m2": "F8_E5M2",
    "fp8_e8m0": "F8_E8M0", "fp8_e8m0fnu": "F8_E8M0", "e8m0": "F8_E8M0", "e8m0fnu": "F8_E8M0",
    "fp8_e4m3fnuz": "F8_E4M3FNUZ", "e4m3fnuz": "F8_E4M3FNUZ",
    "fp8_e5m2fnuz": "F8_E5M2FNUZ", "e5m2fnuz": "F8_E5M2FNUZ",
}
_NAMES = {**{k.lower(): v for k, v in _SPEC_NAMES.items()}, **_SHORT}

# Codes load_file(dtype=...) and convert_file convert; the rest (integers,
# BOOL, C64) are never converted by them.
FLOAT_CODES = frozenset(
    {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
     "F4", "F6_E2M3", "F6_E3M2"}
)

# Bytes of source read per step when converting from a pread-backed file.
_PREAD_CHUNK = 16 << 20


def dtype_code(dtype) -> str:
    """The safetensors code ("BF16", ...) of a dtype argument: a code, a short
    name ("bf16", "fp8_e4m3", ...), a numpy / ml_dtypes dtype or type, or a
    torch dtype (matched by name, torch is not imported)."""
    if isinstance(dtype, str):
        code = _NAMES.get(dtype.lower())
        if code is None:
            raise UnknownDtypeName(
                f"unknown dtype {dtype!r}: use a safetensors code (BF16, F8_E4M3, ...), a short name "
                "(bf16, f16, f32, fp8_e4m3, fp8_e5m2, ...) or a numpy/ml_dtypes/torch dtype"
            )
        return code
    text = str(dtype)
    if text.startswith("torch."):
        return dtype_code(text[len("torch."):])
    try:
        return code_from_numpy(np.dtype(dtype))
    except (TypeError, UnknownDtype):
        raise UnknownDtypeName(f"{dtype!r} is not a dtype with a safetensors equivalent") from None


def can_convert(src_code: str, dst_code: str) -> bool:
    return _core.can_convert(src_code, dst_code)


def check_pair(src_code: str, dst_code: str, what: str = "") -> None:
    if not _core.can_convert(src_code, dst_code):
        where = f" ({what})" if what else ""
        hint = ""
        if src_code != "F32" and dst_code != "F32" and _core.can_convert(src_code, "F32"):
            hint = f"; convert to F32 first if a {src_code} -> F32 -> {dst_code} rounding is what you want"
        raise UnsupportedConversion(
            f"cannot convert {src_code} to {dst_code}{where}: supported are every float format <-> F32, "
            f"F64 <-> F32, F16 <-> BF16 and the integer formats -> F32 (docs/dtypes.md){hint}"
        )


def isa() -> str:
    """The instruction-set level the conversion kernels use: "avx512bf16",
    "avx512", "avx2" or "scalar". ``FASTENSORS_ISA`` forces one; a level this
    CPU cannot run raises :class:`UnsupportedIsa` (here and at every
    conversion) rather than falling back silently."""
    return _core.isa()


def supported_isas() -> list:
    """Every level this CPU runs, best first (the last is "scalar")."""
    return _core.supported_isas()


def _native(arr: np.ndarray) -> np.ndarray:
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _check_out(out, shape: Sequence[int], target: np.dtype, code: str) -> None:
    if not isinstance(out, np.ndarray):
        raise InvalidOutput(f"out must be a numpy.ndarray, not {type(out).__name__}")
    if out.dtype != target:
        raise InvalidOutput(f"out has dtype {out.dtype}; converting to {code} writes {target}")
    if tuple(out.shape) != tuple(shape):
        raise InvalidOutput(f"out has shape {tuple(out.shape)}; the input has shape {tuple(shape)}")
    if not out.flags.c_contiguous:
        raise InvalidOutput("out must be C-contiguous")
    if not out.flags.writeable:
        raise InvalidOutput("out is read-only")


def convert_array(arr: np.ndarray, src_code: str, dst_code: str, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``arr`` (numpy, dtype of ``src_code``, any strides) converted to ``dst_code``."""
    check_pair(src_code, dst_code)
    target = NUMPY[dst_code]
    # Non-temporal stores only into a caller's buffer (pre-faulted, usually):
    # into fresh pages, plain stores hit the lines the page faults just zeroed.
    stream = None
    if out is None:
        out = np.empty(arr.shape, target)
        stream = False
    else:
        _check_out(out, arr.shape, target, dst_code)
        if arr.size and np.may_share_memory(arr, out):
            arr = arr.copy()  # overlapping buffers would be read after being written
    if arr.size:
        _core.convert(arr.view(_UINT[arr.itemsize]), src_code, out.reshape(-1).view(np.uint8), dst_code,
                      stream=stream)
    return out


def convert(array, dtype, *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Convert a numpy array to another dtype, bit-exact with ml_dtypes /
    numpy ``astype`` (docs/dtypes.md).

    ``dtype``: a safetensors code ("BF16"), a short name ("bf16", "f16",
    "f32", "fp8_e4m3", "fp8_e5m2", "fp8_e8m0", ...) or a numpy / ml_dtypes
    dtype; BF16 and FP8 results are ml_dtypes arrays. ``out``: a C-contiguous,
    writable array of the result's dtype and the input's shape to write into
    (pre-faulted memory converts fastest). Any strides are accepted without a
    copy. Supported: every float format <-> F32, F64 <-> F32, F16 <-> BF16,
    integers and BOOL -> F32, and any dtype to itself (a copy).

    Raises :class:`UnsupportedConversion` (a ``TypeError``) for other pairs,
    :class:`InvalidOutput` (a ``ValueError``) for a mismatched ``out`` and
    :class:`UnknownDtypeName` (a ``ValueError``) for an unknown ``dtype``."""
    arr = _native(np.asarray(array))
    try:
        src_code = code_from_numpy(arr.dtype)
    except UnknownDtype:
        raise UnsupportedConversion(f"numpy dtype {arr.dtype} has no safetensors equivalent to convert from") from None
    return convert_array(arr, src_code, dtype_code(dtype), out)


def convert_tensor(file, name: str, src_code: str, shape, dst_code: str) -> np.ndarray:
    """A tensor of an open ``_core.File`` converted to ``dst_code``: straight
    from the mapping (mmap backend, no intermediate copy) or in bounded chunks
    of pread (pread backend). Returns a new numpy array."""
    check_pair(src_code, dst_code, f"tensor '{name}'")
    shape = tuple(shape)
    out = np.empty(shape, NUMPY[dst_code])
    if out.size == 0:
        return out
    width = BITS[src_code] // 8
    flat_out = out.reshape(-1).view(np.uint8)
    if file.backend == "mmap":
        src = file.view(name).view(_UINT[width])
        _core.convert(src, src_code, flat_out, dst_code, stream=False)  # fresh pages: see convert_array
        return out
    out_width = BITS[dst_code] // 8
    step = max(1, _PREAD_CHUNK // width)
    buf = np.empty(min(out.size, step) * width, np.uint8)
    for first in range(0, out.size, step):
        n = min(step, out.size - first)
        part = buf[: n * width]
        file.read_into(name, first * width, part)
        _core.convert(part.view(_UINT[width]), src_code, flat_out[first * out_width:(first + n) * out_width], dst_code,
                      stream=False)
    return out
