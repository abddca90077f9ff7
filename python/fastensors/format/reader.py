"""``safe_open``: the reference package's reader, plus zero-copy numpy views,
full numpy basic indexing in ``get_slice`` and ``tensor_info``."""

from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from .. import _core
from .cast import FLOAT_CODES, check_pair, convert_array, convert_tensor, dtype_code
from .dtypes import SUB_BYTE, nbytes_of
from .arrays import get_framework as _numpy_framework
from .frameworks import get_framework
from .plans import ReadAhead, prefetch, read_arrays
from ..errors import InvalidSliceIndex
from ..remap import KeySelection
from ..sources import RangeFile, RemoteOptions, open_source


class TensorInfo(NamedTuple):
    """What the header says of one tensor; reading it touches no data."""

    dtype: str
    shape: Tuple[int, ...]
    data_offsets: Tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]


class safe_open:
    """Open a safetensors file lazily.

    ``framework``: "np"/"numpy", "pt"/"torch"/"pytorch", "flax"/"jax",
    "tf"/"tensorflow", "paddle" or "mlx" (format/frameworks.py). ``backend``:
    "mmap" (default: the file is mapped copy-on-write and numpy tensors are
    zero-copy, writable views that keep the mapping alive) or "pread" (bytes
    are read on demand; nothing stays mapped).

    ``filename`` may also be a URL (``https://``, ``s3://``, ``hf://``, any
    fsspec protocol; ``storage_options`` go to fsspec, ``remote`` is a
    ``fastensors.sources.RemoteOptions``) or a file object with ``read`` and
    ``seek`` (one with a real file descriptor is opened as that file; others
    are read by ranges). Only the header and the tensors asked for are
    fetched (docs/remote.md).

    Partial loading and renaming (``fastensors.remap.KeySelection``):
    ``include``/``exclude`` regexes and a ``prefix`` to strip choose the
    tensors shown, ``remap`` (a ``Remapper``, a dict or a function) renames
    them; every method then speaks the new names."""

    def __init__(self, filename, framework, device="cpu", *, backend: str = "mmap", remap=None, include=None,
                 exclude=None, prefix=None, storage_options: Optional[dict] = None,
                 remote: Optional[RemoteOptions] = None):
        self._framework = get_framework(framework)
        self._device = device
        self._file = open_source(filename, backend, storage_options=storage_options, options=remote)
        self._ahead: Optional[ReadAhead] = None
        self._read_ahead = self._file.backend == "mmap"  # a Checkpoint reading ahead over its shards turns it off
        self._select = None
        if KeySelection.wanted(remap, include, exclude, prefix):
            try:
                self._select = KeySelection(self._file.offset_keys(), remap=remap, include=include,
                                            exclude=exclude, prefix=prefix)
            except BaseException:
                self._file.close()
                raise

    def _stored(self, name: str) -> str:
        return name if self._select is None else self._select.stored(name)

    def _check_dtype(self, public: str, stored: str, target: Optional[str] = None,
                     code: Optional[str] = None) -> None:
        """A typed error naming ``public`` when the framework lacks the dtype
        the tensor will have (``target`` for a float tensor being converted)."""
        check = getattr(self._framework, "check_dtype", None)  # frameworks.py only
        if check is None:
            return
        code = self._file.info(stored)[1] if code is None else code
        check(public, target if target is not None and code in FLOAT_CODES else code)

    def _check_dtypes(self, dtype=None) -> None:
        """``_check_dtype`` for every selected tensor, before any is read."""
        if getattr(self._framework, "check_dtype", None) is None:
            return
        target = None if dtype is None else dtype_code(dtype)
        public = None if self._select is None else self._select.to_public
        for info in self._file.infos():
            if public is None or info[0] in public:
                self._check_dtype(info[0] if public is None else public[info[0]], info[0], target, info[1])

    # -- context manager -----------------------------------------------------
    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, _exc_type, _exc_value, _traceback) -> None:
        self.close()

    def close(self) -> None:
        """Release the handle. Tensors already returned stay valid."""
        if self._ahead is not None:
            self._ahead.close()
        self._file.close()

    # -- header --------------------------------------------------------------
    def keys(self) -> List[str]:
        """Tensor names, sorted."""
        return self._file.keys() if self._select is None else self._select.keys()

    def offset_keys(self) -> List[str]:
        """Tensor names in the order of their data in the file."""
        names = self._file.offset_keys()
        if self._select is None:
            return names
        public = self._select.to_public
        return [public[n] for n in names if n in public]

    def metadata(self) -> Optional[Dict[str, str]]:
        """The ``__metadata__`` dict, or None when the file has none."""
        return self._file.metadata()

    def tensor_info(self, name: str) -> TensorInfo:
        _, dtype, shape, begin, end = self._file.info(self._stored(name))
        return TensorInfo(dtype, tuple(shape), (begin, end))

    # -- data ----------------------------------------------------------------
    def _raw(self, name: str, info=None) -> Tuple[np.ndarray, str, list]:
        """The tensor's bytes as uint8: a view of the mapping, or a fresh read."""
        _, dtype, shape, begin, end = info or self._file.info(name)
        if self._file.backend == "mmap":
            raw = self._file.view(name)
        else:
            raw, = read_arrays([(self._file, self._file.data_start + begin, end - begin)])
        return raw, dtype, shape

    def get_tensor(self, name: str, dtype=None):
        """The tensor ``name``. With ``dtype`` (a code like "BF16", a short
        name like "bf16", or a numpy / ml_dtypes / torch dtype), converted
        while reading, bit-exact with ml_dtypes (docs/dtypes.md): straight
        from the mapping into the result with the mmap backend, in bounded
        chunks with pread. A tensor already of that dtype is returned as if
        ``dtype`` were not given."""
        public, name = name, self._stored(name)
        self._check_dtype(public, name, None if dtype is None else dtype_code(dtype))
        if dtype is not None:
            if self._read_ahead:
                self._touch(name)
            return self._converted(name, dtype_code(dtype))
        if self._staged():
            from .staging import load_staged
            info = self._file.info(name)
            return load_staged(self._file, [(name, info)], self._framework, self._device)[name]
        if self._read_ahead:
            self._touch(name)
        raw, dtype, shape = self._raw(name)
        fw = self._framework
        return fw.to_device(fw.from_bytes(raw, dtype, shape), self._device)

    def get_tensors(self, dtype=None) -> Dict[str, object]:
        """Every tensor, keyed by name, in file order. With ``dtype``, float
        tensors are converted to it (as ``get_tensor(name, dtype)``); integer,
        BOOL and complex tensors are returned unchanged. The bytes are read
        first by the parallel read engine (docs/read_engine.md): a mapped file
        is made resident and the tensors stay zero-copy views of it."""
        self._check_dtypes(dtype)
        return self._tensors(dtype, prefetched=False)

    def _wanted(self) -> List[Tuple[str, tuple]]:
        """(key shown, info) of the selected tensors, in file order."""
        public = None if self._select is None else self._select.to_public
        out = []
        for info in self._file.infos():
            key = info[0] if public is None else public.get(info[0])
            if key is not None:
                out.append((key, info))
        return out

    def _range(self, info) -> Tuple[object, int, int]:
        _, _, _, begin, end = info
        return (self._file, self._file.data_start + begin, end - begin)

    def _tensors(self, dtype=None, *, prefetched: bool, raws: Optional[Dict[str, np.ndarray]] = None
                 ) -> Dict[str, object]:
        """``raws``: the bytes of every wanted tensor, read already (a
        Checkpoint reads the shards of a remote checkpoint together)."""
        fw = self._framework
        target = None if dtype is None else dtype_code(dtype)
        wanted = self._wanted()
        mapped = self._file.backend == "mmap"
        if target is None and self._staged():
            from .staging import load_staged
            return load_staged(self._file, wanted, fw, self._device)
        converted = {info[0] for _, info in wanted if target is not None and info[1] in FLOAT_CODES}
        if raws is None and mapped:
            raws = {}
            if not prefetched:
                prefetch([self._range(info) for _, info in wanted])
        elif raws is None:
            plain = [info for _, info in wanted if info[0] not in converted]
            raws = dict(zip((i[0] for i in plain), read_arrays([self._range(i) for i in plain])))
        out = {}
        for key, info in wanted:
            name, code, shape = info[0], info[1], info[2]
            if name in converted:
                out[key] = self._converted(name, target, info)
                continue
            raw = raws[name] if name in raws else self._file.view(name)
            out[key] = fw.to_device(fw.from_bytes(raw, code, shape), self._device)
        return out

    def _staged(self) -> bool:
        """torch tensors for an accelerator go through a ring of pinned
        buffers, copies overlapping reads (format/staging.py)."""
        return self._framework.name == "torch" and self._device not in (None, "cpu") \
            and not isinstance(self._file, RangeFile)

    def _touch(self, name: str) -> None:
        """Before ``name`` is read: its bytes resident, the next ones coming."""
        if self._ahead is None:
            def orders():  # sorted first: `for k in f.keys()` is the usual loop
                return [self._file.keys(), self._file.offset_keys()]
            self._ahead = ReadAhead(orders, lambda n: self._range(self._file.info(n)))
        self._ahead.touch(name)

    def _converted(self, name: str, target: str, info=None):
        _, code, shape, _, _ = info or self._file.info(name)
        fw = self._framework
        if code == target:
            raw, _, _ = self._raw(name, info)
            return fw.to_device(fw.from_bytes(raw, code, shape), self._device)
        if isinstance(self._file, RangeFile):  # fetched, then converted in memory
            raw, _, _ = self._raw(name, info)
            check_pair(code, target, f"tensor '{name}'")
            arr = convert_array(get_framework("numpy").from_bytes(raw, code, shape), code, target)
        else:
            arr = convert_tensor(self._file, name, code, shape, target)
        return fw.to_device(fw.from_bytes(arr.reshape(-1).view(np.uint8), target, shape), self._device)

    def get_slice(self, name: str, dtype=None) -> "TensorSlice":
        """A lazy view of ``name`` for indexing. With ``dtype``, each indexed
        part is converted to it (only the selected elements, straight from the
        mapping, whatever the steps)."""
        self._check_dtype(name, self._stored(name), None if dtype is None else dtype_code(dtype))
        return TensorSlice(self, self._stored(name), None if dtype is None else dtype_code(dtype))


