"""The reference package's low-level verbs: TensorSpec, serialize,
serialize_file, deserialize."""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _core
from ..errors import InvalidArgument
from .dtypes import BITS, PACKED_PAIR_NAMES, code_from_spec_name

PathLike = Union[str, "os.PathLike[str]"]


class TensorSpec:
    """Describes one tensor for :func:`serialize` / :func:`serialize_file`.

    ``dtype`` takes numpy/torch names ("float32", "bfloat16",
    "float8_e4m3fn", "float4_e2m1fn_x2", ...) or safetensors codes ("F32").
    ``shape`` is the logical shape; for ``float4_e2m1fn_x2`` (two values per
    element) the storage shape is accepted and the last dimension doubled.
    ``data_ptr`` is the address of ``data_len`` contiguous bytes that the
    caller keeps alive while serializing.
    """

    __slots__ = ("_dtype", "_shape", "_data_ptr", "_data_len")

    def __init__(self, *, dtype: str, shape: Sequence[int], data_ptr: int, data_len: int) -> None:
        code = code_from_spec_name(str(dtype))
        dims = [int(d) for d in shape]
        if any(d < 0 for d in dims):
            raise InvalidArgument(f"negative dimension in shape {dims}")
        if dtype in PACKED_PAIR_NAMES:
            if not dims:
                raise InvalidArgument("float4_e2m1fn_x2 needs at least one dimension")
            dims[-1] *= 2
        if int(data_ptr) < 0 or int(data_len) < 0:
            raise InvalidArgument("data_ptr and data_len must be non-negative")
        if int(data_ptr) > sys.maxsize or int(data_len) > sys.maxsize:
            raise InvalidArgument("data_ptr and data_len must fit the address space")
        self._dtype = code
        self._shape = dims
        self._data_ptr = int(data_ptr)
        self._data_len = int(data_len)

    @property
    def dtype(self) -> str:
        """The safetensors code written to the header ("F32", "BF16", ...)."""
        return self._dtype

    @property
    def shape(self) -> List[int]:
        return list(self._shape)

    @property
    def data_ptr(self) -> int:
        return self._data_ptr

    @property
    def data_len(self) -> int:
        return self._data_len

    def __repr__(self) -> str:
        return f"TensorSpec(dtype={self._dtype!r}, shape={self._shape}, data_len={self._data_len})"

    def _tuple(self, name: str) -> Tuple[str, str, List[int], Optional[np.ndarray], int]:
        # The caller vouches for data_len bytes at data_ptr (as with the
        # reference); the core gets them as an array of that size, never an
        # address. A null pointer is left to the core to refuse.
        data = None
        if self._data_ptr and self._data_len:
            buf = (ctypes.c_uint8 * self._data_len).from_address(self._data_ptr)
            data = np.frombuffer(buf, np.uint8)
        return (name, self._dtype, self._shape, data, self._data_len)


def byte_view(arr) -> Optional[np.ndarray]:
    """The bytes of a C-contiguous numpy array as a flat uint8 view (None
    when it has none): the form in which the core takes tensor data."""
    if arr.nbytes == 0:
        return None
    return arr.reshape(-1).view(np.uint8)


def _check_metadata(metadata: Optional[Mapping[str, str]]) -> Optional[List[Tuple[str, str]]]:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict of str to str, not {type(metadata).__name__}")
    items = list(metadata.items())
    for k, v in items:
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str; got {k!r}: {type(v).__name__}")
        k.encode("utf-8"), v.encode("utf-8")  # UnicodeEncodeError for lone surrogates, as the reference
    return items


def _check_names(specs: list) -> list:
    for spec in specs:
        if not isinstance(spec[0], str):
            raise TypeError(f"tensor names must be str, not {type(spec[0]).__name__}")
        spec[0].encode("utf-8")  # UnicodeEncodeError for lone surrogates, as the reference
    return specs


def _specs(tensor_dict: Mapping[str, TensorSpec]) -> list:
    if not isinstance(tensor_dict, Mapping):
        raise TypeError(f"expected a dict of str to TensorSpec, not {type(tensor_dict).__name__}")
    out = []
    for name, spec in tensor_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, not {type(name).__name__}")
        if not isinstance(spec, TensorSpec):
            raise TypeError(f"tensor '{name}' must be a TensorSpec, not {type(spec).__name__}")
        out.append(spec._tuple(name))
    return out


def resolve_durable(durable: Optional[bool]) -> bool:
    return _core.default_durable() if durable is None else bool(durable)


def serialize(tensor_dict: Dict[str, TensorSpec], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding these tensors."""
    return _core.serialize(_check_names(_specs(tensor_dict)), _check_metadata(metadata))


def serialize_file(
    tensor_dict: Dict[str, TensorSpec],
    filename: PathLike,
    metadata: Optional[Dict[str, str]] = None,
    *,
    durable: Optional[bool] = None,
) -> None:
    """Write a safetensors file atomically (temporary file, fsync, rename).

    ``durable=False`` (or ``FASTENSORS_DURABLE=0``) keeps the atomic rename
    but skips the fsyncs."""
    specs = _check_names(_specs(tensor_dict))
    _core.write_file(os.fspath(filename), specs, _check_metadata(metadata), resolve_durable(durable))


def write_specs(specs: list, filename: PathLike, metadata, durable: Optional[bool]) -> None:
    """Internal: write pre-built (name, code, shape, data, nbytes) tuples
    (data: a C-contiguous uint8 array of nbytes bytes, see byte_view)."""
    _core.write_file(os.fspath(filename), _check_names(specs), _check_metadata(metadata), resolve_durable(durable))


def write_specs_streaming(specs: list, filename: PathLike, metadata, durable: Optional[bool], fill,
                          keep_order: bool = False) -> None:
    """Internal: write (name, code, shape, None, nbytes) tuples whose bytes
    ``fill(index) -> uint8 array`` (byte_view; None for no bytes) produces in
    file order (the reference order, or with ``keep_order`` the order of
    ``specs``); the core holds each array until the next call."""
    _core.write_file_streaming(os.fspath(filename), _check_names(specs), _check_metadata(metadata),
                               resolve_durable(durable), fill, keep_order)


def serialize_specs(specs: list, metadata) -> bytes:
    return _core.serialize(_check_names(specs), _check_metadata(metadata))


def deserialize(data: bytes) -> List[Tuple[str, Dict[str, object]]]:
    """Parse a whole file held in memory: ``[(name, {"shape", "dtype", "data"})]``
    in file order, ``data`` being the tensor's bytes."""
    data = bytes(data)
    infos, _meta, start = _core.parse_buffer(data)
    view = memoryview(data)
    return [
        (name, {"shape": shape, "dtype": dtype, "data": bytes(view[start + b : start + e])})
        for name, dtype, shape, b, e in infos
    ]


__all__ = ["TensorSpec", "serialize", "serialize_file", "deserialize", "BITS"]