class TensorSlice:
    """A tensor not yet read: ``get_shape()``, ``get_dtype()`` and numpy basic
    indexing (ints, slices with any step, Ellipsis, None). Only the bytes the
    index needs along the first axis are read with the pread backend."""

    def __init__(self, owner: safe_open, name: str, target: Optional[str] = None):
        self._owner = owner
        self._name = name
        _, self._dtype, shape, self._begin, self._end = owner._file.info(name)
        self._shape = tuple(shape)
        self._target = None if target == self._dtype else target  # convert indexed parts to this code
        if self._target is not None:
            check_pair(self._dtype, self._target, f"tensor '{name}'")

    def get_shape(self) -> List[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return self._dtype

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> str:
        return self._dtype

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def _array(self, index) -> np.ndarray:
        """The indexed values as a numpy array (in the code's numpy dtype)."""
        owner, code, shape = self._owner, self._dtype, self._shape
        file = owner._file
        numpy_fw = _numpy_framework("numpy")
        idx = index if isinstance(index, tuple) else (index,)
        if file.backend in ("pread", "ranges") and code not in SUB_BYTE and shape and idx and _is_axis_index(idx[0]):
            rows = range(shape[0])[idx[0]] if isinstance(idx[0], slice) else None
            if rows is None:  # an integer
                i = _normalize_int(idx[0], shape[0])
                lo, hi, first = i, i + 1, 0
            elif len(rows) == 0:
                lo, hi, first = 0, 0, slice(0, 0)
            else:
                lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
                step = rows.step
                start = rows[0] - lo
                stop = rows[-1] - lo + (1 if step > 0 else -1)
                first = slice(start, stop if stop >= 0 else None, step)
            row_bytes = nbytes_of(code, shape[1:])
            raw = np.empty((hi - lo) * row_bytes, np.uint8)
            file.read_into(self._name, lo * row_bytes, raw)
            part = numpy_fw.from_bytes(raw, code, (hi - lo,) + shape[1:])
            return part[(first,) + idx[1:]]
        raw, _, _ = owner._raw(self._name)
        return numpy_fw.from_bytes(raw, code, shape)[index]

    def __getitem__(self, index):
        _check_ints(index if isinstance(index, tuple) else (index,), self._shape)
        arr = self._array(index)
        if not isinstance(arr, np.ndarray):  # a scalar from full integer indexing
            arr = np.asarray(arr)
        code = self._dtype
        if self._target is not None:
            arr = convert_array(arr, code, self._target)  # strided source, contiguous result
            code = self._target
        elif not arr.flags.c_contiguous:
            # The core's copy kernel rather than numpy's: a file truncated
            # while mapped then raises FileChanged instead of killing the process.
            arr = convert_array(arr, code, code) if _core.can_convert(code, code) else np.ascontiguousarray(arr)
        fw = self._owner._framework
        return fw.to_device(fw.from_numpy(arr, code), self._owner._device)


def _is_axis_index(item) -> bool:
    return isinstance(item, slice) or (isinstance(item, (int, np.integer)) and not isinstance(item, bool))


def _check_ints(idx: tuple, shape: Tuple[int, ...]) -> None:
    """Integer indices must fall inside their dimension; the error has the
    reference's words (a negative index and a positive one are worded apart
    there). Other malformed indices are left to numpy's own errors."""
    if any(item is Ellipsis for item in idx):
        at = next(i for i, item in enumerate(idx) if item is Ellipsis)
        used = sum(1 for item in idx if item is not None and item is not Ellipsis)
        fill = max(len(shape) - used, 0)
        expanded = list(idx[:at]) + [slice(None)] * fill + [i for i in idx[at + 1:] if i is not Ellipsis]
    else:
        expanded = list(idx)
    d = 0
    for item in expanded:
        if item is None:
            continue
        if d >= len(shape):
            return  # too many indices: numpy says so
        if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            n, i = shape[d], int(item)
            if i < -n:
                raise InvalidSliceIndex(f"Invalid index {i} for dimension {d} of size {n}")
            if i >= n:
                shown = ", ".join(_show(x) for x in expanded)
                raise InvalidSliceIndex(f"Error during slicing [{shown}] with shape {list(shape)}: index {i} out of "
                                        f"bounds for tensor dimension #{d} of size {n}")
        d += 1


def _show(item) -> str:
    """An index item as the reference prints it (``2:``, ``:20``, ``::2``)."""
    if isinstance(item, slice):
        text = ("" if item.start is None else str(item.start)) + ":" + ("" if item.stop is None else str(item.stop))
        return text + ("" if item.step in (None, 1) else f":{item.step}")
    return "None" if item is None else str(item)


def _normalize_int(i, n: int) -> int:
    i = int(i)
    if i < -n or i >= n:
        raise InvalidSliceIndex(f"Invalid index {i} for dimension 0 of size {n}")
    return i + n if i < 0 else i
